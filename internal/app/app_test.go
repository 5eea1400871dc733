package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"seckill/apiclient"
	"seckill/internal/testenv"
)

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// buyOne buys one unit of a new item through the edge's public API and
// waits until the order is confirmed (stored in the database), so every
// part of the role has run: edge, backend, relay or pipeline, worker.
func buyOne(t *testing.T, public, admin, token string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	c := apiclient.New("http://"+public, "http://"+admin, token, hc)
	now := time.Now()
	var item int64
	testenv.Eventually(t, 10*time.Second, "an item created (the Redis guard verifies Redis first)", func() bool {
		var err error
		item, err = c.CreateItem(ctx, apiclient.ItemSpec{Name: "leak check", PriceCents: 100, Stock: 3,
			StartsAt: now.Add(-time.Second), EndsAt: now.Add(time.Hour), Challenge: "pow"})
		return err == nil
	})
	toks, err := c.Sessions(ctx, []string{"ann"})
	if err != nil {
		t.Fatal(err)
	}
	tok := toks["ann"]
	var ref string
	testenv.Eventually(t, 10*time.Second, "a purchase", func() bool {
		ch, err := c.Challenge(ctx, tok, item)
		if err != nil {
			t.Logf("challenge: %v", err)
			return false
		}
		path, err := c.Path(ctx, tok, item, ch.ID, apiclient.Solve(ch))
		if err != nil {
			t.Logf("path: %v", err)
			return false
		}
		ref, err = c.Buy(ctx, tok, item, path)
		if err != nil {
			t.Logf("buy: %v", err)
			return false
		}
		return true
	})
	testenv.Eventually(t, 20*time.Second, "the order confirmed", func() bool {
		o, err := c.Order(ctx, tok, item)
		return err == nil && o.Status == "confirmed" && o.OrderRef == ref
	})
	s, err := c.Stats(ctx, item)
	if err != nil {
		t.Fatal(err)
	}
	if s.StockLeft != 2 || s.Orders != 1 || s.OutboxPending != 0 {
		t.Fatalf("stats after one purchase: %+v", s)
	}
}

// `seckill dev` stops completely: after Wait, no goroutine it started is
// left (miniredis and its clock, SQLite, the pipeline, the backend API,
// both edge listeners and the edge's background work).
func TestDevShutdownLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	cfg := DefaultDev
	cfg.PublicListen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.NoDemo, cfg.Difficulty, cfg.Log = true, 1, quiet()
	d, err := StartDev(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		stop()
		if err := d.Wait(); err != nil {
			t.Error(err)
		}
	}()
	buyOne(t, d.PublicAddr(), d.AdminAddr(), d.AdminToken())
}

// The real-stack roles stop completely too: a backend (relay, Redis guard,
// ZooKeeper registration), a worker (metrics listener) and an edge (backends
// and limits from ZooKeeper), on the real servers, after a purchase that
// went through all of them.
func TestRealRolesShutdownLeaveNoGoroutine(t *testing.T) {
	st := Stores{RedisURL: testenv.RedisURL(t), RedisPrefix: testenv.Name(t) + ":", AMQPURL: testenv.AMQPURL(t),
		Queue: testenv.Name(t), PGURL: testenv.Postgres(t)}
	zk := []string{testenv.ZooKeeper(t)}
	root := "/" + testenv.Name(t)
	dir := t.TempDir()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, stop := context.WithCancel(context.Background())
	waits := map[string]func() error{}
	defer func() {
		stop()
		for name, wait := range waits {
			if err := wait(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}()

	internal := strings.Repeat("b2", 16)
	be, err := StartBackend(ctx, BackendConfig{Stores: st, Listen: "127.0.0.1:0", RunRelay: true, Token: internal,
		Relay: RelayOptions{ID: "relay-leak", StealAfter: 30 * time.Second, ClaimIdle: 5 * time.Second},
		ZK:    zk, ZKRoot: root, RedisGuard: true, GuardSettle: 100 * time.Millisecond, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	waits["backend"] = be.Wait
	wcfg := DefaultWorker
	wcfg.Stores, wcfg.MetricsListen, wcfg.Log = st, "127.0.0.1:0", quiet()
	w, err := StartWorker(ctx, wcfg)
	if err != nil {
		t.Fatal(err)
	}
	waits["worker"] = w.Wait
	ecfg := DefaultEdge
	ecfg.Stores = st
	ecfg.PublicListen, ecfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	ecfg.AdminToken, ecfg.BackendToken = strings.Repeat("a1", 16), internal
	ecfg.ZK, ecfg.ZKRoot, ecfg.EdgeID = zk, root, "leak"
	ecfg.ConfigCache, ecfg.BackendsCache = dir+"/limits.json", dir+"/backends.json"
	ecfg.Difficulty, ecfg.Log = 1, quiet()
	e, err := StartEdge(ctx, ecfg)
	if err != nil {
		t.Fatal(err)
	}
	waits["edge"] = e.Wait
	buyOne(t, e.PublicAddr(), e.AdminAddr(), ecfg.AdminToken)
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An admin listener off loopback is allowed, with a warning (issue 13 M4);
// on loopback there is none.
func TestAdminListenerOffLoopbackWarns(t *testing.T) {
	for _, tc := range []struct {
		addr string
		warn bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		var buf syncBuffer
		ctx, stop := context.WithCancel(context.Background())
		cfg := DefaultDev
		cfg.PublicListen, cfg.AdminListen, cfg.NoDemo = "127.0.0.1:0", tc.addr, true
		cfg.Log = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
		d, err := StartDev(ctx, cfg)
		if err != nil {
			stop()
			t.Fatal(err)
		}
		stop()
		if err := d.Wait(); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(buf.String(), "the admin listener is not on loopback"); got != tc.warn {
			t.Errorf("admin listener %s: warned %v, want %v:\n%s", tc.addr, got, tc.warn, buf.String())
		}
	}
}
