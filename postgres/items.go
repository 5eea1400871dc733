package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"seckill"
)

const itemColumns = "id, name, price_cents, stock, starts_at, ends_at, challenge, created_at, rules::text"

func scanItem(row pgx.Row) (seckill.Item, error) {
	var (
		it    seckill.Item
		rules string
	)
	err := row.Scan(&it.ID, &it.Name, &it.PriceCents, &it.Stock, &it.StartsAt, &it.EndsAt, &it.Challenge, &it.CreatedAt, &rules)
	if err != nil {
		return seckill.Item{}, err
	}
	if it.SaleRules, err = seckill.UnmarshalRules(rules); err != nil {
		return seckill.Item{}, fmt.Errorf("item %d: %w", it.ID, err)
	}
	return it, nil
}

// CreateItem stores it (its ID and CreatedAt are ignored) and returns it as
// stored. A negative price or stock, or a sale that ends before it starts,
// gives an error with code seckill.EInvalid: the table's checks are the
// last line of defence behind the admin API's own validation.
func (db *DB) CreateItem(ctx context.Context, it seckill.Item) (seckill.Item, error) {
	rules, err := seckill.MarshalRules(it.SaleRules)
	if err != nil {
		return seckill.Item{}, fmt.Errorf("creating item: %w", err)
	}
	stored, err := scanItem(db.pool.QueryRow(ctx, `
		INSERT INTO items (name, price_cents, stock, starts_at, ends_at, challenge, rules)
		VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
		RETURNING `+itemColumns,
		it.Name, it.PriceCents, it.Stock, it.StartsAt, it.EndsAt, it.Challenge, rules))
	if err != nil {
		return seckill.Item{}, fmt.Errorf("creating item: %w", unavailable(invalidData(err)))
	}
	return stored, nil
}

// Item returns the item with the given id, or an error with code
// seckill.EUnknownItem.
func (db *DB) Item(ctx context.Context, id int64) (seckill.Item, error) {
	it, err := scanItem(db.pool.QueryRow(ctx, "SELECT "+itemColumns+" FROM items WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return seckill.Item{}, seckill.Errorf(seckill.EUnknownItem, "no item %d", id)
	}
	if err != nil {
		return seckill.Item{}, fmt.Errorf("reading item: %w", unavailable(err))
	}
	return it, nil
}

// Items returns every item, soonest sale first.
func (db *DB) Items(ctx context.Context) ([]seckill.Item, error) {
	rows, err := db.pool.Query(ctx, "SELECT "+itemColumns+" FROM items ORDER BY starts_at, id")
	if err != nil {
		return nil, fmt.Errorf("listing items: %w", unavailable(err))
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (seckill.Item, error) { return scanItem(r) })
	if err != nil {
		return nil, fmt.Errorf("listing items: %w", unavailable(err))
	}
	return items, nil
}
