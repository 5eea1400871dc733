package limit

import (
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTest(t testing.TB, rules []Rule, opt Options) (*Limiter, *fakeClock) {
	t.Helper()
	c := newClock()
	if opt.Now == nil {
		opt.Now = c.Now
	}
	if opt.IdleAfter == 0 {
		opt.IdleAfter = -1
	}
	l, err := New(rules, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, c
}

func TestBurstRefusalRefill(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc      string
		rate      float64
		burst     int
		wantRetry time.Duration
	}{
		{desc: "1 per second burst 3", rate: 1, burst: 3, wantRetry: time.Second},
		{desc: "1 per 2 seconds burst 2", rate: 0.5, burst: 2, wantRetry: 2 * time.Second},
		{desc: "10 per second burst 5", rate: 10, burst: 5, wantRetry: 100 * time.Millisecond},
		{desc: "100 per minute burst 100", rate: 100.0 / 60, burst: 100, wantRetry: 600 * time.Millisecond},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			l, clk := newTest(t, []Rule{{Name: "r", Class: "buy", Key: "ip", Rate: tc.rate, Burst: tc.burst}}, Options{})
			k := Keys{IP: "192.0.2.1"}
			for i := range tc.burst {
				d := l.Allow("buy", k)
				if !d.Allowed || d.Remaining != tc.burst-1-i {
					t.Fatalf("request %d: %+v, want allowed with %d remaining", i, d, tc.burst-1-i)
				}
			}
			d := l.Allow("buy", k)
			if d.Allowed || d.Rule != "r" || d.Remaining != 0 {
				t.Fatalf("after burst: %+v, want refused by r", d)
			}
			if diff := d.RetryAfter - tc.wantRetry; diff < 0 || diff > time.Microsecond {
				t.Fatalf("RetryAfter = %v, want %v", d.RetryAfter, tc.wantRetry)
			}
			clk.Advance(d.RetryAfter - time.Millisecond)
			if d := l.Allow("buy", k); d.Allowed {
				t.Fatalf("1ms before RetryAfter: allowed")
			}
			clk.Advance(time.Millisecond)
			if d := l.Allow("buy", k); !d.Allowed {
				t.Fatalf("after RetryAfter: %+v, want allowed", d)
			}
			if d := l.Allow("buy", k); d.Allowed {
				t.Fatalf("second after refill: allowed, want refused")
			}
			clk.Advance(time.Duration(float64(tc.burst) / tc.rate * float64(time.Second)))
			for i := range tc.burst {
				if d := l.Allow("buy", k); !d.Allowed {
					t.Fatalf("after full refill request %d refused", i)
				}
			}
		})
	}
}

func TestIndependence(t *testing.T) {
	t.Parallel()
	rules := []Rule{
		{Name: "per-ip", Class: "buy", Key: "ip", Rate: 1e-3, Burst: 2},
		{Name: "per-user", Class: "buy", Key: "user", Rate: 1e-3, Burst: 3},
		{Name: "per-item", Class: "buy", Key: "item", Rate: 1e-3, Burst: 4},
		{Name: "global", Class: "*", Key: "global", Rate: 1e-3, Burst: 1000},
		{Name: "login-ip", Class: "login", Key: "ip", Rate: 1e-3, Burst: 1},
	}
	type req struct {
		class string
		k     Keys
		allow bool
		rule  string // refusing rule when !allow
	}
	for _, tc := range []struct {
		desc string
		reqs []req
	}{
		{desc: "per-ip exhausts, other ip unaffected", reqs: []req{
			{"buy", Keys{IP: "a"}, true, ""},
			{"buy", Keys{IP: "a"}, true, ""},
			{"buy", Keys{IP: "a"}, false, "per-ip"},
			{"buy", Keys{IP: "b"}, true, ""},
		}},
		{desc: "per-user across ips", reqs: []req{
			{"buy", Keys{IP: "a", User: "u"}, true, ""},
			{"buy", Keys{IP: "b", User: "u"}, true, ""},
			{"buy", Keys{IP: "c", User: "u"}, true, ""},
			{"buy", Keys{IP: "d", User: "u"}, false, "per-user"},
			{"buy", Keys{IP: "d", User: "v"}, true, ""},
			{"buy", Keys{IP: "d"}, true, ""}, // anonymous: user rule does not apply
		}},
		{desc: "per-item across users and ips", reqs: []req{
			{"buy", Keys{IP: "a", User: "u1", Item: "i"}, true, ""},
			{"buy", Keys{IP: "b", User: "u2", Item: "i"}, true, ""},
			{"buy", Keys{IP: "c", User: "u3", Item: "i"}, true, ""},
			{"buy", Keys{IP: "d", User: "u4", Item: "i"}, true, ""},
			{"buy", Keys{IP: "e", User: "u5", Item: "i"}, false, "per-item"},
			{"buy", Keys{IP: "e", User: "u5", Item: "j"}, true, ""},
		}},
		{desc: "class separation", reqs: []req{
			{"login", Keys{IP: "a"}, true, ""},
			{"login", Keys{IP: "a"}, false, "login-ip"},
			{"buy", Keys{IP: "a"}, true, ""}, // buy buckets untouched by login
			{"catalog", Keys{IP: "a"}, true, ""},
			{"unknown-class", Keys{IP: "a"}, true, ""},
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			l, _ := newTest(t, rules, Options{})
			for i, r := range tc.reqs {
				d := l.Allow(r.class, r.k)
				if d.Allowed != r.allow || (!r.allow && d.Rule != r.rule) {
					t.Fatalf("request %d %s %+v: got %+v, want allowed=%v rule=%q", i, r.class, r.k, d, r.allow, r.rule)
				}
			}
		})
	}

	t.Run("global shared by everyone", func(t *testing.T) {
		t.Parallel()
		l, _ := newTest(t, []Rule{{Name: "g", Class: "*", Key: "global", Rate: 1e-3, Burst: 3}}, Options{})
		for i, c := range []string{"buy", "login", "status"} {
			if d := l.Allow(c, Keys{IP: strconv.Itoa(i)}); !d.Allowed {
				t.Fatalf("request %d refused", i)
			}
		}
		if d := l.Allow("catalog", Keys{IP: "new"}); d.Allowed || d.Rule != "g" {
			t.Fatalf("4th request: %+v, want refused by g", d)
		}
	})
}

func TestRefusedDoesNotDrainOthers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc  string
		rules []Rule
	}{
		{desc: "ip refuses, user untouched", rules: []Rule{
			{Name: "ip", Class: "buy", Key: "ip", Rate: 1e-3, Burst: 1},
			{Name: "user", Class: "buy", Key: "user", Rate: 1e-3, Burst: 5},
		}},
		{desc: "rule order reversed", rules: []Rule{
			{Name: "user", Class: "buy", Key: "user", Rate: 1e-3, Burst: 5},
			{Name: "ip", Class: "*", Key: "ip", Rate: 1e-3, Burst: 1},
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			l, _ := newTest(t, tc.rules, Options{})
			if d := l.Allow("buy", Keys{IP: "x", User: "u"}); !d.Allowed {
				t.Fatal("first refused")
			}
			for range 50 {
				if d := l.Allow("buy", Keys{IP: "x", User: "u"}); d.Allowed || d.Rule != "ip" {
					t.Fatalf("got %+v, want refused by ip", d)
				}
			}
			// user still has 4 tokens.
			for i := range 4 {
				d := l.Allow("buy", Keys{IP: "y" + strconv.Itoa(i), User: "u"})
				if !d.Allowed {
					t.Fatalf("user request %d refused: %+v", i, d)
				}
			}
			if d := l.Allow("buy", Keys{IP: "z", User: "u"}); d.Allowed || d.Rule != "user" {
				t.Fatalf("got %+v, want refused by user", d)
			}
		})
	}
}

func TestConcurrentExactness(t *testing.T) {
	t.Parallel()
	// Frozen clock, 8 goroutines x 20 ips x 10 tokens = 1600 ip tokens, each
	// goroutine sends 500 requests (4000 in all).
	for _, tc := range []struct {
		desc        string
		userBurst   int
		wantAllowed int
	}{
		{desc: "ip binding: refusals do not drain user", userBurst: 10_000, wantAllowed: 1600},
		{desc: "user binding", userBurst: 1000, wantAllowed: 1000},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			l, clk := newTest(t, []Rule{
				{Name: "user", Class: "buy", Key: "user", Rate: 1e-3, Burst: tc.userBurst},
				{Name: "ip", Class: "buy", Key: "ip", Rate: 1e-3, Burst: 10},
			}, Options{})
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 500 {
						ip := strconv.Itoa(g*1000 + i%20)
						if l.Allow("buy", Keys{IP: ip, User: "u"}).Allowed {
							allowed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			if got := allowed.Load(); got != int64(tc.wantAllowed) {
				t.Fatalf("allowed %d, want %d", got, tc.wantAllowed)
			}
			now := clk.Now()
			left := l.set.Load().all[0].st.bucket("u", now).TokensAt(now)
			if want := float64(tc.userBurst - tc.wantAllowed); left < want-1e-3 || left > want+1e-3 {
				t.Fatalf("user bucket has %v tokens, want %v", left, want)
			}
		})
	}
}

func TestShadow(t *testing.T) {
	t.Parallel()
	l, _ := newTest(t, []Rule{
		{Name: "enforced", Class: "buy", Key: "ip", Rate: 1e-3, Burst: 3},
		{Name: "shadow-user", Class: "buy", Key: "user", Rate: 1e-3, Burst: 1, Shadow: true},
	}, Options{})
	k := Keys{IP: "a", User: "u"}
	for i, tc := range []struct {
		desc       string
		allowed    bool
		shadowHits []string
	}{
		{desc: "first: shadow has a token", allowed: true},
		{desc: "second: shadow would refuse", allowed: true, shadowHits: []string{"shadow-user"}},
		{desc: "third: shadow would refuse", allowed: true, shadowHits: []string{"shadow-user"}},
		{desc: "fourth: enforced refuses, shadow still reported", allowed: false, shadowHits: []string{"shadow-user"}},
	} {
		d := l.Allow("buy", k)
		if d.Allowed != tc.allowed || !slices.Equal(d.ShadowHits, tc.shadowHits) {
			t.Fatalf("%d %s: got %+v", i, tc.desc, d)
		}
		if d.Rule != "enforced" {
			t.Fatalf("%d %s: Rule = %q, shadow rules must never be the reported rule", i, tc.desc, d.Rule)
		}
	}
	// Shadow only: never refuses, no headers.
	l2, _ := newTest(t, []Rule{{Name: "s", Class: "*", Key: "global", Rate: 1e-3, Burst: 1, Shadow: true}}, Options{})
	for i := range 5 {
		d := l2.Allow("login", Keys{IP: "a"})
		if !d.Allowed || d.Rule != "" || (i > 0) != (len(d.ShadowHits) == 1) {
			t.Fatalf("shadow-only %d: %+v", i, d)
		}
		h := http.Header{}
		d.SetHeaders(h)
		if len(h) != 0 {
			t.Fatalf("shadow-only headers: %v", h)
		}
	}
}

func TestSetHeaders(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		d    Decision
		want http.Header
	}{
		{desc: "allowed", d: Decision{Allowed: true, Rule: "burst", Limit: 100, Window: 60 * time.Second, Remaining: 50, Reset: 30 * time.Second},
			want: http.Header{"Ratelimit-Policy": {`"burst";q=100;w=60`}, "Ratelimit": {`"burst";r=50;t=30`}}},
		{desc: "refused rounds retry up", d: Decision{Allowed: false, Rule: "buy-per-user", RetryAfter: 1500 * time.Millisecond, Limit: 5, Window: 10 * time.Second, Reset: 1500 * time.Millisecond},
			want: http.Header{"Ratelimit-Policy": {`"buy-per-user";q=5;w=10`}, "Ratelimit": {`"buy-per-user";r=0;t=2`}, "Retry-After": {"2"}}},
		{desc: "refused sub-second retry is 1", d: Decision{Allowed: false, Rule: "ip", RetryAfter: 100 * time.Millisecond, Limit: 10, Window: time.Second, Reset: 100 * time.Millisecond},
			want: http.Header{"Ratelimit-Policy": {`"ip";q=10;w=1`}, "Ratelimit": {`"ip";r=0;t=1`}, "Retry-After": {"1"}}},
		{desc: "sub-second window is 1, float noise ignored", d: Decision{Allowed: true, Rule: "r", Limit: 5, Window: 200 * time.Millisecond, Remaining: 4, Reset: 60*time.Second + 1},
			want: http.Header{"Ratelimit-Policy": {`"r";q=5;w=1`}, "Ratelimit": {`"r";r=4;t=60`}}},
		{desc: "no rule applied", d: Decision{Allowed: true}, want: http.Header{}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			tc.d.SetHeaders(h)
			if fmt.Sprint(h) != fmt.Sprint(tc.want) {
				t.Fatalf("headers = %v, want %v", h, tc.want)
			}
		})
	}

	t.Run("from limiter", func(t *testing.T) {
		t.Parallel()
		l, _ := newTest(t, []Rule{{Name: "buy-per-user", Class: "buy", Key: "user", Rate: 100.0 / 60, Burst: 100}}, Options{})
		h := http.Header{}
		l.Allow("buy", Keys{IP: "a", User: "u"}).SetHeaders(h)
		if got, want := h.Get("RateLimit-Policy"), `"buy-per-user";q=100;w=60`; got != want {
			t.Fatalf("RateLimit-Policy = %s, want %s", got, want)
		}
		if got, want := h.Get("RateLimit"), `"buy-per-user";r=99;t=1`; got != want {
			t.Fatalf("RateLimit = %s, want %s", got, want)
		}
	})
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	base := []Rule{
		{Name: "keep", Class: "buy", Key: "ip", Rate: 1e-3, Burst: 2},
		{Name: "change", Class: "buy", Key: "user", Rate: 1e-3, Burst: 2},
	}
	for _, tc := range []struct {
		desc       string
		next       []Rule
		keepFull   bool // "keep" bucket still exhausted -> false means reset
		changeLeft int  // tokens of "change" after update (-1: rule gone)
	}{
		{desc: "burst change resets", next: []Rule{base[0], {Name: "change", Class: "buy", Key: "user", Rate: 1e-3, Burst: 3}}, changeLeft: 3},
		{desc: "rate change resets", next: []Rule{base[0], {Name: "change", Class: "buy", Key: "user", Rate: 2e-3, Burst: 2}}, changeLeft: 2},
		{desc: "shadow flip keeps state", next: []Rule{base[0], {Name: "change", Class: "buy", Key: "user", Rate: 1e-3, Burst: 2, Shadow: true}}, changeLeft: 0},
		{desc: "identical keeps state", next: base, changeLeft: 0},
		{desc: "rule removed", next: base[:1], changeLeft: -1},
		{desc: "reordered keeps state", next: []Rule{base[1], base[0]}, changeLeft: 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			l, _ := newTest(t, base, Options{})
			for i := range 2 {
				l.Allow("buy", Keys{IP: "a" + strconv.Itoa(i), User: "u"}) // change: 0 left
				l.Allow("buy", Keys{IP: "k"})                              // keep: 0 left for ip k
			}
			if err := l.Update(tc.next); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(l.Rules(), tc.next) {
				t.Fatalf("Rules() = %v", l.Rules())
			}
			if d := l.Allow("buy", Keys{IP: "k"}); d.Allowed || d.Rule != "keep" {
				t.Fatalf("unchanged rule lost its state: %+v", d)
			}
			if tc.changeLeft < 0 {
				if _, ok := l.Stats()["change"]; ok {
					t.Fatal("removed rule still in Stats")
				}
				return
			}
			got := 0
			for i := range 10 {
				d := l.Allow("buy", Keys{IP: "fresh" + strconv.Itoa(i), User: "u"})
				if !d.Allowed || len(d.ShadowHits) > 0 {
					break
				}
				got++
			}
			if got != tc.changeLeft && !(tc.changeLeft == 0 && got == 10) {
				t.Fatalf("change rule had %d tokens, want %d", got, tc.changeLeft)
			}
		})
	}

	t.Run("invalid update keeps old rules", func(t *testing.T) {
		t.Parallel()
		l, _ := newTest(t, base, Options{})
		if err := l.Update([]Rule{{Name: "x", Class: "nope", Key: "ip", Rate: 1, Burst: 1}}); err == nil {
			t.Fatal("invalid update accepted")
		}
		if !slices.Equal(l.Rules(), base) {
			t.Fatal("rules changed after failed update")
		}
	})
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestMemoryBounded is not parallel: it measures the heap.
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("1M keys")
	}
	const n = 1_000_000
	for _, tc := range []struct {
		desc     string
		maxKeys  int
		wantLive int     // upper bound on live buckets
		maxBytes float64 // heap growth bound
	}{
		{desc: "default cap holds all 1M", maxKeys: 0, wantLive: n, maxBytes: 200 << 20},
		{desc: "cap 10k", maxKeys: 10_000, wantLive: 10_000 + nShards - 1, maxBytes: 20 << 20},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before := heapInUse()
			l, clk := newTest(t, []Rule{{Name: "ip", Class: "*", Key: "ip", Rate: 1, Burst: 10}}, Options{MaxKeysPerRule: tc.maxKeys})
			buf := make([]byte, 0, 32)
			for i := range n {
				buf = strconv.AppendInt(buf[:0], int64(i), 10)
				if !l.Allow("buy", Keys{IP: string(buf)}).Allowed {
					t.Fatalf("key %d refused", i)
				}
				if i%100_000 == 0 {
					clk.Advance(time.Millisecond)
				}
			}
			after := heapInUse()
			live := 0
			for _, c := range l.Stats() {
				live += c
			}
			growth := float64(after) - float64(before)
			t.Logf("%d keys, %d live buckets, heap +%.1f MB, %.0f bytes/live key", n, live, growth/(1<<20), growth/float64(live))
			if live > tc.wantLive {
				t.Fatalf("live buckets %d > %d", live, tc.wantLive)
			}
			if growth > tc.maxBytes {
				t.Fatalf("heap grew %.0f MB > %.0f MB", growth/(1<<20), tc.maxBytes/(1<<20))
			}
			// All buckets are full again after burst/rate = 10s: a sweep
			// frees everything.
			clk.Advance(10 * time.Second)
			if ev := l.sweep(); ev != live {
				t.Fatalf("sweep evicted %d, want %d", ev, live)
			}
			runtime.KeepAlive(l)
		})
	}
}

func TestEvictionKeepsBusyBuckets(t *testing.T) {
	t.Parallel()
	// At the cap, full buckets are evicted in preference to drained ones.
	l, clk := newTest(t, []Rule{{Name: "ip", Class: "*", Key: "ip", Rate: 1, Burst: 1}}, Options{MaxKeysPerRule: nShards * 4})
	l.Allow("buy", Keys{IP: "attacker"}) // drained
	clk.Advance(2 * time.Second)         // every other bucket created later stays full...
	for i := range 10_000 {
		l.Allow("buy", Keys{IP: "k" + strconv.Itoa(i)})
		clk.Advance(2 * time.Second) // ...because each is idle long enough
		l.Allow("buy", Keys{IP: "attacker"})
	}
	if d := l.Allow("buy", Keys{IP: "attacker"}); d.Allowed {
		t.Fatalf("drained bucket was evicted: %+v", d)
	}
}

func TestJanitor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc     string
		advance  time.Duration
		wantLive int
	}{
		{desc: "not idle long enough", advance: 500 * time.Millisecond, wantLive: 100},
		{desc: "idle long enough to be full", advance: time.Second, wantLive: 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			l, clk := newTest(t, []Rule{
				{Name: "ip", Class: "*", Key: "ip", Rate: 1, Burst: 5},
				{Name: "g", Class: "*", Key: "global", Rate: 1, Burst: 500},
			}, Options{IdleAfter: 2 * time.Millisecond})
			for i := range 100 {
				l.Allow("buy", Keys{IP: strconv.Itoa(i)})
			}
			if got := l.Stats()["ip"]; got != 100 {
				t.Fatalf("Stats = %d, want 100", got)
			}
			clk.Advance(tc.advance)
			deadline := time.Now().Add(5 * time.Second)
			for {
				got := l.Stats()["ip"]
				// wantLive > 0: let the janitor run ~50 times first.
				if got == tc.wantLive && (tc.wantLive == 0 || time.Now().After(deadline.Add(-4900*time.Millisecond))) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Stats = %d, want %d", got, tc.wantLive)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if got := l.Stats()["g"]; got != 1 {
				t.Fatalf("global Stats = %d", got)
			}
		})
	}
}

func TestCloseIdempotent(t *testing.T) {
	t.Parallel()
	l, err := New([]Rule{{Name: "a", Class: "*", Key: "ip", Rate: 1, Burst: 1}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	l.Close()
	if !l.Allow("buy", Keys{IP: "a"}).Allowed {
		t.Fatal("Allow after Close")
	}
}

func benchLimiter(b *testing.B) *Limiter {
	l, err := New([]Rule{
		{Name: "ip", Class: "buy", Key: "ip", Rate: 1e9, Burst: 1 << 30},
		{Name: "user", Class: "buy", Key: "user", Rate: 1e9, Burst: 1 << 30},
		{Name: "item", Class: "*", Key: "item", Rate: 1e9, Burst: 1 << 30},
	}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

func BenchmarkAllowHotKey(b *testing.B) {
	l := benchLimiter(b)
	k := Keys{IP: "192.0.2.1", User: "u1", Item: "item-1"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !l.Allow("buy", k).Allowed {
				b.Fatal("refused")
			}
		}
	})
}

func BenchmarkAllowRandomKeys(b *testing.B) {
	l := benchLimiter(b)
	const n = 1 << 16
	keys := make([]Keys, n)
	for i := range keys {
		keys[i] = Keys{IP: "10.0." + strconv.Itoa(i>>8) + "." + strconv.Itoa(i&255), User: "user-" + strconv.Itoa(i*7919%n), Item: "item-" + strconv.Itoa(i%100)}
	}
	var seq atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := seq.Add(1) * 104729
		for pb.Next() {
			i = i*6364136223846793005 + 1442695040888963407
			if !l.Allow("buy", keys[(i>>40)%n]).Allowed {
				b.Fatal("refused")
			}
		}
	})
}

func BenchmarkAllowRefused(b *testing.B) {
	l, err := New([]Rule{
		{Name: "ip", Class: "buy", Key: "ip", Rate: 1e-6, Burst: 1},
		{Name: "user", Class: "buy", Key: "user", Rate: 1e9, Burst: 1 << 30},
		{Name: "item", Class: "*", Key: "item", Rate: 1e9, Burst: 1 << 30},
	}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	k := Keys{IP: "192.0.2.1", User: "u1", Item: "item-1"}
	l.Allow("buy", k)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if l.Allow("buy", k).Allowed {
				b.Fatal("allowed")
			}
		}
	})
}

func TestManyRulesTightest(t *testing.T) {
	t.Parallel()
	// More rules than the on-stack buffers; the tightest rule is reported.
	var rules []Rule
	for i := range 12 {
		rules = append(rules, Rule{Name: "r" + strconv.Itoa(i), Class: "*", Key: "ip", Rate: 1e-3, Burst: 12 - i + 1})
	}
	l, _ := newTest(t, rules, Options{})
	d := l.Allow("buy", Keys{IP: "a"})
	if !d.Allowed || d.Rule != "r11" || d.Remaining != 1 || d.Limit != 2 {
		t.Fatalf("first: %+v, want allowed, tightest r11 with 1 left", d)
	}
	l.Allow("buy", Keys{IP: "a"})
	if d := l.Allow("buy", Keys{IP: "a"}); d.Allowed || d.Rule != "r11" {
		t.Fatalf("third: %+v, want refused by r11", d)
	}
	// r10 (burst 3) was not drained by the refusal: one more token once r11
	// is removed.
	if err := l.Update(rules[:11]); err != nil {
		t.Fatal(err)
	}
	if d := l.Allow("buy", Keys{IP: "a"}); !d.Allowed || d.Rule != "r10" || d.Remaining != 0 {
		t.Fatalf("after removing r11: %+v", d)
	}
}
