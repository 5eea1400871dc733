package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"seckill"
)

// insertOrderSQL stores one order. ON CONFLICT DO NOTHING without a target
// skips a row that clashes with either unique constraint, order_ref (a
// redelivered message) or (user_id, item_id) (a second order of the same
// user); unlike INSERT OR IGNORE it skips nothing else, so a foreign key,
// CHECK or NOT NULL violation still fails the statement.
const insertOrderSQL = `
	INSERT INTO orders (order_ref, user_id, item_id, reserved_at, created_at)
	VALUES (?, ?, ?, ?, ?)
	ON CONFLICT DO NOTHING`

// insertOrdersHead and insertOrdersTail frame the multi-row VALUES list
// of InsertOrders: one statement per maxBatchRows messages, far below
// SQLite's limit of 32766 parameters.
const (
	insertOrdersHead = "INSERT INTO orders (order_ref, user_id, item_id, reserved_at, created_at) VALUES "
	insertOrdersTail = " ON CONFLICT DO NOTHING"
	maxBatchRows     = 1000
)

// InsertOrders stores msgs and returns how many were new; the others were
// already stored (or duplicated within msgs) and are skipped. The batch is
// one transaction, committed before InsertOrders returns, so the caller may
// acknowledge every message once it returns nil. Any integrity error, such
// as an unknown user or item, fails the whole batch with nothing stored and
// code seckill.EInvalid; the caller then stores the messages one by one with
// InsertOrder to find the poison one.
//
// The rows are inserted sorted by (item, user, ref), as package postgres
// inserts them, so that when two messages of a batch clash the same one
// wins on both stores.
func (db *DB) InsertOrders(ctx context.Context, msgs []seckill.OrderMessage) (inserted int64, err error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	sorted := slices.Clone(msgs)
	slices.SortFunc(sorted, func(a, b seckill.OrderMessage) int {
		return cmp.Or(cmp.Compare(a.ItemID, b.ItemID), cmp.Compare(a.UserID, b.UserID), cmp.Compare(a.OrderRef, b.OrderRef))
	})
	for _, m := range sorted {
		if err := checkText(m.OrderRef); err != nil {
			return 0, fmt.Errorf("inserting orders: %w", err)
		}
	}
	now := micros(time.Now())
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		for chunk := range slices.Chunk(sorted, maxBatchRows) {
			var q strings.Builder
			q.Grow(len(insertOrdersHead) + len(chunk)*len("(?,?,?,?,?),") + len(insertOrdersTail))
			q.WriteString(insertOrdersHead)
			args := make([]any, 0, 5*len(chunk))
			for i, m := range chunk {
				if i > 0 {
					q.WriteByte(',')
				}
				q.WriteString("(?,?,?,?,?)")
				args = append(args, m.OrderRef, m.UserID, m.ItemID, micros(m.ReservedAt), now)
			}
			q.WriteString(insertOrdersTail)
			res, err := tx.ExecContext(ctx, q.String(), args...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			inserted += n
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("inserting orders: %w", unavailable(invalidData(err)))
	}
	return inserted, nil
}

// InsertOrder stores one order, with the semantics of InsertOrders: false
// when it was already stored, an error with code seckill.EInvalid when it
// can never be stored (unknown user or item).
func (db *DB) InsertOrder(ctx context.Context, m seckill.OrderMessage) (inserted bool, err error) {
	if err := checkText(m.OrderRef); err != nil {
		return false, fmt.Errorf("inserting order: %w", err)
	}
	res, err := db.insertOrder.ExecContext(ctx, m.OrderRef, m.UserID, m.ItemID, micros(m.ReservedAt), micros(time.Now()))
	if err != nil {
		return false, fmt.Errorf("inserting order: %w", unavailable(invalidData(err)))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("inserting order: %w", unavailable(err))
	}
	return n == 1, nil
}

// OrderFor returns the order of userID for itemID, or an error with code
// seckill.ENotFound.
func (db *DB) OrderFor(ctx context.Context, userID, itemID int64) (seckill.Order, error) {
	var (
		o                 seckill.Order
		reserved, created int64
	)
	err := db.r.QueryRowContext(ctx, `
		SELECT id, order_ref, user_id, item_id, reserved_at, created_at
		FROM orders WHERE user_id = ? AND item_id = ?`, userID, itemID).
		Scan(&o.ID, &o.OrderRef, &o.UserID, &o.ItemID, &reserved, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return seckill.Order{}, seckill.Errorf(seckill.ENotFound, "no order of user %d for item %d", userID, itemID)
	}
	if err != nil {
		return seckill.Order{}, fmt.Errorf("reading order: %w", unavailable(err))
	}
	o.ReservedAt, o.CreatedAt = fromMicros(reserved), fromMicros(created)
	return o, nil
}

// CountOrders returns the number of stored orders of itemID.
func (db *DB) CountOrders(ctx context.Context, itemID int64) (int64, error) {
	return db.count(ctx, "orders", "SELECT count(*) FROM orders WHERE item_id = ?", itemID)
}

// count runs a count query of one argument.
func (db *DB) count(ctx context.Context, what, query string, arg int64) (int64, error) {
	var n int64
	if err := db.r.QueryRowContext(ctx, query, arg).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting %s: %w", what, unavailable(err))
	}
	return n, nil
}

// OrderRefs returns the order_ref of every stored order of itemID, by user
// id, for reconcile to compare with the reservations held in Redis.
func (db *DB) OrderRefs(ctx context.Context, itemID int64) (map[int64]string, error) {
	rows, err := db.r.QueryContext(ctx, "SELECT user_id, order_ref FROM orders WHERE item_id = ?", itemID)
	if err != nil {
		return nil, fmt.Errorf("listing order refs: %w", unavailable(err))
	}
	defer rows.Close()
	refs := make(map[int64]string)
	for rows.Next() {
		var (
			user int64
			ref  string
		)
		if err := rows.Scan(&user, &ref); err != nil {
			return nil, fmt.Errorf("listing order refs: %w", unavailable(err))
		}
		refs[user] = ref
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing order refs: %w", unavailable(err))
	}
	return refs, nil
}

// OrderNetworks returns the registration network of every buyer of itemID
// with a stored order whose account has one (user id -> network), so a
// Redis that lost its counters counts max_per_network again exactly.
func (db *DB) OrderNetworks(ctx context.Context, itemID int64) (map[int64]string, error) {
	rows, err := db.r.QueryContext(ctx,
		"SELECT o.user_id, u.network FROM orders o JOIN users u ON u.id = o.user_id WHERE o.item_id = ? AND u.network <> ''", itemID)
	if err != nil {
		return nil, fmt.Errorf("listing buyers' networks: %w", unavailable(err))
	}
	defer rows.Close()
	nets := make(map[int64]string)
	for rows.Next() {
		var (
			user int64
			net  string
		)
		if err := rows.Scan(&user, &net); err != nil {
			return nil, fmt.Errorf("listing buyers' networks: %w", unavailable(err))
		}
		nets[user] = net
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing buyers' networks: %w", unavailable(err))
	}
	return nets, nil
}

// DuplicateOrders returns the number of (user, item) pairs with more than
// one order. The unique constraint makes it 0; tests and reconcile check it
// anyway, since overselling is the one failure a flash sale must not have.
func (db *DB) DuplicateOrders(ctx context.Context) (int64, error) {
	var n int64
	err := db.r.QueryRowContext(ctx, `
		SELECT count(*) FROM (
			SELECT 1 FROM orders GROUP BY user_id, item_id HAVING count(*) > 1
		) AS d`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting duplicate orders: %w", unavailable(err))
	}
	return n, nil
}

// RecordFailed remembers that the order m could not be stored, and why, so
// that the user's status shows "failed" instead of "queued" forever. A
// second record of the same order_ref is ignored: dead-lettering may be
// retried.
func (db *DB) RecordFailed(ctx context.Context, m seckill.OrderMessage, reason string) error {
	if err := checkText(m.OrderRef, reason); err != nil {
		return fmt.Errorf("recording failed order: %w", err)
	}
	_, err := db.w.ExecContext(ctx, `
		INSERT INTO failed_orders (order_ref, user_id, item_id, reason, failed_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (order_ref) DO NOTHING`, m.OrderRef, m.UserID, m.ItemID, reason, micros(time.Now()))
	if err != nil {
		return fmt.Errorf("recording failed order: %w", unavailable(err))
	}
	return nil
}

// FailedFor returns the order_ref of the latest failed order of userID for
// itemID; ok is false when there is none.
func (db *DB) FailedFor(ctx context.Context, userID, itemID int64) (orderRef string, ok bool, err error) {
	err = db.r.QueryRowContext(ctx, `
		SELECT order_ref FROM failed_orders
		WHERE user_id = ? AND item_id = ?
		ORDER BY failed_at DESC, order_ref DESC
		LIMIT 1`, userID, itemID).Scan(&orderRef)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("reading failed order: %w", unavailable(err))
	}
	return orderRef, true, nil
}

// CountFailed returns the number of failed orders of itemID.
func (db *DB) CountFailed(ctx context.Context, itemID int64) (int64, error) {
	return db.count(ctx, "failed orders", "SELECT count(*) FROM failed_orders WHERE item_id = ?", itemID)
}
