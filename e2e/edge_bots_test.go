package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"seckill/edge"
	"seckill/limit"
)

func randomPath() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// TestEdgeBotSuite: every way a bot tries to get past the edge, with the
// exact status and code, and whether the backend was reached.
func TestEdgeBotSuite(t *testing.T) {
	t.Parallel()
	rules := []limit.Rule{
		// A token every 2 s: "hammering one route" needs its 6 requests
		// to come within one refill, which a busy machine's 500 ms (rate
		// 2) did not always leave.
		{Name: "status-per-user", Class: "status", Key: "user", Rate: 0.5, Burst: 5},
		{Name: "buy-per-user", Class: "buy", Key: "user", Rate: 50, Burst: 50},
		{Name: "everything", Class: "*", Key: "global", Rate: 100000, Burst: 100000},
	}
	// "backend stopped, then back" needs its 10 buys within OpenFor (a
	// half-open probe would be a 4th call to the stopped backend), and the
	// path got before the stop still valid after OpenFor and the restart:
	// 2 s and 5 s leave a busy machine room for both (1 s and 2 s did not).
	const pathTTL = 5 * time.Second
	env := newEdgeEnv(t, rules, edge.Config{Difficulty: 8, PathTTL: pathTTL,
		Breaker: edge.BreakerConfig{ConsecutiveFailures: 3, OpenFor: 2 * time.Second, HalfOpenProbes: 1}})
	item := env.createItem(100, "captcha", -time.Second, time.Hour)
	other := env.createItem(100, "pow", -time.Second, time.Hour)
	tok := env.sessions("alice", "bob", "carol", "dave", "erin", "frank")
	alice, bob := shopper{e: env, token: tok["alice"]}, shopper{e: env, token: tok["bob"]}
	carol, dave := shopper{e: env, token: tok["carol"]}, shopper{e: env, token: tok["dave"]}

	expectNoBackend := func(t *testing.T, f func()) {
		t.Helper()
		before := env.calls.reserves()
		f()
		if n := env.calls.reserves() - before; n != 0 {
			t.Fatalf("the backend was asked to reserve %d times", n)
		}
	}
	want := func(t *testing.T, a answer, status int, code string) {
		t.Helper()
		if a.status != status || a.code() != code {
			t.Fatalf("got %d %q (%v), want %d %q", a.status, a.code(), a.body, status, code)
		}
	}

	alicePath := alice.getPath(item)

	t.Run("buy with no session", func(t *testing.T) {
		expectNoBackend(t, func() { want(t, shopper{e: env}.buy(item, alicePath), 401, "unauthenticated") })
	})
	t.Run("buy with a forged session", func(t *testing.T) {
		forged := edge.NewSessions([]byte("not the secret"), time.Hour, false)
		tk, _ := forged.Sign(1, "alice")
		expectNoBackend(t, func() { want(t, shopper{e: env, token: tk}.buy(item, alicePath), 401, "unauthenticated") })
		a := tok["alice"]
		last := "Q"
		if a[len(a)-1] == 'Q' {
			last = "A"
		}
		tampered := a[:len(a)-1] + last
		want(t, shopper{e: env, token: tampered}.buy(item, alicePath), 401, "unauthenticated")
	})
	t.Run("buy with an expired session", func(t *testing.T) {
		s := edge.NewSessions(env.secret, time.Hour, false)
		tk, _ := s.SignUntil(1, "alice", time.Now().Add(-time.Second))
		expectNoBackend(t, func() { want(t, shopper{e: env, token: tk}.buy(item, alicePath), 401, "unauthenticated") })
	})
	t.Run("token in the query string is ignored", func(t *testing.T) {
		a := call(t, "POST", env.pub.URL+fmt.Sprintf("/api/items/%d/buy/%s?token=%s", item, alicePath, tok["alice"]), nil, nil)
		want(t, a, 401, "unauthenticated")
	})
	t.Run("buy with no path", func(t *testing.T) {
		expectNoBackend(t, func() {
			want(t, bob.buy(item, ""), 403, "bad_path")
			want(t, bob.do("POST", fmt.Sprintf("/api/items/%d/buy", item), nil), 403, "bad_path")
		})
	})
	t.Run("buy with a guessed path", func(t *testing.T) {
		expectNoBackend(t, func() {
			for range 20 {
				want(t, bob.buy(item, randomPath()), 403, "bad_path")
			}
		})
	})
	t.Run("buy with another user's path", func(t *testing.T) {
		expectNoBackend(t, func() { want(t, bob.buy(item, alicePath), 403, "bad_path") })
	})
	t.Run("buy with another item's path", func(t *testing.T) {
		expectNoBackend(t, func() { want(t, alice.buy(other, alicePath), 403, "bad_path") })
	})
	t.Run("buy with an expired path", func(t *testing.T) {
		p := carol.getPath(item)
		time.Sleep(pathTTL + 100*time.Millisecond)
		expectNoBackend(t, func() { want(t, carol.buy(item, p), 403, "bad_path") })
	})
	t.Run("honest buy, then the path reused", func(t *testing.T) {
		alicePath = alice.getPath(item) // the first one expired in the test above
		a := alice.buy(item, alicePath)
		if a.status != 202 || a.str("status") != "queued" || a.str("order_ref") == "" {
			t.Fatalf("honest buy: %d %v", a.status, a.body)
		}
		expectNoBackend(t, func() { want(t, alice.buy(item, alicePath), 403, "bad_path") })
	})
	t.Run("challenge answered wrongly, then rightly", func(t *testing.T) {
		ch := bob.challenge(item)
		if ch.status != 200 || ch.str("kind") != "captcha" || !strings.HasPrefix(ch.str("image"), "data:image/png;base64,") {
			t.Fatalf("challenge: %d %v", ch.status, ch.str("kind"))
		}
		right := bob.solve(ch)
		wrong := strconv.Itoa(mustAtoi(t, right) + 1)
		want(t, bob.path(item, ch.str("challenge_id"), wrong), 400, "challenge_failed")
		want(t, bob.path(item, ch.str("challenge_id"), right), 400, "challenge_failed")
	})
	t.Run("solved challenge replayed", func(t *testing.T) {
		ch := bob.challenge(item)
		ans := bob.solve(ch)
		if p := bob.path(item, ch.str("challenge_id"), ans); p.status != 200 {
			t.Fatalf("first answer: %d %v", p.status, p.body)
		}
		want(t, bob.path(item, ch.str("challenge_id"), ans), 400, "challenge_failed")
		want(t, carol.path(item, ch.str("challenge_id"), ans), 400, "challenge_failed")
	})
	t.Run("challenge of another user", func(t *testing.T) {
		ch := bob.challenge(item)
		want(t, dave.path(item, ch.str("challenge_id"), bob.solve(ch)), 400, "challenge_failed")
	})
	t.Run("hammering one route", func(t *testing.T) {
		for i := range 5 {
			if a := dave.order(item); a.status != 200 {
				t.Fatalf("request %d: %d %v", i, a.status, a.body)
			}
		}
		a := dave.order(item)
		want(t, a, 429, "rate_limited")
		ra, err := strconv.Atoi(a.header.Get("Retry-After"))
		if err != nil || ra < 1 {
			t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
		}
		if p := a.header.Get("RateLimit-Policy"); !strings.Contains(p, `"status-per-user";q=5`) {
			t.Fatalf("RateLimit-Policy %q", p)
		}
		if r := a.header.Get("RateLimit"); !strings.HasPrefix(r, `"status-per-user";r=0`) {
			t.Fatalf("RateLimit %q", r)
		}
		time.Sleep(time.Duration(ra) * time.Second)
		if a := dave.order(item); a.status != 200 {
			t.Fatalf("after Retry-After: %d %v", a.status, a.body)
		}
		if a := bob.order(item); a.status != 200 {
			t.Fatalf("another user was limited too: %d", a.status)
		}
	})
	t.Run("repeat buyer", func(t *testing.T) {
		// Two challenges solved before buying give two paths.
		ch1, ch2 := bob.challenge(item), bob.challenge(item)
		p1 := bob.path(item, ch1.str("challenge_id"), bob.solve(ch1)).str("path")
		if a := bob.buy(item, p1); a.status != 202 {
			t.Fatalf("first buy: %d %v", a.status, a.body)
		}
		p2 := bob.path(item, ch2.str("challenge_id"), bob.solve(ch2)).str("path")
		expectNoBackend(t, func() {
			a := bob.buy(item, p2)
			want(t, a, 409, "already_bought")
			want(t, bob.challenge(item), 409, "already_bought")
		})
	})
	t.Run("unknown item", func(t *testing.T) {
		before := env.calls.total.Load()
		want(t, bob.buy(987654, randomPath()), 404, "unknown_item")
		want(t, bob.challenge(987654), 404, "unknown_item")
		want(t, call(t, "GET", env.pub.URL+"/api/items/987654", nil, nil), 404, "unknown_item")
		want(t, call(t, "GET", env.pub.URL+"/api/items/abc", nil, nil), 404, "unknown_item")
		if n := env.calls.total.Load() - before; n != 0 {
			t.Fatalf("the backend was called %d times for unknown items", n)
		}
	})
	t.Run("order status of another user is not visible", func(t *testing.T) {
		// The answer that said confirmed (another request at once could
		// find alice's status budget spent by the polling).
		a := waitStatus(t, alice, item, "confirmed")
		if a.str("order_ref") == "" || a.body["order_id"].(float64) <= 0 {
			t.Fatalf("alice: %v", a.body)
		}
		c := carol.order(item)
		if c.str("status") != "none" || c.str("order_ref") != "" {
			t.Fatalf("carol sees %v", c.body)
		}
	})
	t.Run("sold out", func(t *testing.T) {
		one := env.createItem(1, "pow", -time.Second, time.Hour)
		erin, frank := shopper{e: env, token: tok["erin"]}, shopper{e: env, token: tok["frank"]}
		pf := frank.getPath(one)
		if a := erin.buy(one, erin.getPath(one)); a.status != 202 {
			t.Fatalf("last unit: %d %v", a.status, a.body)
		}
		expectNoBackend(t, func() {
			want(t, frank.buy(one, pf), 410, "sold_out")
			want(t, frank.challenge(one), 410, "sold_out")
		})
		a := call(t, "GET", env.pub.URL+fmt.Sprintf("/api/items/%d", one), nil, nil)
		if st := a.body["item"].(map[string]any)["state"]; st != "sold_out" {
			t.Fatalf("item state %v", st)
		}
	})
	t.Run("not live yet", func(t *testing.T) {
		later := env.createItem(5, "pow", time.Hour, time.Hour)
		expectNoBackend(t, func() { want(t, bob.challenge(later), 409, "not_live") })
	})
	t.Run("backend stopped, then back", func(t *testing.T) {
		pay := shopper{e: env, token: env.sessions("gina")["gina"]}
		p := pay.getPath(other)
		env.be.stop()
		before := env.calls.reserves()
		for range 10 {
			want(t, pay.buy(other, p), 503, "backend_unavailable")
		}
		if n := env.calls.reserves() - before; n > 3 {
			t.Fatalf("%d calls reached the stopped backend; the breaker allows 3", n)
		}
		a := pay.buy(other, p)
		if a.header.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
		env.be.start(t)
		deadline := time.Now().Add(10 * time.Second)
		for {
			a := pay.buy(other, p) // a 503 left the path usable
			if a.status == 202 {
				break
			}
			if a.status != 503 || time.Now().After(deadline) {
				t.Fatalf("after restart: %d %v", a.status, a.body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		big := strings.Repeat("x", 10000)
		cases := []struct {
			desc, method, path string
			body               any
			status             int
			code               string
		}{
			{"malformed json", "POST", "/api/register", `{"username":`, 400, "invalid"},
			{"oversized body", "POST", "/api/register", `{"username":"` + big + `"}`, 413, "too_large"},
			{"bad username", "POST", "/api/register", map[string]string{"username": "a b", "password": "12345678"}, 400, "invalid"},
			{"short password", "POST", "/api/register", map[string]string{"username": "zed", "password": "1"}, 400, "invalid"},
			{"wrong method", "GET", "/api/register", nil, 405, "method_not_allowed"},
			{"wrong method on buy", "GET", fmt.Sprintf("/api/items/%d/buy/%s", item, randomPath()), nil, 405, "method_not_allowed"},
			{"no route", "GET", "/api/nothing", nil, 404, "not_found"},
			{"bad login", "POST", "/api/login", map[string]string{"username": "alice", "password": "wrongwrong"}, 401, "bad_credentials"},
		}
		for _, tc := range cases {
			t.Run(tc.desc, func(t *testing.T) {
				want(t, call(t, tc.method, env.pub.URL+tc.path, tc.body, nil), tc.status, tc.code)
			})
		}
		want(t, bob.path(item, "", "1"), 400, "challenge_failed")
		want(t, bob.do("POST", fmt.Sprintf("/api/items/%d/path", item), `not json`), 400, "invalid")
	})
	t.Run("register, login, cookie", func(t *testing.T) {
		r := registerFrom(t, env.pub.URL, "", "henry")
		if r.status != 201 || r.body["user_id"].(float64) <= 0 {
			t.Fatalf("register: %d %v", r.status, r.body)
		}
		want(t, registerFrom(t, env.pub.URL, "", "henry"), 409, "username_taken")
		l := call(t, "POST", env.pub.URL+"/api/login", map[string]string{"username": "henry", "password": "correct horse"}, nil)
		if l.status != 200 || l.str("token") == "" || l.str("expires_at") == "" {
			t.Fatalf("login: %d %v", l.status, l.body)
		}
		ck := l.header.Get("Set-Cookie")
		if !strings.Contains(ck, edge.CookieName+"=") || !strings.Contains(ck, "HttpOnly") {
			t.Fatalf("cookie %q", ck)
		}
		a := call(t, "GET", env.pub.URL+fmt.Sprintf("/api/items/%d/order", item), nil, map[string]string{"Cookie": edge.CookieName + "=" + l.str("token")})
		if a.status != 200 || a.str("status") != "none" {
			t.Fatalf("order with cookie: %d %v", a.status, a.body)
		}
	})
	t.Run("admin API needs the token", func(t *testing.T) {
		want(t, call(t, "POST", env.adm.URL+"/admin/items", map[string]any{}, nil), 401, "unauthenticated")
		want(t, call(t, "GET", env.adm.URL+"/admin/items/1/stats", nil, map[string]string{"Authorization": "Bearer nope"}), 401, "unauthenticated")
		if a := call(t, "GET", env.adm.URL+"/healthz", nil, nil); a.status != 200 {
			t.Fatal(a.status)
		}
		want(t, call(t, "GET", env.adm.URL+"/admin/debug/pprof/heap", nil, nil), 401, "unauthenticated")
		req, _ := http.NewRequest("GET", env.adm.URL+"/admin/debug/pprof/heap", nil)
		req.Header.Set("Authorization", "Bearer "+env.token)
		resp, err := edgeClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("heap profile with the token: %v %v", resp, err)
		}
		resp.Body.Close()
	})
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitStatus polls the order status until it is status, and returns that
// answer.
func waitStatus(t *testing.T, sh shopper, item int64, status string) answer {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		a := sh.order(item)
		if a.str("status") == status {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %v, want %s", a.body, status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
