// Package worker stores the orders the queue consumer hands it: it is the
// seckill.OrderHandler of the order pipeline (behind the queue consumer or
// inproc).
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"seckill"
	"seckill/internal/backoff"
)

// Store is the order storage (implemented by package postgres). Every
// method is idempotent per order_ref.
type Store interface {
	// InsertOrders stores msgs in one transaction; any row error fails all.
	InsertOrders(ctx context.Context, msgs []seckill.OrderMessage) (int64, error)
	// InsertOrder stores one message; false when it was already stored.
	InsertOrder(ctx context.Context, m seckill.OrderMessage) (bool, error)
	// RecordFailed records that m could not be stored.
	RecordFailed(ctx context.Context, m seckill.OrderMessage, reason string) error
}

// Releaser gives a failed order's unit back to stock (Redis).
type Releaser interface {
	Release(ctx context.Context, itemID, userID int64, orderRef string) (bool, error)
}

// Worker implements seckill.OrderHandler on a Store and an optional Releaser.
type Worker struct {
	st  Store
	rel Releaser
	log *slog.Logger
}

// New returns a worker; rel may be nil (no stock is given back).
func New(st Store, rel Releaser, log *slog.Logger) *Worker {
	if log == nil {
		log = slog.Default()
	}
	return &Worker{st: st, rel: rel, log: log.With("component", "worker")}
}

// Store stores a batch in one transaction. A data error (a row the
// database refuses: code seckill.EInvalid) makes it store the messages one
// by one, so one poison message does not hold back the others, and return
// that message's own error; the consumer nacks it and the broker
// dead-letters it after the delivery limit.
//
// Any other error (the database is down, a timeout) is transient: Store
// keeps the batch and retries with backoff until it is stored or ctx ends.
// Nacking on an outage would spend the delivery limit of good orders and
// turn them into failed ones.
func (w *Worker) Store(ctx context.Context, msgs []seckill.OrderMessage) []error {
	errs := make([]error, len(msgs))
	if len(msgs) == 0 {
		return errs
	}
	err := w.retry(ctx, "batch insert", func() error {
		_, err := w.st.InsertOrders(ctx, msgs)
		return err
	})
	if err == nil {
		return errs
	}
	if !isDataError(err) { // ctx ended while the database was away
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	w.log.Warn("batch insert refused; storing one by one", "batch", len(msgs), "err", err)
	for i, m := range msgs {
		err := w.retry(ctx, "insert", func() error {
			_, err := w.st.InsertOrder(ctx, m)
			return err
		})
		if err != nil {
			errs[i] = fmt.Errorf("storing order %s: %w", m.OrderRef, err)
		}
	}
	return errs
}

// isDataError reports whether the database refused the data itself, which
// no retry will change.
func isDataError(err error) bool { return seckill.ErrorCode(err) == seckill.EInvalid }

// retry runs f until it succeeds, fails with a data error, or ctx ends.
func (w *Worker) retry(ctx context.Context, what string, f func() error) error {
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	for {
		err := f()
		if err == nil || isDataError(err) || ctx.Err() != nil {
			return err
		}
		wait := bo.Next()
		w.log.Warn(what+" failed; retrying", "err", err, "in", wait)
		if !backoff.Sleep(ctx, wait) {
			return err
		}
	}
}

// Failed handles a dead-lettered order. A message can reach the dead-letter
// queue although an earlier delivery was stored (its ack was lost, and
// redeliveries after reconnects count against the limit), so Failed first
// tries to store it once more: if it is stored, or already was, nothing
// failed. Only an order the database refuses is recorded as failed, and
// only once that is recorded is its unit given back to stock. Every step
// is idempotent, so a retry after a partial failure is safe.
func (w *Worker) Failed(ctx context.Context, m seckill.OrderMessage, reason string) error {
	if m.Validate() == nil {
		_, err := w.st.InsertOrder(ctx, m)
		if err == nil {
			w.log.Warn("dead-lettered order is stored after all; not failed", "order_ref", m.OrderRef, "reason", reason)
			return nil
		}
		if !isDataError(err) {
			return fmt.Errorf("storing dead-lettered order %s: %w", m.OrderRef, err)
		}
		reason = reason + ": " + err.Error()
	}
	if err := w.st.RecordFailed(ctx, m, reason); err != nil {
		return fmt.Errorf("recording failed order %s: %w", m.OrderRef, err)
	}
	if w.rel == nil {
		return nil
	}
	if err := m.Validate(); err != nil {
		// A malformed message names no unit to give back.
		w.log.Warn("failed order is malformed; no unit released", "order_ref", m.OrderRef, "err", err)
		return nil
	}
	released, err := w.rel.Release(ctx, m.ItemID, m.UserID, m.OrderRef)
	if err != nil {
		return fmt.Errorf("releasing unit of order %s: %w", m.OrderRef, err)
	}
	w.log.Info("failed order recorded", "order_ref", m.OrderRef, "reason", reason, "released", released)
	return nil
}
