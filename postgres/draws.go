package postgres

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"seckill"
)

// The draw (allocation draw, issue 17): tables draws, draw_entries and
// draw_rounds (migration 0005). Who may enter and when the list closes is
// decided here, on the database's clock, under the draw row's lock: an
// entry holds it shared while it checks the time and inserts, closing holds
// it exclusively while it reads the entries and stores their hash. So no
// entry lands after the hash was computed, whichever backend closes, and
// closing twice stores once.

// CreateDrawItem stores it and its draw (seed, key, commitment) in one
// transaction: the commitment exists as soon as the item does.
func (db *DB) CreateDrawItem(ctx context.Context, it seckill.Item, d seckill.DrawRecord) (seckill.Item, error) {
	rules, err := seckill.MarshalRules(it.SaleRules)
	if err != nil {
		return seckill.Item{}, fmt.Errorf("creating item: %w", err)
	}
	var stored seckill.Item
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var err error
		stored, err = scanItem(tx.QueryRow(ctx, `
			INSERT INTO items (name, price_cents, stock, starts_at, ends_at, challenge, rules)
			VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
			RETURNING `+itemColumns,
			it.Name, it.PriceCents, it.Stock, it.StartsAt, it.EndsAt, it.Challenge, rules))
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO draws (item_id, seed, entry_key, commitment, entries_open_at, entries_close_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, stored.ID, d.Seed, d.Key, d.Commitment, d.EntriesOpenAt, d.EntriesCloseAt)
		return err
	})
	if err != nil {
		return seckill.Item{}, fmt.Errorf("creating draw item: %w", unavailable(invalidData(err)))
	}
	return stored, nil
}

const drawColumns = "item_id, seed, entry_key, commitment, entries_open_at, entries_close_at, entries_hash, entry_count, closed_at, created_at"

func scanDraw(row pgx.Row) (seckill.DrawRecord, error) {
	var d seckill.DrawRecord
	var closed *time.Time
	err := row.Scan(&d.ItemID, &d.Seed, &d.Key, &d.Commitment, &d.EntriesOpenAt, &d.EntriesCloseAt, &d.EntriesHash, &d.EntryCount, &closed, &d.CreatedAt)
	if closed != nil {
		d.ClosedAt = *closed
	}
	return d, err
}

// noDraw is the answer for an item without a draw.
func noDraw(itemID int64) error {
	return seckill.Errorf(seckill.ENotFound, "item %d has no draw", itemID)
}

// Draw returns the draw of an item, or an error with code not_found.
func (db *DB) Draw(ctx context.Context, itemID int64) (seckill.DrawRecord, error) {
	d, err := scanDraw(db.pool.QueryRow(ctx, "SELECT "+drawColumns+" FROM draws WHERE item_id = $1", itemID))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, noDraw(itemID)
	}
	if err != nil {
		return d, fmt.Errorf("reading draw: %w", unavailable(err))
	}
	return d, nil
}

// Enter records the entry of a user, once: a repeat returns the first
// entry and false. Entries are taken from entries_open_at until
// entries_close_at by the database's clock, and never once the list is
// closed; otherwise the answer is not_live.
func (db *DB) Enter(ctx context.Context, itemID, userID int64, entryID []byte) (seckill.DrawEntry, bool, error) {
	var e seckill.DrawEntry
	var created bool
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var (
			openAt, closeAt, now time.Time
			closed               bool
		)
		err := tx.QueryRow(ctx, `SELECT entries_open_at, entries_close_at, entries_hash IS NOT NULL
			FROM draws WHERE item_id = $1 FOR SHARE`, itemID).Scan(&openAt, &closeAt, &closed)
		if errors.Is(err, pgx.ErrNoRows) {
			return noDraw(itemID)
		}
		if err != nil {
			return err
		}
		// The time is read once the lock is held (a clock read in the
		// locking statement may be taken before it waited for a closing).
		if err := tx.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
			return err
		}
		// A repeat is answered whatever the time: the entry exists.
		err = tx.QueryRow(ctx, `SELECT entry_id, entered_at FROM draw_entries WHERE item_id = $1 AND user_id = $2`,
			itemID, userID).Scan(&e.EntryID, &e.EnteredAt)
		if err == nil {
			e.UserID = userID
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if closed || now.Before(openAt) || !now.Before(closeAt) {
			return seckill.Errorf(seckill.ENotLive, "entries are taken from %s to %s", openAt.UTC().Format(time.RFC3339), closeAt.UTC().Format(time.RFC3339))
		}
		tag, err := tx.Exec(ctx, `INSERT INTO draw_entries (item_id, entry_id, user_id, entered_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, itemID, entryID, userID, now)
		if err != nil {
			return err
		}
		created = tag.RowsAffected() == 1
		return tx.QueryRow(ctx, `SELECT entry_id, entered_at FROM draw_entries WHERE item_id = $1 AND user_id = $2`,
			itemID, userID).Scan(&e.EntryID, &e.EnteredAt)
	})
	if err != nil {
		if seckill.ErrorCode(err) != seckill.EInternal {
			return e, false, err
		}
		return e, false, fmt.Errorf("entering draw: %w", unavailable(invalidData(err)))
	}
	e.UserID = userID
	return e, created, nil
}

// EntryOf returns the entry of a user, if any.
func (db *DB) EntryOf(ctx context.Context, itemID, userID int64) (seckill.DrawEntry, bool, error) {
	e := seckill.DrawEntry{UserID: userID}
	err := db.pool.QueryRow(ctx, `SELECT entry_id, entered_at FROM draw_entries WHERE item_id = $1 AND user_id = $2`,
		itemID, userID).Scan(&e.EntryID, &e.EnteredAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("reading entry: %w", unavailable(err))
	}
	return e, true, nil
}

// CountEntries returns how many accounts entered.
func (db *DB) CountEntries(ctx context.Context, itemID int64) (int64, error) {
	var n int64
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM draw_entries WHERE item_id = $1", itemID).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting entries: %w", unavailable(err))
	}
	return n, nil
}

// CloseEntries fixes the entry list once entries_close_at has passed by
// the database's clock: the hash of the sorted ids and their number are
// stored, once. Before that time it returns the draw unchanged; after, it
// returns what the first call stored.
func (db *DB) CloseEntries(ctx context.Context, itemID int64) (seckill.DrawRecord, error) {
	var d seckill.DrawRecord
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var err error
		d, err = scanDraw(tx.QueryRow(ctx, "SELECT "+drawColumns+" FROM draws WHERE item_id = $1 FOR UPDATE", itemID))
		if errors.Is(err, pgx.ErrNoRows) {
			return noDraw(itemID)
		}
		if err != nil || d.Closed() {
			return err
		}
		var now time.Time
		if err := tx.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
			return err
		}
		if now.Before(d.EntriesCloseAt) {
			return nil
		}
		rows, err := tx.Query(ctx, "SELECT entry_id FROM draw_entries WHERE item_id = $1 ORDER BY entry_id", itemID)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return err
		}
		h := sha256.New()
		for _, id := range ids {
			h.Write(id)
		}
		d.EntriesHash, d.EntryCount, d.ClosedAt = h.Sum(nil), int64(len(ids)), now
		_, err = tx.Exec(ctx, "UPDATE draws SET entries_hash = $2, entry_count = $3, closed_at = $4 WHERE item_id = $1",
			itemID, d.EntriesHash, d.EntryCount, now)
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
	rows, err := db.pool.Query(ctx, `SELECT entry_id, user_id, entered_at FROM draw_entries WHERE item_id = $1 ORDER BY entry_id`, itemID)
	if err != nil {
		return nil, fmt.Errorf("reading entries: %w", unavailable(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (seckill.DrawEntry, error) {
		var e seckill.DrawEntry
		err := r.Scan(&e.EntryID, &e.UserID, &e.EnteredAt)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading entries: %w", unavailable(err))
	}
	return out, nil
}

// FixRound stores round r unless a round of that number is stored
// already, and returns the one stored: the first caller decides.
func (db *DB) FixRound(ctx context.Context, itemID int64, r seckill.DrawRound) (seckill.DrawRound, error) {
	_, err := db.pool.Exec(ctx, `INSERT INTO draw_rounds (item_id, round, first_place, count) VALUES ($1, $2, $3, $4)
		ON CONFLICT DO NOTHING`, itemID, r.Round, r.From, r.Count)
	if err != nil {
		return r, fmt.Errorf("fixing round %d: %w", r.Round, unavailable(invalidData(err)))
	}
	out := seckill.DrawRound{Round: r.Round}
	err = db.pool.QueryRow(ctx, "SELECT first_place, count FROM draw_rounds WHERE item_id = $1 AND round = $2",
		itemID, r.Round).Scan(&out.From, &out.Count)
	if err != nil {
		return r, fmt.Errorf("reading round %d: %w", r.Round, unavailable(err))
	}
	return out, nil
}

// DrawRounds returns the rounds fixed so far, in order.
func (db *DB) DrawRounds(ctx context.Context, itemID int64) ([]seckill.DrawRound, error) {
	rows, err := db.pool.Query(ctx, "SELECT round, first_place, count FROM draw_rounds WHERE item_id = $1 ORDER BY round", itemID)
	if err != nil {
		return nil, fmt.Errorf("reading rounds: %w", unavailable(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (seckill.DrawRound, error) {
		var d seckill.DrawRound
		err := r.Scan(&d.Round, &d.From, &d.Count)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading rounds: %w", unavailable(err))
	}
	return out, nil
}
