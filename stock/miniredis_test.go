package stock_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/rkeys"
	"seckill/stock"
)

// The embedded mode (seckill dev) serves Redis with miniredis. These tests
// run the very same scripts and stream commands on it.
func miniStore(t *testing.T) (*stock.Store, *miniredis.Miniredis) {
	t.Helper()
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), PoolSize: 64})
	t.Cleanup(func() { _ = rdb.Close() })
	return stock.New(rdb, "mini:"), m
}

func TestMiniredisReserveNeverOversells(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := miniStore(t)
	if err := s.LoadItem(ctx, liveItem(1, 300), nil, nil); err != nil {
		t.Fatal(err)
	}
	var queued, other atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for u := int64(1); u <= 1500; u++ {
		for a := range 3 {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				r, err := s.Reserve(ctx, 1, seckill.Account{ID: u}, fmt.Sprintf("q%d-%d", u, a), fmt.Sprintf("r%d-%d", u, a))
				if err != nil {
					t.Error(err)
					return
				}
				if r.Outcome == stock.Queued && r.OrderRef == fmt.Sprintf("r%d-%d", u, a) {
					queued.Add(1)
				} else {
					other.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	c, err := s.Counters(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if queued.Load() != 300 || c.StockLeft != 0 || c.Reserved != 300 || c.OutboxPending != 300 {
		t.Fatalf("queued %d, counters %+v", queued.Load(), c)
	}
}

func TestMiniredisWindowAndIdempotency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := miniStore(t)
	now := time.Now()
	if err := s.LoadItem(ctx, liveItem(2, 5), nil, nil); err != nil {
		t.Fatal(err)
	}
	early := liveItem(3, 5)
	early.StartsAt, early.EndsAt = now.Add(time.Hour), now.Add(2*time.Hour)
	if err := s.LoadItem(ctx, early, nil, nil); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Reserve(ctx, 3, seckill.Account{ID: 1}, "q", "r"); r.Outcome != stock.NotLive {
		t.Fatalf("early: %s", r.Outcome)
	}
	a, _ := s.Reserve(ctx, 2, seckill.Account{ID: 1}, "same", "r1")
	b, _ := s.Reserve(ctx, 2, seckill.Account{ID: 1}, "same", "r2")
	if a.Outcome != stock.Queued || b.Outcome != stock.Queued || b.OrderRef != "r1" {
		t.Fatalf("retry: %+v %+v", a, b)
	}
	if ok, err := s.Release(ctx, 2, 1, "r1"); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	c, _ := s.Counters(ctx, 2)
	if c.StockLeft != 5 || c.Reserved != 0 || c.Released != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestMiniredisOutbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := miniStore(t)
	if err := s.LoadItem(ctx, liveItem(1, 100), nil, nil); err != nil {
		t.Fatal(err)
	}
	for u := int64(1); u <= 30; u++ {
		if _, err := s.Reserve(ctx, 1, seckill.Account{ID: u}, "q", fmt.Sprint("ref-", u)); err != nil {
			t.Fatal(err)
		}
	}
	ob := s.Outbox("a", time.Hour)
	got, err := ob.Claim(ctx, 100)
	if err != nil || len(got) != 30 {
		t.Fatalf("claimed %d: %v", len(got), err)
	}
	if err := ob.Done(ctx, got[:10]); err != nil {
		t.Fatal(err)
	}
	back, err := s.Outbox("a", time.Hour).Claim(ctx, 100)
	if err != nil || len(back) != 20 {
		t.Fatalf("recovered %d: %v", len(back), err)
	}
	if err := ob.Done(ctx, back); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Counters(ctx, 1); c.OutboxPending != 0 {
		t.Fatalf("outbox %d", c.OutboxPending)
	}
}

// `seckill dev` runs the relay on miniredis: taking back stranded entries,
// the ages and the stranded repair work there too.
func TestMiniredisOutboxTakeBackAndRepair(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := miniStore(t)
	if err := s.LoadItem(ctx, liveItem(1, 100), nil, nil); err != nil {
		t.Fatal(err)
	}
	ob := s.RelayOutbox("a", stock.OutboxOptions{ClaimIdle: 100 * time.Millisecond, StealAfter: time.Hour})
	if got, err := ob.Claim(ctx, 100); err != nil || len(got) != 0 {
		t.Fatalf("first claim %d %v", len(got), err)
	}
	for u := int64(1); u <= 3; u++ {
		if _, err := s.Reserve(ctx, 1, seckill.Account{ID: u}, "q", fmt.Sprint("ref-", u)); err != nil {
			t.Fatal(err)
		}
	}
	rdb := s.Client()
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "relay", Consumer: "a", Streams: []string{rkeys.Space("mini:").Item(1).Outbox, ">"}, Count: 2, Block: -1}).Result()
	if err != nil || len(res[0].Messages) != 2 {
		t.Fatalf("strand: %v %v", res, err)
	}
	time.Sleep(150 * time.Millisecond)
	got, err := ob.Claim(ctx, 100)
	if err != nil || len(got) != 3 || ob.Stats().Reclaimed != 2 {
		t.Fatalf("claimed %d (%v), stats %+v", len(got), err, ob.Stats())
	}
	ages, err := s.OutboxAges(ctx, 1)
	if err != nil || ages.OldestPending <= 0 || ages.OldestUnread != 0 {
		t.Fatalf("ages %+v %v", ages, err)
	}
	time.Sleep(150 * time.Millisecond)
	id, err := s.RequeueStranded(ctx, 1, got[0].ID, 100*time.Millisecond)
	if err != nil || id == "" {
		t.Fatalf("requeue %q %v", id, err)
	}
	st, err := s.OutboxState(ctx, 1)
	if err != nil || len(st.Pending) != 2 || len(st.Unread) != 1 {
		t.Fatalf("state %+v %v", st, err)
	}
}
