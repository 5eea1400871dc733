package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"seckill"
	"seckill/backendclient"
	"seckill/edge"
	"seckill/internal/faultproxy"
	"seckill/internal/testenv"
	"seckill/internal/testhook"
	"seckill/limit"
	"seckill/reconcile"
)

// openRules lets everything through: these tests are about eligibility,
// not token buckets.
var openRules = []limit.Rule{{Name: "everything", Class: "*", Key: "global", Rate: 100000, Burst: 100000}}

// account is one registered account of an eligibility test, logged in
// through the edge.
type account struct {
	id    int64
	name  string
	net   string
	token string
}

// accounts creates n accounts registered from network net straight in the
// store (registration's own defences are not under test), makes them age
// old (through the test-only store hook, never a route; 0: as made) and
// logs each in through the edge's /api/login, whose token carries the
// account's creation time and network.
func (e *edgeEnv) accounts(prefix, net string, n int, age time.Duration) []account {
	e.t.Helper()
	ctx := context.Background()
	hash, err := bcrypt.GenerateFromPassword([]byte("password-1234"), bcrypt.MinCost)
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]account, n)
	ids := make([]int64, n)
	for i := range out {
		name := fmt.Sprintf("%s%03d", prefix, i)
		id, err := e.s.db.CreateUser(ctx, name, string(hash), net)
		if err != nil {
			e.t.Fatal(err)
		}
		out[i], ids[i] = account{id: id, name: name, net: net}, id
	}
	if age > 0 {
		if err := testhook.AgeAccountsPostgres(ctx, e.s.pgURL, age, ids...); err != nil {
			e.t.Fatal(err)
		}
	}
	for i := range out {
		a := shopper{e: e, ip: fmt.Sprintf("10.9.%d.%d", i/200, i%200+1)}.do("POST", "/api/login",
			map[string]any{"username": out[i].name, "password": "password-1234"})
		if a.status != 200 {
			e.t.Fatalf("login %s: %d %v", out[i].name, a.status, a.body)
		}
		out[i].token = a.str("token")
	}
	return out
}

func (a account) shopper(e *edgeEnv, i int) shopper {
	return shopper{e: e, token: a.token, ip: fmt.Sprintf("10.8.%d.%d", i/200, i%200+1)}
}

// createRuledItem creates a live item with sale rules through the edge's
// admin API.
func (e *edgeEnv) createRuledItem(units int, rules map[string]any) seckill.Item {
	e.t.Helper()
	now := time.Now()
	body := map[string]any{"name": "ruled", "price_cents": 100, "stock": units, "challenge": "none",
		"starts_at": now.Add(-time.Second).UTC().Format(time.RFC3339Nano), "ends_at": now.Add(time.Hour).UTC().Format(time.RFC3339Nano)}
	for k, v := range rules {
		body[k] = v
	}
	a := e.admin("POST", "/admin/items", body)
	if a.status != 201 {
		e.t.Fatalf("create item: %d %v", a.status, a.body)
	}
	it, err := e.s.db.Item(context.Background(), int64(a.body["id"].(float64)))
	if err != nil {
		e.t.Fatal(err)
	}
	return it
}

// TestEligibilityMinAccountAge: a sale with min_account_age 72h refuses a
// fresh farm at the challenge and at the buy (409 not_eligible; the buy
// before its path is even looked at), and the backend refuses it too when
// asked directly; accounts older than 72h buy, through login or admin
// sessions. Tokens that do not say when their account was made (signed
// before the claims) are refused by the sale with rules and not by one
// without.
func TestEligibilityMinAccountAge(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, openRules, edge.Config{Difficulty: 4})
	ctx := context.Background()
	item := env.createRuledItem(10, map[string]any{"min_account_age": "72h"})
	if item.MinAccountAge.D() != 72*time.Hour {
		t.Fatalf("stored item %+v, want min_account_age 72h", item.SaleRules)
	}
	plain := env.createRuledItem(10, nil)
	farm := env.accounts("farm", "203.0.113.0/24", 5, 0)
	old := env.accounts("old", "198.51.100.0/24", 6, 100*time.Hour)

	for i, a := range farm {
		sh := a.shopper(env, i)
		if r := sh.challenge(item.ID); r.status != 409 || r.code() != "not_eligible" {
			t.Fatalf("fresh account's challenge: %d %v, want 409 not_eligible", r.status, r.body)
		}
		if r := sh.buy(item.ID, strings.Repeat("a", 32)); r.status != 409 || r.code() != "not_eligible" {
			t.Fatalf("fresh account's buy: %d %v, want 409 not_eligible", r.status, r.body)
		}
		if r := sh.challenge(plain.ID); r.status != 200 {
			t.Fatalf("fresh account, sale without rules: %d %v", r.status, r.body)
		}
	}
	accepted := map[int64]string{}
	for i, a := range old[:5] {
		sh := a.shopper(env, 100+i)
		r := sh.buy(item.ID, sh.getPath(item.ID))
		if r.status != 202 {
			t.Fatalf("old account's buy: %d %v", r.status, r.body)
		}
		accepted[a.id] = r.str("order_ref")
	}

	// Admin sessions carry the account's facts as the store holds them: a
	// fresh account is refused, an old one that has not bought yet gets
	// its challenge. A token signed without the facts (as before they
	// existed) is refused even for an old account.
	admin := env.sessions("adminmade", old[5].name)
	if r := (shopper{e: env, token: admin["adminmade"], ip: "10.7.0.1"}).challenge(item.ID); r.status != 409 || r.code() != "not_eligible" {
		t.Fatalf("admin session of a fresh account: %d %v, want 409 not_eligible", r.status, r.body)
	}
	if r := (shopper{e: env, token: admin[old[5].name], ip: "10.7.0.2"}).challenge(item.ID); r.status != 200 {
		t.Fatalf("admin session of an old account: %d %v, want 200", r.status, r.body)
	}
	signer := edge.NewSessions(env.secret, time.Hour, false)
	tok, _ := signer.Sign(old[5].id, old[5].name)
	sh := shopper{e: env, token: tok, ip: "10.7.0.3"}
	if r := sh.challenge(item.ID); r.status != 409 || r.code() != "not_eligible" {
		t.Fatalf("token without account facts: %d %v, want 409 not_eligible", r.status, r.body)
	}
	if r := sh.challenge(plain.ID); r.status != 200 {
		t.Fatalf("token without account facts, sale without rules: %d %v", r.status, r.body)
	}

	// The backend decides again, in the reservation script: a fresh
	// account asking it directly is refused. Without the internal
	// credential a forged creation time gets nowhere.
	be := backendclient.New(env.s.apiURL, testBackendToken, nil)
	_, err := be.Reserve(ctx, item.ID, seckill.Account{ID: farm[0].id, CreatedAt: time.Now(), Network: farm[0].net}, "direct-1")
	if seckill.ErrorCode(err) != seckill.ENotEligible {
		t.Fatalf("backend, fresh account: %v, want not_eligible", err)
	}
	_, err = be.Reserve(ctx, item.ID, seckill.Account{ID: farm[1].id}, "direct-2")
	if seckill.ErrorCode(err) != seckill.ENotEligible {
		t.Fatalf("backend, unknown account: %v, want not_eligible", err)
	}
	forged := backendclient.New(env.s.apiURL, "", nil)
	_, err = forged.Reserve(ctx, item.ID, seckill.Account{ID: farm[2].id, CreatedAt: time.Now().Add(-1000 * time.Hour)}, "direct-3")
	var ue *seckill.UnavailableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "internal credential") {
		t.Fatalf("backend without the credential: %v, want refused", err)
	}

	env.s.waitOrders(item.ID, int64(len(accepted)), 30*time.Second)
	env.s.checkFinal(item, accepted)
	if st, err := env.s.svc.Stats(ctx, item.ID); err != nil || st.StockLeft != 5 || st.Orders != 5 {
		t.Fatalf("stats %+v %v, want 5 orders and 5 left", st, err)
	}
}

// TestMaxPerNetworkRace: 50 accounts of one network race through the edge
// for a sale with max_per_network 3, beside 10 accounts of another network
// and 5 made without a network: exactly 3 units per network, one per
// account without one. Before the race, one account of the first network
// got its unit through a backend whose reply was dropped and retried
// blindly with the same request id (counted once), and an order that
// failed in PostgreSQL gave its network's slot back exactly once. After the
// race Redis loses the item and the counts come back from PostgreSQL.
func TestMaxPerNetworkRace(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, openRules, edge.Config{Difficulty: 4})
	ctx := context.Background()
	const x, y = "203.0.113.0/24", "2001:db8:7::/48"
	item := env.createRuledItem(20, map[string]any{"max_per_network": 3})
	if item.MaxPerNetwork != 3 {
		t.Fatalf("stored item %+v, want max_per_network 3", item.SaleRules)
	}
	old := time.Now().Add(-time.Hour)
	xs := env.accounts("netx", x, 50, 0)
	ys := env.accounts("nety", y, 10, 0)
	none := env.accounts("nonet", "", 5, 0)
	networks := func(want map[string]int64) {
		t.Helper()
		got, err := env.s.st.Networks(ctx, item.ID)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("networks %v, want %v", got, want)
		}
	}

	// A failed order gives its network's slot back, once.
	const ghost = 987654321 // no such user: PostgreSQL refuses the order
	g, err := env.s.svc.Reserve(ctx, item.ID, seckill.Account{ID: ghost, CreatedAt: old, Network: x}, "ghost")
	if err != nil {
		t.Fatal(err)
	}
	networks(map[string]int64{x: 1})
	testenv.Eventually(t, 60*time.Second, "the ghost order to fail", func() bool {
		st, err := env.s.svc.Status(ctx, item.ID, ghost)
		return err == nil && st.Status == seckill.StatusFailed
	})
	networks(map[string]int64{})
	if ok, err := env.s.st.Release(ctx, item.ID, ghost, g.OrderRef); ok || err != nil {
		t.Fatalf("second release: %v %v, want nothing given back", ok, err)
	}
	networks(map[string]int64{})

	// A reservation whose reply the network dropped, retried blindly with
	// the same request id (as the edge retries a path): one unit, counted
	// once.
	p, err := faultproxy.New(strings.TrimPrefix(env.s.apiURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	lossy := backendclient.New("http://"+p.Addr(), testBackendToken, &http.Client{Timeout: time.Second})
	first := xs[0]
	acct := seckill.Account{ID: first.id, CreatedAt: old, Network: x}
	p.DropReplies(true)
	if _, err := lossy.Reserve(ctx, item.ID, acct, "lost-reply"); err == nil {
		t.Fatal("reservation answered through a proxy dropping replies")
	}
	p.DropReplies(false)
	if p.Dropped() == 0 {
		t.Fatal("no reply was dropped")
	}
	testenv.Eventually(t, 10*time.Second, "the reservation whose reply was lost to take its unit", func() bool {
		got, err := env.s.st.Networks(ctx, item.ID)
		return err == nil && got[x] == 1
	})
	r1, err := lossy.Reserve(ctx, item.ID, acct, "lost-reply")
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	r2, err := lossy.Reserve(ctx, item.ID, acct, "lost-reply")
	if err != nil || r2.OrderRef != r1.OrderRef {
		t.Fatalf("second retry: %+v %v, want %s", r2, err, r1.OrderRef)
	}
	networks(map[string]int64{x: 1})
	accepted := map[int64]string{first.id: r1.OrderRef}

	// The race, through the edge.
	type result struct {
		acct   account
		status int
		code   string
		ref    string
	}
	var all []account
	all = append(append(append(all, xs[1:]...), ys...), none...)
	results := make([]result, len(all))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, a := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sh := a.shopper(env, i)
			<-start
			ch := sh.challenge(item.ID)
			if ch.status != 200 {
				results[i] = result{acct: a, status: ch.status, code: ch.code()}
				return
			}
			pa := sh.path(item.ID, ch.str("challenge_id"), sh.solve(ch))
			if pa.status != 200 {
				results[i] = result{acct: a, status: pa.status, code: pa.code()}
				return
			}
			r := sh.buy(item.ID, pa.str("path"))
			results[i] = result{acct: a, status: r.status, code: r.code(), ref: r.str("order_ref")}
		}()
	}
	close(start)
	wg.Wait()
	won := map[string]int{}
	for _, r := range results {
		switch {
		case r.status == 202:
			won[r.acct.net]++
			accepted[r.acct.id] = r.ref
		case r.status == 409 && r.code == "not_eligible":
		default:
			t.Errorf("%s: %d %s", r.acct.name, r.status, r.code)
		}
	}
	won[x]++ // the one before the race
	if won[x] != 3 || won[y] != 3 || won[""] != 5 {
		t.Fatalf("units won by network: %v, want 3 for %s, 3 for %s, 5 for accounts without a network", won, x, y)
	}
	networks(map[string]int64{x: 3, y: 3})
	env.s.waitOrders(item.ID, 11, 30*time.Second)
	env.s.checkFinalWithFailed(item, accepted, 1)

	// Redis loses the item: loading it again counts the networks from the
	// orders and accounts PostgreSQL holds.
	k := env.s.prefix + "item:{" + fmt.Sprint(item.ID) + "}:"
	if err := env.s.st.Client().Del(ctx, k+"meta", k+"stock", k+"buyers", k+"networks").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := env.s.svc.LoadAll(ctx); err != nil {
		t.Fatal(err)
	}
	networks(map[string]int64{x: 3, y: 3})
	// An account of the full network that won nothing in the race (which
	// ones won is up to the race).
	var loser account
	for _, a := range xs[1:] {
		if _, won := accepted[a.id]; !won {
			loser = a
			break
		}
	}
	if _, err := env.s.svc.Reserve(ctx, item.ID, seckill.Account{ID: loser.id, CreatedAt: old, Network: x}, "after-loss"); seckill.ErrorCode(err) != seckill.ENotEligible {
		t.Fatalf("network %s after the loss (%s): %v, want not_eligible", x, loser.name, err)
	}
	c, err := env.s.st.Counters(ctx, item.ID)
	if err != nil || c.StockLeft != 9 || c.Reserved != 11 {
		t.Fatalf("counters after the loss: %+v %v, want 9 left, 11 reserved", c, err)
	}
	env.s.checkFinalWithFailed(item, accepted, 1)

	// reconcile reports a network over its limit.
	if err := env.s.st.Client().HIncrBy(ctx, k+"networks", y, 1).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err := reconcile.Run(ctx, env.s.db, env.s.st, reconcile.Options{Items: []int64{item.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || fmt.Sprint(rep.Items[0].OverNetwork) != "[2001:db8:7::/48: 4 units (redis)]" {
		t.Fatalf("reconcile with a network over its limit: ok %v, over %q", rep.OK(), rep.Items[0].OverNetwork)
	}
}
