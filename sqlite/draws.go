package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"seckill"
)

// The draw (allocation draw, issue 17), as package postgres keeps it
// (postgres/draws.go). SQLite has one writer at a time, so an entry's
// check of the time and its insert, and closing's read of the entries and
// its hash, are each one write transaction and cannot interleave. The
// clock is this process's.

// CreateDrawItem stores it and its draw in one transaction.
func (db *DB) CreateDrawItem(ctx context.Context, it seckill.Item, d seckill.DrawRecord) (seckill.Item, error) {
	if err := checkText(it.Name, it.Challenge); err != nil {
		return seckill.Item{}, fmt.Errorf("creating item: %w", err)
	}
	rules, err := seckill.MarshalRules(it.SaleRules)
	if err != nil {
		return seckill.Item{}, fmt.Errorf("creating item: %w", err)
	}
	var stored seckill.Item
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		now := micros(time.Now())
		var err error
		stored, err = scanItem(tx.QueryRowContext(ctx, `
			INSERT INTO items (name, price_cents, stock, starts_at, ends_at, challenge, created_at, rules)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			RETURNING `+itemColumns,
			it.Name, it.PriceCents, it.Stock, micros(it.StartsAt), micros(it.EndsAt), it.Challenge, now, rules))
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO draws (item_id, seed, entry_key, commitment, entries_open_at, entries_close_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, stored.ID, d.Seed, d.Key, d.Commitment, micros(d.EntriesOpenAt), micros(d.EntriesCloseAt), now)
		return err
	})
	if err != nil {
		return seckill.Item{}, fmt.Errorf("creating draw item: %w", unavailable(invalidData(err)))
	}
	return stored, nil
}

const drawColumns = "item_id, seed, entry_key, commitment, entries_open_at, entries_close_at, entries_hash, entry_count, closed_at, created_at"

func scanDraw(row scanner) (seckill.DrawRecord, error) {
	var d seckill.DrawRecord
	var open, closeAt, created int64
	var closed sql.NullInt64
	err := row.Scan(&d.ItemID, &d.Seed, &d.Key, &d.Commitment, &open, &closeAt, &d.EntriesHash, &d.EntryCount, &closed, &created)
	d.EntriesOpenAt, d.EntriesCloseAt, d.CreatedAt = fromMicros(open), fromMicros(closeAt), fromMicros(created)
	if closed.Valid {
		d.ClosedAt = fromMicros(closed.Int64)
	}
	return d, err
}

func noDraw(itemID int64) error {
	return seckill.Errorf(seckill.ENotFound, "item %d has no draw", itemID)
}

// Draw returns the draw of an item, or an error with code not_found.
func (db *DB) Draw(ctx context.Context, itemID int64) (seckill.DrawRecord, error) {
	d, err := scanDraw(db.r.QueryRowContext(ctx, "SELECT "+drawColumns+" FROM draws WHERE item_id = ?", itemID))
	if errors.Is(err, sql.ErrNoRows) {
		return d, noDraw(itemID)
	}
	if err != nil {
		return d, fmt.Errorf("reading draw: %w", unavailable(err))
	}
	return d, nil
}

func entryOf(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, itemID, userID int64) (seckill.DrawEntry, bool, error) {
	e := seckill.DrawEntry{UserID: userID}
	var at int64
	err := q.QueryRowContext(ctx, "SELECT entry_id, entered_at FROM draw_entries WHERE item_id = ? AND user_id = ?", itemID, userID).Scan(&e.EntryID, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return e, false, nil
	}
	e.EnteredAt = fromMicros(at)
	return e, err == nil, err
}

// Enter records the entry of a user, once (see postgres.DB.Enter).
func (db *DB) Enter(ctx context.Context, itemID, userID int64, entryID []byte) (seckill.DrawEntry, bool, error) {
	var e seckill.DrawEntry
	var created bool
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var open, closeAt int64
		var hash []byte
		err := tx.QueryRowContext(ctx, "SELECT entries_open_at, entries_close_at, entries_hash FROM draws WHERE item_id = ?", itemID).Scan(&open, &closeAt, &hash)
		if errors.Is(err, sql.ErrNoRows) {
			return noDraw(itemID)
		}
		if err != nil {
			return err
		}
		var found bool
		if e, found, err = entryOf(ctx, tx, itemID, userID); err != nil || found {
			return err
		}
		now := time.Now()
		if hash != nil || micros(now) < open || micros(now) >= closeAt {
			return seckill.Errorf(seckill.ENotLive, "entries are taken from %s to %s",
				fromMicros(open).Format(time.RFC3339), fromMicros(closeAt).Format(time.RFC3339))
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO draw_entries (item_id, entry_id, user_id, entered_at) VALUES (?, ?, ?, ?)",
			itemID, entryID, userID, micros(now)); err != nil {
			return err
		}
		created = true
		e, _, err = entryOf(ctx, tx, itemID, userID)
		return err
	})
	if err != nil {
		if seckill.ErrorCode(err) != seckill.EInternal {
			return e, false, err
		}
		return e, false, fmt.Errorf("entering draw: %w", unavailable(invalidData(err)))
	}
	return e, created, nil
}

// EntryOf returns the entry of a user, if any.
func (db *DB) EntryOf(ctx context.Context, itemID, userID int64) (seckill.DrawEntry, bool, error) {
	e, ok, err := entryOf(ctx, db.r, itemID, userID)
	if err != nil {
		return e, false, fmt.Errorf("reading entry: %w", unavailable(err))
	}
	return e, ok, nil
}

// CountEntries returns how many accounts entered.
func (db *DB) CountEntries(ctx context.Context, itemID int64) (int64, error) {
	var n int64
	if err := db.r.QueryRowContext(ctx, "SELECT count(*) FROM draw_entries WHERE item_id = ?", itemID).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting entries: %w", unavailable(err))
	}
	return n, nil
}

// CloseEntries fixes the entry list once entries_close_at has passed
// (see postgres.DB.CloseEntries).
func (db *DB) CloseEntries(ctx context.Context, itemID int64) (seckill.DrawRecord, error) {
	var d seckill.DrawRecord
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var err error
		d, err = scanDraw(tx.QueryRowContext(ctx, "SELECT "+drawColumns+" FROM draws WHERE item_id = ?", itemID))
		if errors.Is(err, sql.ErrNoRows) {
			return noDraw(itemID)
		}
		if err != nil || d.Closed() {
			return err
		}
		now := time.Now()
		if micros(now) < micros(d.EntriesCloseAt) {
			return nil
		}
		rows, err := tx.QueryContext(ctx, "SELECT entry_id FROM draw_entries WHERE item_id = ? ORDER BY entry_id", itemID)
		if err != nil {
			return err
		}
		defer rows.Close()
		h := sha256.New()
		var n int64
		for rows.Next() {
			var id []byte
			if err := rows.Scan(&id); err != nil {
				return err
			}
			h.Write(id)
			n++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		d.EntriesHash, d.EntryCount, d.ClosedAt = h.Sum(nil), n, fromMicros(micros(now))
		_, err = tx.ExecContext(ctx, "UPDATE draws SET entries_hash = ?, entry_count = ?, closed_at = ? WHERE item_id = ?",
			d.EntriesHash, n, micros(now), itemID)
		return err
	})
	if err != nil {
		if seckill.ErrorCode(err) != seckill.EInternal {
			return d, err
		}
		return d, fmt.Errorf("closing entries: %w", unavailable(err))
	}
	return d, nil
}

// DrawEntries returns every entry, sorted by entry id.
func (db *DB) DrawEntries(ctx context.Context, itemID int64) ([]seckill.DrawEntry, error) {
	rows, err := db.r.QueryContext(ctx, "SELECT entry_id, user_id, entered_at FROM draw_entries WHERE item_id = ? ORDER BY entry_id", itemID)
	if err != nil {
		return nil, fmt.Errorf("reading entries: %w", unavailable(err))
	}
	defer rows.Close()
	var out []seckill.DrawEntry
	for rows.Next() {
		var e seckill.DrawEntry
		var at int64
		if err := rows.Scan(&e.EntryID, &e.UserID, &at); err != nil {
			return nil, fmt.Errorf("reading entries: %w", unavailable(err))
		}
		e.EnteredAt = fromMicros(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading entries: %w", unavailable(err))
	}
	return out, nil
}

// FixRound stores round r unless one of that number is stored, and
// returns the one stored.
func (db *DB) FixRound(ctx context.Context, itemID int64, r seckill.DrawRound) (seckill.DrawRound, error) {
	out := seckill.DrawRound{Round: r.Round}
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO draw_rounds (item_id, round, first_place, count, fixed_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT DO NOTHING`, itemID, r.Round, r.From, r.Count, micros(time.Now())); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, "SELECT first_place, count FROM draw_rounds WHERE item_id = ? AND round = ?",
			itemID, r.Round).Scan(&out.From, &out.Count)
	})
	if err != nil {
		return r, fmt.Errorf("fixing round %d: %w", r.Round, unavailable(invalidData(err)))
	}
	return out, nil
}

// DrawRounds returns the rounds fixed so far, in order.
func (db *DB) DrawRounds(ctx context.Context, itemID int64) ([]seckill.DrawRound, error) {
	rows, err := db.r.QueryContext(ctx, "SELECT round, first_place, count FROM draw_rounds WHERE item_id = ? ORDER BY round", itemID)
	if err != nil {
		return nil, fmt.Errorf("reading rounds: %w", unavailable(err))
	}
	defer rows.Close()
	var out []seckill.DrawRound
	for rows.Next() {
		var d seckill.DrawRound
		if err := rows.Scan(&d.Round, &d.From, &d.Count); err != nil {
			return nil, fmt.Errorf("reading rounds: %w", unavailable(err))
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading rounds: %w", unavailable(err))
	}
	return out, nil
}
