package redislimit_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"seckill/internal/testenv"
	"seckill/limit"
	"seckill/limit/redislimit"
)

const net24 = "192.0.2.0/24"

func quotas(ip string) []limit.Quota {
	return limit.Registration{PerIP: 5, PerNetwork: 50, Window: limit.Window(24 * time.Hour)}.Quotas(ip, net24)
}

// TestConcurrentTakesExact: 20 concurrent takes from one IP on real Redis:
// exactly 5 allowed, 15 refused with a wait of about the window.
func TestConcurrentTakesExact(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	b := redislimit.New(rdb, prefix)
	ctx := context.Background()
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			d, err := b.Take(ctx, net24, fmt.Sprintf("attempt-%d", i), quotas("192.0.2.7")...)
			if err != nil {
				t.Error(err)
				return
			}
			if d.Allowed {
				ok.Add(1)
				return
			}
			refused.Add(1)
			if d.Rule != "accounts-per-ip" || d.RetryAfter < 23*time.Hour || d.RetryAfter > 24*time.Hour || d.Limit != 5 {
				t.Errorf("refusal %+v: want accounts-per-ip, limit 5, about 24 h to wait", d)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 5 || refused.Load() != 15 {
		t.Fatalf("allowed %d, refused %d: want 5 and 15", ok.Load(), refused.Load())
	}
	n, err := b.Count(ctx, net24, quotas("192.0.2.7")[1])
	if err != nil || n != 5 {
		t.Fatalf("network count %d (%v), want 5", n, err)
	}
}

// TestNetworkBudgetAcrossIPs: 50 per /24 whatever the address: 60 takes
// from 20 addresses of one /24 (3 each), 50 allowed; another /24 is
// untouched.
func TestNetworkBudgetAcrossIPs(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	b := redislimit.New(rdb, prefix)
	ctx := context.Background()
	allowed := 0
	var last limit.Decision
	for i := range 60 {
		ip := fmt.Sprintf("192.0.2.%d", i%20+1)
		d, err := b.Take(ctx, net24, fmt.Sprintf("a%d", i), quotas(ip)...)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			allowed++
		} else {
			last = d
		}
	}
	if allowed != 50 || last.Rule != "accounts-per-network" || last.Limit != 50 {
		t.Fatalf("allowed %d (last refusal %+v), want 50 refused by accounts-per-network", allowed, last)
	}
	other := limit.Registration{PerIP: 5, PerNetwork: 50, Window: limit.Window(24 * time.Hour)}.Quotas("198.51.100.1", "198.51.100.0/24")
	if d, err := b.Take(ctx, "198.51.100.0/24", "b1", other...); err != nil || !d.Allowed || d.Remaining != 4 {
		t.Fatalf("another network: %+v %v, want allowed with 4 left on the IP", d, err)
	}
}

// TestSameIDTwiceCountsOnce and Give: an attempt taken twice (a retry)
// counts once; Give frees its place; a refused attempt took nothing.
func TestSameIDTwiceCountsOnceAndGive(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	b := redislimit.New(rdb, prefix)
	ctx := context.Background()
	qs := quotas("192.0.2.9")
	for i := range 5 {
		for range 2 {
			if d, err := b.Take(ctx, net24, fmt.Sprint(i), qs...); err != nil || !d.Allowed || d.Remaining != 4-i {
				t.Fatalf("take %d: %+v %v, want allowed, %d left", i, d, err, 4-i)
			}
		}
	}
	if d, _ := b.Take(ctx, net24, "late", qs...); d.Allowed {
		t.Fatal("a sixth attempt was allowed")
	}
	if err := b.Give(ctx, net24, "3", qs...); err != nil {
		t.Fatal(err)
	}
	if d, err := b.Take(ctx, net24, "late", qs...); err != nil || !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after a give back: %+v %v, want allowed with 0 left", d, err)
	}
	for _, q := range qs {
		if n, _ := b.Count(ctx, net24, q); n != 5 {
			t.Fatalf("%s holds %d, want 5", q.Name, n)
		}
	}
}

// TestTakeReplyLost: the script's reply is lost after it ran (a proxy
// drops it) and go-redis sends it again: one take counted, the answer
// "allowed"; and with a full budget, a lost reply of a refused take lets
// nothing through on the retry.
func TestTakeReplyLost(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	b := redislimit.New(f.Client, f.Prefix)
	direct := redislimit.New(f.Direct, f.Prefix)
	ctx := context.Background()
	qs := quotas("192.0.2.10")
	for i := range 4 {
		if d, err := direct.Take(ctx, net24, fmt.Sprint("pre", i), qs...); err != nil || !d.Allowed {
			t.Fatal(d, err)
		}
	}
	count := func(ctx context.Context) int64 { n, _ := direct.Count(ctx, net24, qs[0]); return n }
	d, err := testenv.LoseReply(t, f, func(ctx context.Context) bool { return count(ctx) == 5 }, func() (limit.Decision, error) {
		return b.Take(ctx, net24, "lost", qs...)
	})
	if err != nil || !d.Allowed || d.Remaining != 0 {
		t.Fatalf("retried take: %+v %v, want allowed with 0 left", d, err)
	}
	if n := count(ctx); n != 5 {
		t.Fatalf("the budget holds %d takes, want 5 (the retry counted twice)", n)
	}
	// Full: a refused take whose reply is lost is refused again.
	var ran atomic.Bool
	f.Proxy.DropReplies(true)
	go func() { time.Sleep(100 * time.Millisecond); ran.Store(true); f.Proxy.DropReplies(false) }()
	d, err = b.Take(ctx, net24, "over", qs...)
	if err != nil || d.Allowed {
		t.Fatalf("take over a full budget after lost replies: %+v %v, want refused", d, err)
	}
	if n := count(ctx); n != 5 {
		t.Fatalf("the budget holds %d takes, want 5", n)
	}
}

// TestRedisDown: an error, never a decision.
func TestRedisDown(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rdb.Close()
	d, err := redislimit.New(rdb, "x:").Take(context.Background(), net24, "a", quotas("192.0.2.1")...)
	if err == nil || d.Allowed {
		t.Fatalf("Redis down: %+v %v, want an error", d, err)
	}
}

// TestMiniredis: seckill dev runs the same script on miniredis.
func TestMiniredis(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	b := redislimit.New(rdb, "dev:")
	ctx := context.Background()
	for i := range 6 {
		d, err := b.Take(ctx, net24, fmt.Sprint(i), quotas("192.0.2.1")...)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != (i < 5) {
			t.Fatalf("take %d: %+v", i, d)
		}
	}
}

// TestPeekTakesNothing: Peek answers what Take would, and counts nothing.
func TestPeekTakesNothing(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	b := redislimit.New(rdb, prefix)
	ctx := context.Background()
	qs := quotas("192.0.2.20")
	for i := range 5 {
		d, err := b.Peek(ctx, net24, qs...)
		if err != nil || !d.Allowed || d.Remaining != 4-i {
			t.Fatalf("peek before take %d: %+v %v, want allowed with %d left after a take", i, d, err, 4-i)
		}
		if d, err := b.Take(ctx, net24, fmt.Sprint(i), qs...); err != nil || !d.Allowed {
			t.Fatal(d, err)
		}
	}
	d, err := b.Peek(ctx, net24, qs...)
	if err != nil || d.Allowed || d.Rule != "accounts-per-ip" || d.RetryAfter < 23*time.Hour {
		t.Fatalf("peek at a full budget: %+v %v, want refused by accounts-per-ip", d, err)
	}
	if n, _ := b.Count(ctx, net24, qs[0]); n != 5 {
		t.Fatalf("the budget holds %d, want 5 (peeks took)", n)
	}
}
