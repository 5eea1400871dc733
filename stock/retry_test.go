package stock_test

import (
	"context"
	"testing"

	"seckill"
	"seckill/internal/testenv"
	"seckill/stock"
)

// TestReserveReplyLost: the reservation script's reply is lost after it
// took the unit; go-redis (production MaxRetries) sends it again with the
// same request id and order ref. The retry must give the first answer
// (queued, the same order ref) and take nothing more: one unit, one buyer,
// one outbox entry.
func TestReserveReplyLost(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	s := stock.New(f.Client, f.Prefix)
	ctx := context.Background()
	if err := s.LoadItem(ctx, liveItem(11, 5), nil, nil); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Reserve(ctx, 11, seckill.Account{ID: 1}, "warm", "o-warm"); err != nil || r.Outcome != stock.Queued {
		t.Fatalf("warm-up: %+v %v", r, err)
	}
	direct := stock.New(f.Direct, f.Prefix)
	r, err := testenv.LoseReply(t, f, func(ctx context.Context) bool {
		_, held, _ := direct.Buyer(ctx, 11, 2)
		return held
	}, func() (stock.Reservation, error) { return s.Reserve(ctx, 11, seckill.Account{ID: 2}, "req-2", "o-2") })
	if err != nil {
		t.Fatalf("reserve after a lost reply: %v", err)
	}
	if r.Outcome != stock.Queued || r.OrderRef != "o-2" || r.StockLeft != 3 {
		t.Fatalf("reserve after a lost reply = %+v, want queued o-2 with 3 left", r)
	}
	c, err := direct.Counters(ctx, 11)
	if err != nil {
		t.Fatal(err)
	}
	if c.StockLeft != 3 || c.Reserved != 2 || c.OutboxPending != 2 {
		t.Fatalf("counters %+v, want 3 left, 2 reserved, 2 in the outbox", c)
	}
}

// TestReleaseReplyLost: a release whose reply is lost and retried gives
// exactly one unit back. (The retry answers false, "already released":
// the worker only logs that answer.)
func TestReleaseReplyLost(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	s := stock.New(f.Client, f.Prefix)
	direct := stock.New(f.Direct, f.Prefix)
	ctx := context.Background()
	if err := s.LoadItem(ctx, liveItem(12, 2), nil, nil); err != nil {
		t.Fatal(err)
	}
	for u, ref := range map[int64]string{1: "o-1", 2: "o-2"} {
		if _, err := s.Reserve(ctx, 12, seckill.Account{ID: u}, ref, ref); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Release(ctx, 12, 1, "o-1"); err != nil { // warm the script
		t.Fatal(err)
	}
	_, err := testenv.LoseReply(t, f, func(ctx context.Context) bool {
		_, held, _ := direct.Buyer(ctx, 12, 2)
		return !held
	}, func() (bool, error) { return s.Release(ctx, 12, 2, "o-2") })
	if err != nil {
		t.Fatalf("release after a lost reply: %v", err)
	}
	c, err := direct.Counters(ctx, 12)
	if err != nil {
		t.Fatal(err)
	}
	if c.StockLeft != 2 || c.Released != 2 || c.Reserved != 0 {
		t.Fatalf("counters %+v, want 2 left and 2 released (one each)", c)
	}
}
