package e2e

import (
	"context"
	"testing"
	"time"

	"seckill"
	"seckill/internal/testenv"
)

// TestPoisonOrderFailsAndReleasesItsUnit: an order PostgreSQL refuses (its
// user does not exist: foreign key) is retried up to the delivery limit,
// dead-lettered, recorded as failed, and its unit goes back to stock, where
// another buyer takes it. Counted, never dropped silently.
func TestPoisonOrderFailsAndReleasesItsUnit(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	item := s.createItem(1, "none")
	good := s.users(1)[0]
	s.startRelay(s.amqpURL, "relay-"+s.queue)
	s.startWorker(s.amqpURL)

	const ghost = 987654321 // no such user
	res, err := s.svc.Reserve(ctx, item.ID, seckill.Account{ID: ghost}, "g1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.Reserve(ctx, item.ID, seckill.Account{ID: good}, "g2"); seckill.ErrorCode(err) != seckill.ESoldOut {
		t.Fatalf("second buyer before the failure: %v, want sold_out", err)
	}
	testenv.Eventually(t, 60*time.Second, "the ghost order to fail", func() bool {
		st, err := s.svc.Status(ctx, item.ID, ghost)
		return err == nil && st.Status == seckill.StatusFailed && st.OrderRef == res.OrderRef
	})
	st, err := s.svc.Stats(ctx, item.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := seckill.Stats{ItemID: item.ID, StockTotal: 1, StockLeft: 1, Reserved: 0, Orders: 0, OutboxPending: 0, Failed: 1}
	if st != want {
		t.Fatalf("stats after failure %+v, want %+v", st, want)
	}
	r2, err := s.svc.Reserve(ctx, item.ID, seckill.Account{ID: good}, "g3")
	if err != nil {
		t.Fatalf("released unit not sold again: %v", err)
	}
	s.waitOrders(item.ID, 1, 30*time.Second)
	if st, _ := s.svc.Status(ctx, item.ID, good); st.Status != seckill.StatusConfirmed || st.OrderRef != r2.OrderRef {
		t.Fatalf("good buyer: %+v", st)
	}
	s.checkFinalWithFailed(item, map[int64]string{good: r2.OrderRef}, 1)
}
