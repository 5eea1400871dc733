package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"seckill/backendclient"
	"seckill/edge"
	"seckill/limit"
)

func shippedRules(t *testing.T) []limit.Rule {
	t.Helper()
	raw, err := os.ReadFile("../configs/limits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := limit.ParseRules(raw)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

// TestEdgeHonestRun: 2,000 users, each from its own address, solve a
// proof-of-work challenge and buy once, under the shipped limits, for 500
// units. Exactly 500 accepted and stored, none doubled, none lost; every
// other user is told sold out.
func TestEdgeHonestRun(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 10, DifficultyUnderLoad: 2})
	item := env.createItem(500, "pow", -time.Second, time.Hour)
	names := make([]string, 2000)
	for i := range names {
		names[i] = fmt.Sprintf("honest%04d", i)
	}
	tokens := env.sessions(names...)

	var mu sync.Mutex
	outcomes := map[string]int{}
	winners := map[string]string{} // name -> order ref
	var wg sync.WaitGroup
	sem := make(chan struct{}, 128)
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sh := shopper{e: env, token: tokens[name], ip: fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256)}
			stage, a := "challenge", sh.challenge(item)
			if a.status == 200 {
				stage, a = "path", sh.path(item, a.str("challenge_id"), sh.solve(a))
			}
			if a.status == 200 {
				stage, a = "buy", sh.buy(item, a.str("path"))
			}
			mu.Lock()
			defer mu.Unlock()
			outcomes[fmt.Sprintf("%s %d %s", stage, a.status, a.code())]++
			if a.status == 202 {
				winners[name] = a.str("order_ref")
			}
		}()
	}
	wg.Wait()
	t.Logf("outcomes: %v", outcomes)
	if len(winners) != 500 || outcomes["buy 202 "] != 500 {
		t.Fatalf("%d accepted, want exactly 500", len(winners))
	}
	for k, n := range outcomes {
		switch k {
		case "buy 202 ", "challenge 410 sold_out", "path 410 sold_out", "buy 410 sold_out":
		default:
			t.Errorf("unexpected outcome %q x%d", k, n)
		}
	}
	env.s.waitOrders(item, 500, 60*time.Second)

	// Every winner sees the order confirmed, polling within the limits.
	for name, ref := range winners {
		sh := shopper{e: env, token: tokens[name]}
		a := sh.order(item)
		if a.status != 200 || a.str("status") != "confirmed" || a.str("order_ref") != ref {
			t.Fatalf("%s: %d %v, want confirmed %s", name, a.status, a.body, ref)
		}
	}
	accepted := map[int64]string{}
	ids, err := env.s.db.EnsureUsers(context.Background(), keys(winners))
	if err != nil {
		t.Fatal(err)
	}
	for name, ref := range winners {
		accepted[ids[name]] = ref
	}
	it, err := env.s.svc.Item(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	env.s.checkFinal(it.Item, accepted)
	st := env.admin("GET", fmt.Sprintf("/admin/items/%d/stats", item), nil)
	for k, v := range map[string]float64{"stock_total": 500, "stock_left": 0, "reserved": 500, "orders": 500, "outbox_pending": 0} {
		if st.body[k] != v {
			t.Fatalf("admin stats %s = %v, want %v", k, st.body[k], v)
		}
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestSoldOutReachesEveryEdge: two edges on one backend; when one learns an
// item is sold out, the other answers 410 within a second without asking
// the backend.
func TestSoldOutReachesEveryEdge(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 4})
	calls2 := &counting{next: edgeClient.Transport, calls: map[string]int{}}
	lim, _ := limit.New(shippedRules(t), limit.Options{})
	t.Cleanup(func() { _ = lim.Close() })
	// An hour-long catalogue copy: only the broadcast can tell edge 2.
	e2 := edge.New(edge.Config{SessionSecret: env.secret, AdminToken: "x", Difficulty: 4, CatalogTTL: time.Hour}, edge.Deps{
		Backend: backendclient.New("http://"+env.be.addr, "", httpClientWith(calls2)), Redis: env.s.st.Client(),
		Prefix: env.s.prefix, Limiter: lim, Challenges: env.ch, Buyers: env.s.st, Log: quietLog(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go e2.Listen(ctx)
	pub2 := httptest.NewServer(e2.Public())
	t.Cleanup(pub2.Close)

	item := env.createItem(1, "none", -time.Second, time.Hour) // "none": a pow challenge of difficulty 0
	tok := env.sessions("ann", "ben")
	ben2 := shopper{e: &edgeEnv{t: t, pub: pub2, ch: env.ch}, token: tok["ben"]}
	// ben, on edge 2, holds a path from before the sale ended there.
	pBen := ben2.getPath(item)
	before := calls2.reserves()
	ann := shopper{e: env, token: tok["ann"]}
	if a := ann.buy(item, ann.getPath(item)); a.status != 202 {
		t.Fatalf("ann: %d %v", a.status, a.body)
	}
	deadline := time.Now().Add(time.Second)
	for !e2.Catalog().SoldOut(item) {
		if time.Now().After(deadline) {
			t.Fatal("edge 2 did not learn of the sell-out within a second")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a := ben2.buy(item, pBen)
	if a.status != 410 || a.code() != "sold_out" {
		t.Fatalf("edge 2: %d %v", a.status, a.body)
	}
	if n := calls2.reserves() - before; n != 0 {
		t.Fatalf("edge 2 asked the backend %d times", n)
	}
}
