package edge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"seckill"
	"seckill/limit"
)

func TestSessionRoundTripAndTampering(t *testing.T) {
	t.Parallel()
	s := NewSessions([]byte("k1"), time.Hour, false)
	tok, exp := s.Sign(42, "ann")
	got, err := s.Verify(tok)
	if err != nil || got.UserID != 42 || got.Username != "ann" || got.Expires != exp.Unix() {
		t.Fatalf("verify: %+v %v", got, err)
	}
	other := NewSessions([]byte("k2"), time.Hour, false)
	cases := []struct{ desc, tok string }{
		{"other key", func() string { t, _ := other.Sign(42, "ann"); return t }()},
		{"empty", ""},
		{"no dot", "abc"},
		{"flipped payload", flip(tok, 0)},
		{"flipped mac", flip(tok, len(tok)-1)},
		{"padding bits of the mac", lowBit(tok)},
		{"expired", func() string { t, _ := s.SignUntil(42, "ann", time.Now().Add(-time.Second)); return t }()},
		{"huge", strings.Repeat("a", 5000)},
	}
	for _, tc := range cases {
		if _, err := s.Verify(tc.tok); seckill.ErrorCode(err) != seckill.EUnauthorized {
			t.Errorf("%s: %v, want unauthenticated", tc.desc, err)
		}
	}
}

// flip changes the character at i to another base64url character.
func flip(s string, i int) string {
	c := byte('Q') // differs from 'A' in the high (data) bits
	if s[i] == 'Q' {
		c = 'A'
	}
	return s[:i] + string(c) + s[i+1:]
}

// lowBit flips the lowest bit of the last character: for a 32-byte MAC
// that bit is padding, so only a strict decoder notices.
func lowBit(s string) string {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alpha, s[len(s)-1])
	return s[:len(s)-1] + string(alpha[i^1])
}

func FuzzSessionVerify(f *testing.F) {
	s := NewSessions([]byte("fuzz"), time.Hour, false)
	tok, _ := s.Sign(7, "x")
	f.Add(tok)
	f.Add("")
	f.Add("a.b")
	f.Add("eyJ1IjoxfQ.AAAA")
	f.Fuzz(func(t *testing.T, tok string) {
		ses, err := s.Verify(tok)
		if err == nil && ses.UserID <= 0 {
			t.Fatalf("accepted a session without a user: %q", tok)
		}
	})
}

func TestAnswerString(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{`"12"`: "12", `12`: "12", `-3`: "-3", `null`: "", `{"a":1}`: "", `[1]`: "", `1e3`: "1e3"} {
		if got := answerString(json.RawMessage(raw)); got != want {
			t.Errorf("%s: %q, want %q", raw, got, want)
		}
	}
}

func FuzzAnswerString(f *testing.F) {
	for _, s := range []string{`"1"`, `1`, `null`, `{}`, `"\u0000"`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { _ = answerString(raw) })
}

type countingSource struct {
	calls atomic.Int64
	delay time.Duration
	items []seckill.ItemView
	err   error
}

func (c *countingSource) Items(ctx context.Context) ([]seckill.ItemView, error) {
	c.calls.Add(1)
	time.Sleep(c.delay)
	return c.items, c.err
}

func TestCatalogOneRefreshForACrowd(t *testing.T) {
	t.Parallel()
	now := time.Now()
	src := &countingSource{delay: 50 * time.Millisecond, items: []seckill.ItemView{{
		Item: seckill.Item{ID: 3, Stock: 10, StartsAt: now.Add(time.Minute), EndsAt: now.Add(time.Hour)}, StockLeft: 10}}}
	c := newCatalog(src, time.Hour)
	c.Learn(3)
	var wg sync.WaitGroup
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			it, err := c.Item(context.Background(), 3)
			if err != nil || it.State != "upcoming" {
				t.Errorf("item: %+v %v", it, err)
			}
		}()
	}
	wg.Wait()
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("%d refreshes for 1,000 readers, want 1", n)
	}
	if _, err := c.Item(context.Background(), 4); seckill.ErrorCode(err) != seckill.EUnknownItem {
		t.Fatalf("unknown id: %v", err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("an unknown id reached the source (%d calls)", n)
	}
	// A failed refresh serves the stale copy.
	c.Invalidate()
	src.err = errors.New("down")
	if _, err := c.Item(context.Background(), 3); err != nil {
		t.Fatalf("stale copy not served: %v", err)
	}
}

func TestGuardShedsOverTheBound(t *testing.T) {
	t.Parallel()
	g := NewGuard(1, BreakerConfig{}, nil)
	release := make(chan struct{})
	started := make(chan struct{})
	go func() {
		_, _ = do(context.Background(), g, callRead, func(ctx context.Context) (int, error) {
			close(started)
			<-release
			return 1, nil
		})
	}()
	<-started
	_, err := do(context.Background(), g, callRead, func(ctx context.Context) (int, error) {
		t.Fatal("the second call ran")
		return 0, nil
	})
	if seckill.ErrorCode(err) != seckill.EOverloaded {
		t.Fatalf("over the bound: %v, want overloaded", err)
	}
	close(release)
}

func TestGuardBreakerOpensAndRecovers(t *testing.T) {
	t.Parallel()
	// Open for 1 s: the 5 calls below must all come while it is open (a
	// stall of 100 ms on a busy machine let a half-open probe through).
	g := NewGuard(10, BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Second, HalfOpenProbes: 1}, nil)
	down := &seckill.UnavailableError{Err: errors.New("refused")}
	var calls int
	fail := func(ctx context.Context) (int, error) { calls++; return 0, down }
	for range 5 {
		if _, err := do(context.Background(), g, callRead, fail); seckill.ErrorCode(err) != seckill.EUnavailable {
			t.Fatalf("want backend_unavailable, got %v", err)
		}
	}
	if calls != 2 {
		t.Fatalf("%d calls reached the backend, want 2 (then open)", calls)
	}
	// Business answers are not failures.
	time.Sleep(1100 * time.Millisecond)
	if _, err := do(context.Background(), g, callRead, func(ctx context.Context) (int, error) {
		return 0, seckill.Errorf(seckill.ESoldOut, "x")
	}); seckill.ErrorCode(err) != seckill.ESoldOut {
		t.Fatalf("half-open probe: %v", err)
	}
	if v, err := do(context.Background(), g, callRead, func(ctx context.Context) (int, error) { return 7, nil }); err != nil || v != 7 {
		t.Fatalf("after recovery: %v %v", v, err)
	}
}

type countingBuyers struct {
	calls int
	held  map[[2]int64]string
}

func (b *countingBuyers) Buyer(ctx context.Context, itemID, userID int64) (string, bool, error) {
	b.calls++
	ref, ok := b.held[[2]int64{itemID, userID}]
	return ref, ok, nil
}

func TestDedupRemembersConfirmedHoldersBriefly(t *testing.T) {
	t.Parallel()
	rec := &countingBuyers{held: map[[2]int64]string{{9, 1}: "r1"}}
	d := newDedup(rec, 1000)
	now := time.Now()
	d.now = func() time.Time { return now }
	ctx := context.Background()
	if _, held, _ := d.holds(ctx, 1, 9); held || rec.calls != 0 {
		t.Fatalf("before Add: held=%v calls=%d (the filter must answer alone)", held, rec.calls)
	}
	d.add(1, 9)
	for range 5 {
		if ref, held, _ := d.holds(ctx, 1, 9); !held || ref != "r1" {
			t.Fatalf("held=%v ref=%q", held, ref)
		}
	}
	if rec.calls != 1 {
		t.Fatalf("%d reads of the exact record for 5 repeats, want 1", rec.calls)
	}
	// After the TTL the exact record decides again: a released unit is buyable.
	delete(rec.held, [2]int64{9, 1})
	now = now.Add(heldTTL + time.Second)
	if _, held, _ := d.holds(ctx, 1, 9); held || rec.calls != 2 {
		t.Fatalf("after TTL: held=%v calls=%d", held, rec.calls)
	}
}

// A shadow rule never refuses; its hits are counted (and logged).
func TestShadowRuleCountsButNeverRefuses(t *testing.T) {
	t.Parallel()
	lim, err := limit.New([]limit.Rule{{Name: "shadow-status", Class: "status", Key: "user", Rate: 0.001, Burst: 1, Shadow: true}}, limit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lim.Close() }()
	reg := prometheus.NewRegistry()
	e := New(Config{SessionSecret: []byte("k"), AdminToken: "a"}, Deps{Backend: noBackend{}, Limiter: lim, Registry: reg})
	tok, _ := e.sessions.Sign(1, "u")
	for i := range 3 {
		req := httptest.NewRequest("GET", "/api/items/77/order", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		e.Public().ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound { // past the gate: unknown item
			t.Fatalf("request %d: %d", i, rec.Code)
		}
	}
	mfs, _ := reg.Gather()
	var hits float64
	for _, mf := range mfs {
		if mf.GetName() == "seckill_edge_shadow_limit_hits_total" {
			hits = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if hits != 2 {
		t.Fatalf("shadow hits %v, want 2", hits)
	}
}

func TestVerifiedTokenCacheStillChecksExpiry(t *testing.T) {
	t.Parallel()
	s := NewSessions([]byte("k"), time.Hour, false)
	now := time.Now()
	s.now = func() time.Time { return now }
	tok, _ := s.SignUntil(5, "x", now.Add(2*time.Second))
	for range 3 {
		if _, err := s.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(3 * time.Second)
	if _, err := s.Verify(tok); seckill.ErrorCode(err) != seckill.EUnauthorized {
		t.Fatalf("expired token from the cache: %v", err)
	}
	if _, err := s.Verify(flip(tok, len(tok)-1)); err == nil {
		t.Fatal("a different token was accepted")
	}
}

// BenchmarkVerify: a repeated token (cache hit) against a first-seen one.
func BenchmarkVerify(b *testing.B) {
	s := NewSessions([]byte("bench-secret"), time.Hour, false)
	tok, _ := s.Sign(42, "ann")
	b.Run("repeated", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("first-seen", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestGuardIgnoresHangUps: a client that hangs up mid-call (its context
// cancelled, the backend client failing with context.Canceled) says
// nothing about the backend: any number of them leave the breaker closed.
func TestGuardIgnoresHangUps(t *testing.T) {
	t.Parallel()
	g := NewGuard(10, BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Minute}, nil)
	for range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := do(ctx, g, callReserve, func(ctx context.Context) (int, error) {
			return 0, &seckill.UnavailableError{Err: ctx.Err()}
		})
		if err == nil {
			t.Fatal("a cancelled call succeeded")
		}
	}
	if st := g.State(); st != gobreaker.StateClosed {
		t.Fatalf("breaker %v after hang-ups, want closed", st)
	}
	if v, err := do(context.Background(), g, callReserve, func(ctx context.Context) (int, error) { return 7, nil }); err != nil || v != 7 {
		t.Fatalf("after hang-ups: %v %v", v, err)
	}
}

// TestGuardClassesApart: reads failing (status polls on a PostgreSQL
// outage) open the reads' breaker, never the purchases'.
func TestGuardClassesApart(t *testing.T) {
	t.Parallel()
	g := NewGuard(10, BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Minute}, nil)
	down := &seckill.UnavailableError{Err: errors.New("postgres down")}
	for range 5 {
		_, _ = do(context.Background(), g, callRead, func(ctx context.Context) (int, error) { return 0, down })
	}
	if g.classState(callRead) != gobreaker.StateOpen || g.State() != gobreaker.StateClosed {
		t.Fatalf("read breaker %v, reserve breaker %v; want open, closed", g.classState(callRead), g.State())
	}
	if v, err := do(context.Background(), g, callReserve, func(ctx context.Context) (int, error) { return 1, nil }); err != nil || v != 1 {
		t.Fatalf("purchase refused while reads fail: %v", err)
	}
}

// TestGuardWithoutBreakers: a guard over a backend with breakers of its
// own never refuses for a breaker of its own, however many failures.
func TestGuardWithoutBreakers(t *testing.T) {
	t.Parallel()
	g := newGuard(10, BreakerConfig{ConsecutiveFailures: 1}, false, nil)
	var calls int
	for range 5 {
		_, err := do(context.Background(), g, callReserve, func(ctx context.Context) (int, error) {
			calls++
			return 0, &seckill.UnavailableError{Err: errors.New("no backend")}
		})
		if seckill.ErrorCode(err) != seckill.EUnavailable {
			t.Fatalf("want backend_unavailable, got %v", err)
		}
	}
	if calls != 5 {
		t.Fatalf("%d calls went through, want 5 (no breaker in series)", calls)
	}
}

// blockingSource answers at once until block is set, then holds every call
// until release is closed.
type blockingSource struct {
	items   []seckill.ItemView
	block   atomic.Bool
	calls   atomic.Int64
	release chan struct{}
}

func (b *blockingSource) Items(ctx context.Context) ([]seckill.ItemView, error) {
	b.calls.Add(1)
	if b.block.Load() {
		<-b.release
	}
	return b.items, nil
}

// TestCatalogNeverWaitsForARefresh: once a copy exists, reads of a due copy
// are served from it while one refresh (kicked in the background) is held by
// a stalled source; a read never waits for it.
func TestCatalogNeverWaitsForARefresh(t *testing.T) {
	t.Parallel()
	now := time.Now()
	src := &blockingSource{release: make(chan struct{}), items: []seckill.ItemView{{
		Item: seckill.Item{ID: 3, Stock: 10, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}, StockLeft: 10}}}
	c := newCatalog(src, 10*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	followed := make(chan struct{})
	go func() { c.follow(ctx); close(followed) }()
	defer func() { cancel(); close(src.release); <-followed }()
	if _, err := c.Item(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	src.block.Store(true)
	c.Invalidate() // due now, and Follow starts a refresh that the source holds
	for src.calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	for range 100 {
		it, err := c.Item(context.Background(), 3)
		if err != nil || it.State != "live" {
			t.Fatalf("read during a held refresh: %+v %v", it, err)
		}
		if _, err := c.Items(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("%d calls to the source, want 2 (one refresh at a time)", n)
	}
	if !c.loaded() || c.Refreshes() != 1 {
		t.Fatalf("loaded %v, refreshes %d", c.loaded(), c.Refreshes())
	}
}
