package stock_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"seckill"
	"seckill/internal/testenv"
	"seckill/stock"
)

func liveItem(id, units int64) seckill.Item {
	now := time.Now()
	return seckill.Item{ID: id, Name: "item", Stock: units, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}
}

func newStore(t *testing.T) *stock.Store {
	rdb, prefix := testenv.Redis(t)
	return stock.New(rdb, prefix)
}

func TestReserveConcurrentNeverOversells(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.LoadItem(ctx, liveItem(1, 1000), nil, nil); err != nil {
		t.Fatal(err)
	}
	var queued, already, soldOut atomic.Int64
	refs := sync.Map{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for u := int64(1); u <= 5000; u++ {
		for a := 0; a < 3; a++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ref := fmt.Sprintf("r-%d-%d", u, a)
				r, err := s.Reserve(ctx, 1, seckill.Account{ID: u}, fmt.Sprintf("q-%d-%d", u, a), ref)
				if err != nil {
					t.Error(err)
					return
				}
				switch r.Outcome {
				case stock.Queued:
					queued.Add(1)
					if _, dup := refs.LoadOrStore(u, ref); dup {
						t.Errorf("user %d queued twice", u)
					}
				case stock.AlreadyBought:
					already.Add(1)
				case stock.SoldOut:
					soldOut.Add(1)
				default:
					t.Errorf("unexpected outcome %s", r.Outcome)
				}
			}()
		}
	}
	wg.Wait()
	if queued.Load() != 1000 {
		t.Fatalf("queued = %d, want 1000", queued.Load())
	}
	if got := queued.Load() + already.Load() + soldOut.Load(); got != 15000 {
		t.Fatalf("answers = %d, want 15000", got)
	}
	c, err := s.Counters(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := stock.Counters{Loaded: true, StockTotal: 1000, StockLeft: 0, Reserved: 1000, OutboxPending: 1000}
	if c != want {
		t.Fatalf("counters = %+v, want %+v", c, want)
	}
	buyers, err := s.Buyers(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(buyers) != 1000 {
		t.Fatalf("buyers = %d, want 1000", len(buyers))
	}
	for u, ref := range buyers {
		if r, _ := refs.Load(u); r != ref {
			t.Fatalf("buyer %d holds %q, reservation said %q", u, ref, r)
		}
	}
}

func TestReserveOneUserManyAttempts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.LoadItem(ctx, liveItem(7, 50), nil, nil); err != nil {
		t.Fatal(err)
	}
	var queued, already atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Reserve(ctx, 7, seckill.Account{ID: 42}, fmt.Sprintf("req-%d", i), fmt.Sprintf("ref-%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			switch r.Outcome {
			case stock.Queued:
				queued.Add(1)
			case stock.AlreadyBought:
				already.Add(1)
			}
		}()
	}
	wg.Wait()
	if queued.Load() != 1 || already.Load() != 99 {
		t.Fatalf("queued=%d already=%d, want 1 and 99", queued.Load(), already.Load())
	}
	c, _ := s.Counters(ctx, 7)
	if c.StockLeft != 49 || c.Reserved != 1 || c.OutboxPending != 1 {
		t.Fatalf("counters = %+v", c)
	}
}

func TestReserveSameRequestTwiceTakesOneUnit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.LoadItem(ctx, liveItem(3, 10), nil, nil); err != nil {
		t.Fatal(err)
	}
	first, err := s.Reserve(ctx, 3, seckill.Account{ID: 5}, "req-A", "ref-1")
	if err != nil {
		t.Fatal(err)
	}
	// The retry carries the same request id (a new ref would be generated
	// by a naive caller: the script must answer with the first one).
	second, err := s.Reserve(ctx, 3, seckill.Account{ID: 5}, "req-A", "ref-2")
	if err != nil {
		t.Fatal(err)
	}
	if first.Outcome != stock.Queued || second.Outcome != stock.Queued || second.OrderRef != "ref-1" {
		t.Fatalf("first %+v, second %+v: want both queued with ref-1", first, second)
	}
	other, _ := s.Reserve(ctx, 3, seckill.Account{ID: 5}, "req-B", "ref-3")
	if other.Outcome != stock.AlreadyBought || other.OrderRef != "ref-1" {
		t.Fatalf("another request of the same user: %+v", other)
	}
	c, _ := s.Counters(ctx, 3)
	if c.StockLeft != 9 || c.Reserved != 1 || c.OutboxPending != 1 {
		t.Fatalf("counters = %+v, want 9 left, 1 reserved, 1 in outbox", c)
	}
}

func TestReserveOutsideWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	now := time.Now()
	early := seckill.Item{ID: 1, Stock: 5, StartsAt: now.Add(time.Hour), EndsAt: now.Add(2 * time.Hour)}
	late := seckill.Item{ID: 2, Stock: 5, StartsAt: now.Add(-2 * time.Hour), EndsAt: now.Add(-time.Hour)}
	for _, it := range []seckill.Item{early, late} {
		if err := s.LoadItem(ctx, it, nil, nil); err != nil {
			t.Fatal(err)
		}
		r, err := s.Reserve(ctx, it.ID, seckill.Account{ID: 1}, "q", "r")
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != stock.NotLive {
			t.Fatalf("item %d: outcome %s, want not_live", it.ID, r.Outcome)
		}
		c, _ := s.Counters(ctx, it.ID)
		if c.StockLeft != 5 || c.Reserved != 0 || c.OutboxPending != 0 {
			t.Fatalf("item %d: counters %+v changed by a refused attempt", it.ID, c)
		}
	}
	r, _ := s.Reserve(ctx, 99, seckill.Account{ID: 1}, "q", "r")
	if r.Outcome != stock.UnknownItem {
		t.Fatalf("unknown item: %s", r.Outcome)
	}
}

func TestLoadItemKeepsLiveCounters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	it := liveItem(4, 10)
	if err := s.LoadItem(ctx, it, nil, nil); err != nil {
		t.Fatal(err)
	}
	for u := int64(1); u <= 3; u++ {
		if _, err := s.Reserve(ctx, 4, seckill.Account{ID: u}, "q", fmt.Sprint("r", u)); err != nil {
			t.Fatal(err)
		}
	}
	// A backend restart loads the item again, with whatever PostgreSQL has.
	if err := s.LoadItem(ctx, it, map[int64]string{1: "r1"}, nil); err != nil {
		t.Fatal(err)
	}
	c, _ := s.Counters(ctx, 4)
	if c.StockLeft != 7 || c.Reserved != 3 {
		t.Fatalf("counters after reload = %+v, want 7 left and 3 reserved", c)
	}
	// A Redis that lost everything resumes from the database.
	s2 := newStore(t)
	if err := s2.LoadItem(ctx, it, map[int64]string{1: "r1", 2: "r2"}, nil); err != nil {
		t.Fatal(err)
	}
	c, _ = s2.Counters(ctx, 4)
	if c.StockLeft != 8 || c.Reserved != 2 {
		t.Fatalf("counters from database = %+v, want 8 left and 2 reserved", c)
	}
	r, _ := s2.Reserve(ctx, 4, seckill.Account{ID: 2}, "q", "x")
	if r.Outcome != stock.AlreadyBought || r.OrderRef != "r2" {
		t.Fatalf("stored buyer may buy again: %+v", r)
	}
}

func TestReleaseIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.LoadItem(ctx, liveItem(5, 1), nil, nil); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Reserve(ctx, 5, seckill.Account{ID: 1}, "q", "ref-1"); r.Outcome != stock.Queued {
		t.Fatal(r)
	}
	if r, _ := s.Reserve(ctx, 5, seckill.Account{ID: 2}, "q", "ref-2"); r.Outcome != stock.SoldOut {
		t.Fatalf("want sold out, got %s", r.Outcome)
	}
	if ok, _ := s.Release(ctx, 5, 1, "wrong-ref"); ok {
		t.Fatal("released with the wrong ref")
	}
	for i, want := range []bool{true, false} {
		ok, err := s.Release(ctx, 5, 1, "ref-1")
		if err != nil || ok != want {
			t.Fatalf("release %d: %v %v, want %v", i, ok, err, want)
		}
	}
	c, _ := s.Counters(ctx, 5)
	if c.StockLeft != 1 || c.Reserved != 0 || c.Released != 1 {
		t.Fatalf("counters = %+v", c)
	}
	if r, _ := s.Reserve(ctx, 5, seckill.Account{ID: 2}, "q", "ref-2"); r.Outcome != stock.Queued {
		t.Fatalf("released unit not sold again: %s", r.Outcome)
	}
}

func TestOutboxClaimDoneAndRecovery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	for id := int64(1); id <= 2; id++ {
		if err := s.LoadItem(ctx, liveItem(id, 100), nil, nil); err != nil {
			t.Fatal(err)
		}
		for u := int64(1); u <= 30; u++ {
			if _, err := s.Reserve(ctx, id, seckill.Account{ID: u}, "q", fmt.Sprintf("ref-%d-%d", id, u)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ob := s.Outbox("relay-a", time.Hour)
	got, err := ob.Claim(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 60 {
		t.Fatalf("claimed %d, want 60", len(got))
	}
	if again, _ := ob.Claim(ctx, 1000); len(again) != 0 {
		t.Fatalf("claimed %d entries twice in one life", len(again))
	}
	if err := ob.Done(ctx, got[:20]); err != nil {
		t.Fatal(err)
	}
	// The relay dies; restarted under the same name it takes back its 40.
	ob2 := s.Outbox("relay-a", time.Hour)
	back, err := ob2.Claim(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 40 {
		t.Fatalf("recovered %d, want 40", len(back))
	}
	// Another relay steals entries abandoned for longer than stealAfter.
	time.Sleep(60 * time.Millisecond)
	thief := s.Outbox("relay-b", 50*time.Millisecond)
	stolen, err := thief.Claim(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(stolen) != 40 {
		t.Fatalf("stolen %d, want 40", len(stolen))
	}
	if m := stolen[0].Order; stolen[0].Err != nil || m.Validate() != nil || m.ReservedAt.IsZero() || m.ItemID != 1 && m.ItemID != 2 {
		t.Fatalf("entry %+v", stolen[0])
	}
	if err := thief.Done(ctx, stolen); err != nil {
		t.Fatal(err)
	}
	c1, _ := s.Counters(ctx, 1)
	c2, _ := s.Counters(ctx, 2)
	if c1.OutboxPending+c2.OutboxPending != 0 {
		t.Fatalf("outbox pending = %d + %d, want 0", c1.OutboxPending, c2.OutboxPending)
	}
}
