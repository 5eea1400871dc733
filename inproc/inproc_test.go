package inproc_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/inproc"
	"seckill/internal/rkeys"
	"seckill/stock"
)

type handler struct {
	mu     sync.Mutex
	stored map[string]int
	failed map[string]string
	poison string
	calls  int
}

func (h *handler) Store(ctx context.Context, msgs []seckill.OrderMessage) []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		if m.OrderRef == h.poison {
			errs[i] = errors.New("refused")
			continue
		}
		h.stored[m.OrderRef]++
	}
	return errs
}

func (h *handler) Failed(ctx context.Context, m seckill.OrderMessage, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failed[m.OrderRef] = reason
	return nil
}

func setup(t *testing.T, units int64) (*stock.Store, *handler) {
	t.Helper()
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	st := stock.New(rdb, "t:")
	now := time.Now()
	if err := st.LoadItem(context.Background(), seckill.Item{ID: 1, Stock: units, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}, nil, nil); err != nil {
		t.Fatal(err)
	}
	return st, &handler{stored: map[string]int{}, failed: map[string]string{}}
}

func run(t *testing.T, p *inproc.Pipeline) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	return func() { cancel(); <-done }
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEveryOrderStoredOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, h := setup(t, 2000)
	h.poison = "ref-7"
	stop := run(t, inproc.New(st.Outbox("dev", time.Minute), h, inproc.Config{Batch: 100, DeliveryLimit: 3}))
	defer stop()
	for u := int64(1); u <= 2000; u++ {
		if _, err := st.Reserve(ctx, 1, seckill.Account{ID: u}, "q", fmt.Sprint("ref-", u)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the outbox to drain", func() bool {
		c, _ := st.Counters(ctx, 1)
		return c.OutboxPending == 0
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.stored) != 1999 {
		t.Fatalf("stored %d distinct, want 1999", len(h.stored))
	}
	for ref, n := range h.stored {
		if n != 1 {
			t.Fatalf("%s stored %d times", ref, n)
		}
	}
	if len(h.failed) != 1 || h.failed["ref-7"] != "delivery_limit" {
		t.Fatalf("failed %v", h.failed)
	}
}

func TestRestartTakesBackPendingEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, h := setup(t, 100)
	for u := int64(1); u <= 50; u++ {
		if _, err := st.Reserve(ctx, 1, seckill.Account{ID: u}, "q", fmt.Sprint("ref-", u)); err != nil {
			t.Fatal(err)
		}
	}
	// A previous life claimed everything and died before storing.
	if got, err := st.Outbox("dev", time.Minute).Claim(ctx, 100); err != nil || len(got) != 50 {
		t.Fatalf("claim: %d %v", len(got), err)
	}
	stop := run(t, inproc.New(st.Outbox("dev", time.Minute), h, inproc.Config{}))
	defer stop()
	waitFor(t, "50 stored", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.stored) == 50
	})
}

// An outbox entry whose fields make no order is recorded as failed
// (malformed) and leaves the outbox; the others are stored.
func TestMalformedEntryFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, h := setup(t, 10)
	for u := int64(1); u <= 3; u++ {
		if _, err := st.Reserve(ctx, 1, seckill.Account{ID: u}, "q", fmt.Sprint("ref-", u)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Client().XAdd(ctx, &redis.XAddArgs{Stream: rkeys.Space("t:").Item(1).Outbox, Values: []string{"ref", "ref-bad", "user", "x", "item", "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	p := inproc.New(st.Outbox("dev", time.Minute), h, inproc.Config{})
	stop := run(t, p)
	defer stop()
	waitFor(t, "the outbox to drain", func() bool {
		n, _ := st.Client().XLen(ctx, rkeys.Space("t:").Item(1).Outbox).Result()
		return n == 0
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.stored) != 3 || len(h.failed) != 1 || h.failed[""] != "malformed" {
		t.Fatalf("stored %v, failed %v", h.stored, h.failed)
	}
	if s := p.Stats(); s.Stored != 3 || s.Malformed != 1 || s.Failed != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// The in-process pipeline passes values: it links no queue package and
// no broker client.
func TestLinksNoQueue(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "seckill/inproc").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "seckill/queue" || strings.HasPrefix(dep, "github.com/rabbitmq/") {
			t.Errorf("seckill/inproc links %s", dep)
		}
	}
}
