package e2e

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"seckill/backendclient"
	"seckill/dynconfig"
	"seckill/edge"
	"seckill/internal/testenv"
	"seckill/limit"
)

// configKey signs the pushes of these tests; edges trust configPub.
var configKey, configPub = func() (ed25519.PrivateKey, ed25519.PublicKey) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(err)
	}
	return priv, pub
}()

// watch runs a dynconfig watcher that reconfigures e.
func watch(t *testing.T, e *edge.Edge, zkAddr, root, id string) *dynconfig.Watcher {
	t.Helper()
	w, err := dynconfig.NewWatcher(zkAddr, root, filepath.Join(t.TempDir(), "limits.json"), id, func(c dynconfig.Config) error {
		return e.Reconfigure(edge.Dynamic{Rules: c.Rules, Difficulty: c.Difficulty, DifficultyUnderLoad: c.DifficultyUnderLoad,
			MaxInFlight: c.MaxInFlight, TrustedProxies: c.TrustedProxies,
			Breaker: edge.BreakerConfig{ConsecutiveFailures: c.Breaker.ConsecutiveFailures, OpenFor: c.Breaker.OpenFor.D(), HalfOpenProbes: c.Breaker.HalfOpenProbes}})
	}, quietLog(t), dynconfig.WithPublicKeys(configPub))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// TestPushedLimitsReachBothEdges: two edges follow the limiter
// configuration in ZooKeeper; a push changes the limits on both within a
// second, and the next request already obeys; buckets of unchanged rules
// keep their state.
func TestPushedLimitsReachBothEdges(t *testing.T) {
	t.Parallel()
	zkAddr := testenv.ZooKeeper(t)
	root := "/" + testenv.Name(t)
	env := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 4})
	lim2, _ := limit.New(shippedRules(t), limit.Options{})
	t.Cleanup(func() { _ = lim2.Close() })
	e2 := edge.New(edge.Config{SessionSecret: env.secret, AdminToken: "x", Difficulty: 4}, edge.Deps{
		Backend: backendclient.New("http://"+env.be.addr, "", nil), Redis: env.s.st.Client(), Prefix: env.s.prefix,
		Limiter: lim2, Challenges: env.ch, Buyers: env.s.st, Log: quietLog(t),
	})
	pub2 := httptest.NewServer(e2.Public())
	t.Cleanup(pub2.Close)
	lctx, stopListen := context.WithCancel(context.Background())
	t.Cleanup(stopListen)
	go e2.Listen(lctx)
	w1 := watch(t, env.edge, zkAddr, root, "edge-1")
	w2 := watch(t, e2, zkAddr, root, "edge-2")

	item := env.createItem(10, "pow", -time.Second, time.Hour)
	tok := env.sessions("ann", "bob")
	ann1 := shopper{e: env, token: tok["ann"]}
	bob2 := shopper{e: &edgeEnv{t: t, pub: pub2, ch: env.ch}, token: tok["bob"]}
	for range 3 { // the shipped status-per-user bucket: burst 10
		if a := ann1.order(item); a.status != 200 {
			t.Fatalf("before the push: %d", a.status)
		}
	}

	raw, err := os.ReadFile("../configs/edge-dynamic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := dynconfig.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range cfg.Rules {
		if r.Name == "status-per-user" {
			cfg.Rules[i].Burst, cfg.Rules[i].Rate = 4, 0.01
		}
	}
	conn, _, err := dynconfig.Dial(context.Background(), zkAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pushed := time.Now()
	st := dynconfig.NewStore(conn, root)
	st.Signer = configKey
	v, err := st.Push(context.Background(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*dynconfig.Watcher{w1, w2} {
		for w.Status().Version != v {
			if time.Since(pushed) > time.Second {
				t.Fatalf("version %d not in force on both edges within a second: %+v", v, w.Status())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("version %d in force on both edges %v after the push", v, time.Since(pushed).Round(time.Millisecond))

	// The next requests obey: burst 4 now, on both edges.
	for name, sh := range map[string]shopper{"edge 1": ann1, "edge 2": bob2} {
		codes := ""
		for range 6 {
			codes += fmt.Sprint(sh.order(item).status, " ")
		}
		// The rule changed (burst 10 -> 4), so its buckets start full at 4.
		want := "200 200 200 200 429 429 "
		if codes != want {
			t.Fatalf("%s after the push: %s, want %s", name, codes, want)
		}
	}
}
