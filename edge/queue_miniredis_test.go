package edge

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/stock"
)

// TestQueueOnMiniredis: the waiting room's script runs on the embedded
// Redis of seckill dev (miniredis), which has no INFO server: joins,
// polls, steps and peeks answer (the server's run_id is then unknown, so
// no token is trusted and every record is checked). Before the pcall, every
// step and peek failed there: the dashboard's stats and every poll with a
// token answered 503.
func TestQueueOnMiniredis(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	now := time.Now()
	it := seckill.Item{ID: 3, Name: "q", Stock: 10, StartsAt: now.Add(time.Hour), EndsAt: now.Add(2 * time.Hour),
		SaleRules: seckill.SaleRules{Allocation: seckill.AllocationQueue}}
	if err := stock.New(rdb, "t:").LoadItem(ctx, it, nil, nil); err != nil {
		t.Fatal(err)
	}
	w := newWaitingRoom(rdb, "t:", time.Second, 0)
	var toks []pollToken
	for u := int64(1); u <= 3; u++ {
		st, err := w.run(ctx, opJoin, it, u, 1)
		if err != nil || st.State != qWaiting || !st.HasPlace {
			t.Fatalf("join %d: %+v %v", u, st, err)
		}
		toks = append(toks, pollToken{User: u, Item: it.ID, Ticket: st.Ticket, Place: st.Place, Issued: st.Now, Run: st.Run})
	}
	for _, op := range []queueOp{opStep, opPeek} {
		if _, err := w.run(ctx, op, it, 0, 1); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
	}
	for _, tk := range toks {
		if st, err := pollAt(ctx, w, it, tk); err != nil || st.State != qWaiting {
			t.Fatalf("poll of %d: %+v %v", tk.User, st, err)
		}
	}
}
