// Package inproc is the embedded stand-in for the relay, RabbitMQ and the
// consumer: it moves outbox entries straight to the order handler in the
// same process. `seckill dev` uses it so nothing but Go is needed.
//
// The guarantees are those of the real pipeline: an entry leaves the
// outbox only after the handler stored it (or recorded it as failed after
// DeliveryLimit attempts); a crash leaves it pending in the outbox, and the
// next start takes it back.
//
// Orders pass as values: the outbox hands typed entries, the handler takes
// typed orders; nothing is encoded or decoded on the way.
package inproc

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"seckill"
	"seckill/internal/backoff"
)

// Config tunes the pipeline.
type Config struct {
	Batch         int // most entries handled at once (default 500)
	DeliveryLimit int // attempts before an order is handed to Failed (default 5)
	Logger        *slog.Logger
}

// Stats are the pipeline's counters.
type Stats struct {
	Stored, Failed, Malformed, Retries uint64
}

// Pipeline drains an outbox into a handler.
type Pipeline struct {
	ob    seckill.Outbox
	h     seckill.OrderHandler
	cfg   Config
	log   *slog.Logger
	stats struct{ stored, failed, malformed, retries atomic.Uint64 }
}

// New returns a pipeline.
func New(ob seckill.Outbox, h seckill.OrderHandler, cfg Config) *Pipeline {
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.DeliveryLimit <= 0 {
		cfg.DeliveryLimit = 5
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Pipeline{ob: ob, h: h, cfg: cfg, log: log.With("component", "inproc")}
}

// Stats returns the counters.
func (p *Pipeline) Stats() Stats {
	return Stats{Stored: p.stats.stored.Load(), Failed: p.stats.failed.Load(),
		Malformed: p.stats.malformed.Load(), Retries: p.stats.retries.Load()}
}

// Run drains the outbox until ctx ends.
func (p *Pipeline) Run(ctx context.Context) error {
	idle := time.Millisecond
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		entries, err := p.ob.Claim(ctx, p.cfg.Batch)
		if err != nil {
			p.log.Warn("claiming outbox entries", "err", err)
		}
		if len(entries) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(idle):
			}
			idle = min(idle*2, 20*time.Millisecond)
			continue
		}
		idle = time.Millisecond
		if err := p.handle(ctx, entries); err != nil {
			return err
		}
	}
}

// handle stores one claim. It returns only when every entry is stored or
// failed, or ctx ended (then the rest stay pending in the outbox).
func (p *Pipeline) handle(ctx context.Context, entries []seckill.OutboxEntry) error {
	done := make([]seckill.OutboxEntry, 0, len(entries))
	var msgs []seckill.OrderMessage
	var pending []seckill.OutboxEntry
	for _, e := range entries {
		m := e.Order
		if e.Err != nil || m.Validate() != nil {
			p.stats.malformed.Add(1)
			if err := p.fail(ctx, m, "malformed"); err != nil {
				return err
			}
			done = append(done, e)
			continue
		}
		msgs = append(msgs, m)
		pending = append(pending, e)
	}
	for attempt := 1; len(msgs) > 0; attempt++ {
		errs := p.h.Store(ctx, msgs)
		if ctx.Err() != nil {
			break
		}
		var retryMsgs []seckill.OrderMessage
		var retryEntries []seckill.OutboxEntry
		for i, err := range errs {
			switch {
			case err == nil:
				p.stats.stored.Add(1)
				done = append(done, pending[i])
			case attempt >= p.cfg.DeliveryLimit:
				if err := p.fail(ctx, msgs[i], "delivery_limit"); err != nil {
					return err
				}
				done = append(done, pending[i])
			default:
				p.stats.retries.Add(1)
				retryMsgs = append(retryMsgs, msgs[i])
				retryEntries = append(retryEntries, pending[i])
			}
		}
		msgs, pending = retryMsgs, retryEntries
	}
	if len(done) == 0 {
		return nil
	}
	// Remove what was stored even when shutting down.
	return p.ob.Done(context.WithoutCancel(ctx), done)
}

func (p *Pipeline) fail(ctx context.Context, m seckill.OrderMessage, reason string) error {
	bo := backoff.Backoff{Min: 10 * time.Millisecond, Max: time.Second}
	for {
		err := p.h.Failed(ctx, m, reason)
		if err == nil {
			p.stats.failed.Add(1)
			return nil
		}
		p.log.Warn("recording failed order", "order_ref", m.OrderRef, "err", err)
		if !backoff.Sleep(ctx, bo.Next()) {
			return ctx.Err()
		}
	}
}
