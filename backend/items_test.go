package backend_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"seckill"
	"seckill/backend"
	"seckill/internal/testenv"
	"seckill/postgres"
	"seckill/stock"
)

// TestItemsRefreshLiveServeEndedFromCopy: GET /v1/items reads the live
// items' stock from Redis on every call, and serves ended items (whose
// answers no longer change) from its copy: a change behind an ended item's
// back shows only after EndedRefresh.
func TestItemsRefreshLiveServeEndedFromCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := postgres.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	rdb, prefix := testenv.Redis(t)
	svc := backend.New(db, stock.New(rdb, prefix), nil)
	now := time.Now()
	mk := func(starts, ends time.Time) int64 {
		it, err := svc.CreateItem(ctx, seckillItem(starts, ends))
		if err != nil {
			t.Fatal(err)
		}
		return it.ID
	}
	live := mk(now.Add(-time.Minute), now.Add(time.Hour))
	ended := mk(now.Add(-2*time.Hour), now.Add(-time.Hour))
	left := func() map[int64]int64 {
		items, err := svc.Items(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[int64]int64{}
		for _, it := range items {
			out[it.ID] = it.StockLeft
		}
		return out
	}
	if l := left(); l[live] != 5 || l[ended] != 5 {
		t.Fatalf("first list %v", l)
	}
	if _, err := svc.Reserve(ctx, live, seckill.Account{ID: 1}, "r1"); err != nil {
		t.Fatal(err)
	}
	// Behind the ended item's back (no sale can change it any more).
	if err := rdb.Set(ctx, fmt.Sprintf("%sitem:{%d}:stock", prefix, ended), 2, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if l := left(); l[live] != 4 || l[ended] != 5 {
		t.Fatalf("second list %v: want the live item read again (4), the ended one from the copy (5)", l)
	}
	if backend.EndedRefresh > time.Minute {
		t.Fatalf("EndedRefresh %v", backend.EndedRefresh)
	}
}

func seckillItem(starts, ends time.Time) seckill.Item {
	return seckill.Item{Name: "tea", PriceCents: 500, Stock: 5, StartsAt: starts, EndsAt: ends, Challenge: "none"}
}
