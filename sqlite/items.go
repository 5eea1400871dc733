package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"seckill"
)

const itemColumns = "id, name, price_cents, stock, starts_at, ends_at, challenge, created_at, rules"

type scanner interface{ Scan(dest ...any) error }

func scanItem(row scanner) (seckill.Item, error) {
	var (
		it                      seckill.Item
		starts, ends, createdAt int64
		rules                   string
	)
	err := row.Scan(&it.ID, &it.Name, &it.PriceCents, &it.Stock, &starts, &ends, &it.Challenge, &createdAt, &rules)
	if err != nil {
		return seckill.Item{}, err
	}
	if it.SaleRules, err = seckill.UnmarshalRules(rules); err != nil {
		return seckill.Item{}, fmt.Errorf("item %d: %w", it.ID, err)
	}
	it.StartsAt, it.EndsAt, it.CreatedAt = fromMicros(starts), fromMicros(ends), fromMicros(createdAt)
	return it, nil
}

// CreateItem stores it (its ID and CreatedAt are ignored) and returns it as
// stored. A negative price or stock, or a sale that ends before it starts,
// gives an error with code seckill.EInvalid: the table's checks are the
// last line of defence behind the admin API's own validation.
func (db *DB) CreateItem(ctx context.Context, it seckill.Item) (seckill.Item, error) {
	if err := checkText(it.Name, it.Challenge); err != nil {
		return seckill.Item{}, fmt.Errorf("creating item: %w", err)
	}
	rules, err := seckill.MarshalRules(it.SaleRules)
	if err != nil {
		return seckill.Item{}, fmt.Errorf("creating item: %w", err)
	}
	stored, err := scanItem(db.w.QueryRowContext(ctx, `
		INSERT INTO items (name, price_cents, stock, starts_at, ends_at, challenge, created_at, rules)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		RETURNING `+itemColumns,
		it.Name, it.PriceCents, it.Stock, micros(it.StartsAt), micros(it.EndsAt), it.Challenge, micros(time.Now()), rules))
	if err != nil {
		return seckill.Item{}, fmt.Errorf("creating item: %w", unavailable(invalidData(err)))
	}
	return stored, nil
}

// Item returns the item with the given id, or an error with code
// seckill.EUnknownItem.
func (db *DB) Item(ctx context.Context, id int64) (seckill.Item, error) {
	it, err := scanItem(db.r.QueryRowContext(ctx, "SELECT "+itemColumns+" FROM items WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return seckill.Item{}, seckill.Errorf(seckill.EUnknownItem, "no item %d", id)
	}
	if err != nil {
		return seckill.Item{}, fmt.Errorf("reading item: %w", unavailable(err))
	}
	return it, nil
}

// Items returns every item, soonest sale first.
func (db *DB) Items(ctx context.Context) ([]seckill.Item, error) {
	rows, err := db.r.QueryContext(ctx, "SELECT "+itemColumns+" FROM items ORDER BY starts_at, id")
	if err != nil {
		return nil, fmt.Errorf("listing items: %w", unavailable(err))
	}
	defer rows.Close()
	items := []seckill.Item{}
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("listing items: %w", unavailable(err))
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing items: %w", unavailable(err))
	}
	return items, nil
}
