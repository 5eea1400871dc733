package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill/backendclient"
	"seckill/edge"
	"seckill/internal/testenv"
	"seckill/limit"
)

// commandCounter is a go-redis hook counting every command a client sends
// (pipelined ones one by one), by name.
type commandCounter struct {
	mu    sync.Mutex
	n     atomic.Int64
	names map[string]int
}

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.count(cmd)
		return next(ctx, cmd)
	}
}
func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			c.count(cmd)
		}
		return next(ctx, cmds)
	}
}
func (c *commandCounter) count(cmd redis.Cmder) {
	c.n.Add(1)
	c.mu.Lock()
	c.names[cmd.Name()]++
	c.mu.Unlock()
}
func (c *commandCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.names {
		out[k] = v
	}
	return out
}

// extraEdge starts another edge on env's backend and Redis prefix, with a
// Redis client of its own whose commands are counted.
func extraEdge(t *testing.T, env *edgeEnv, cfg edge.Config) (*httptest.Server, *commandCounter) {
	t.Helper()
	opt, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	cc := &commandCounter{names: map[string]int{}}
	rdb.AddHook(cc)
	lim, _ := limit.New(nil, limit.Options{})
	t.Cleanup(func() { _ = lim.Close() })
	cfg.SessionSecret, cfg.AdminToken = env.secret, "x"
	e := edge.New(cfg, edge.Deps{
		Backend: backendclient.New("http://"+env.be.addr, "", nil), Redis: rdb,
		Prefix: env.s.prefix, Limiter: lim, Challenges: env.ch, Buyers: env.s.st, Log: quietLog(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Listen(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	pub := httptest.NewServer(e.Public())
	t.Cleanup(pub.Close)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(pub.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the extra edge did not get ready")
		}
	}
	return pub, cc
}

// waitRefused polls GET order with tok on pub until 401; it returns how
// long that took, failing past limit.
func waitRefused(t *testing.T, pub string, item int64, tok string, limit time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	for {
		a := call(t, "GET", fmt.Sprintf("%s/api/items/%d/order", pub, item), nil, map[string]string{"Authorization": "Bearer " + tok})
		if a.status == 401 {
			return time.Since(began)
		}
		if a.status != 200 {
			t.Fatalf("order: %d %v", a.status, a.body)
		}
		if time.Since(began) > limit {
			t.Fatalf("token still accepted after %v", limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func login(t *testing.T, pub, user, pw string) (string, int64) {
	t.Helper()
	a := call(t, "POST", pub+"/api/login", map[string]any{"username": user, "password": pw}, nil)
	if a.status != 200 {
		t.Fatalf("login %s: %d %v", user, a.status, a.body)
	}
	return a.str("token"), int64(a.body["user_id"].(float64))
}

// TestLogoutRevokesOnEveryEdge (issue 13 M2): a logged-out token is refused
// on every edge within a second, and checking tokens costs the edges no
// Redis command at all (today a token keeps working for 24 h after logout).
func TestLogoutRevokesOnEveryEdge(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, nil, edge.Config{Difficulty: 1})
	// Edge B checks Redis for missed revocations once an hour: only the
	// broadcast can tell it within the second.
	pubB, ccB := extraEdge(t, env, edge.Config{Difficulty: 1, RevocationSync: time.Hour})
	item := env.createItem(5, "none", -time.Second, time.Hour)
	if a := registerFrom(t, env.pub.URL, "", "ann"); a.status != 201 {
		t.Fatalf("register: %d %v", a.status, a.body)
	}
	tok, user := login(t, env.pub.URL, "ann", "correct horse")
	other, _ := login(t, env.pub.URL, "ann", "correct horse")

	order := func(pub, tok string) answer {
		return call(t, "GET", fmt.Sprintf("%s/api/items/%d/order", pub, item), nil, map[string]string{"Authorization": "Bearer " + tok})
	}
	for _, pub := range []string{env.pub.URL, pubB.URL} {
		if a := order(pub, tok); a.status != 200 {
			t.Fatalf("before logout: %d %v", a.status, a.body)
		}
	}
	time.Sleep(100 * time.Millisecond) // edge B's start-up load is done
	before := ccB.n.Load()
	for range 300 {
		if a := order(pubB.URL, tok); a.status != 200 {
			t.Fatalf("%d %v", a.status, a.body)
		}
	}
	if n := ccB.n.Load() - before; n != 0 {
		t.Fatalf("300 authenticated requests cost edge B %d Redis commands (%v), want 0", n, ccB.snapshot())
	}

	if a := call(t, "POST", env.pub.URL+"/api/logout", nil, map[string]string{"Authorization": "Bearer " + tok}); a.status != 204 {
		t.Fatalf("logout: %d %v", a.status, a.body)
	}
	if a := order(env.pub.URL, tok); a.status != 401 {
		t.Fatalf("edge A after logout: %d %v", a.status, a.body)
	}
	took := waitRefused(t, pubB.URL, item, tok, time.Second)
	t.Logf("logout reached edge B in %v", took)
	if n := ccB.n.Load() - before; n != 0 {
		t.Fatalf("edge B sent %d Redis commands (%v), want 0: the revocation comes by pub/sub", n, ccB.snapshot())
	}
	// The user's other session lives on.
	if a := order(pubB.URL, other); a.status != 200 {
		t.Fatalf("other session: %d %v", a.status, a.body)
	}

	// Log out everywhere, asked on edge B: every older token of the user
	// is refused on edge A within a second; a new login works.
	third, _ := login(t, env.pub.URL, "ann", "correct horse")
	time.Sleep(2 * time.Millisecond)
	if a := call(t, "POST", pubB.URL+"/api/logout/everywhere", nil, map[string]string{"Authorization": "Bearer " + third}); a.status != 204 {
		t.Fatalf("logout everywhere: %d %v", a.status, a.body)
	}
	waitRefused(t, env.pub.URL, item, other, time.Second)
	if a := order(env.pub.URL, third); a.status != 401 {
		t.Fatalf("the token that asked: %d", a.status)
	}
	time.Sleep(2 * time.Millisecond)
	fresh, _ := login(t, env.pub.URL, "ann", "correct horse")
	if a := order(pubB.URL, fresh); a.status != 200 {
		t.Fatalf("new login after logout everywhere: %d %v", a.status, a.body)
	}

	// The admin's revoke: every token of the user, on every edge.
	time.Sleep(2 * time.Millisecond)
	if a := env.admin("POST", "/admin/users/"+strconv.FormatInt(user, 10)+"/revoke", nil); a.status != 200 {
		t.Fatalf("admin revoke: %d %v", a.status, a.body)
	}
	waitRefused(t, pubB.URL, item, fresh, time.Second)

	// A revocation the broadcast never carried (written while an edge's
	// subscription was down) is found by the periodic check; an edge that
	// starts later loads every revocation at once.
	pubC, _ := extraEdge(t, env, edge.Config{Difficulty: 1, RevocationSync: 200 * time.Millisecond})
	if a := order(pubC.URL, tok); a.status != 401 {
		t.Fatalf("new edge accepted a token revoked before it started: %d", a.status)
	}
	time.Sleep(2 * time.Millisecond)
	late, _ := login(t, env.pub.URL, "ann", "correct horse")
	if a := order(pubC.URL, late); a.status != 200 {
		t.Fatalf("edge C: %d %v", a.status, a.body)
	}
	ses, err := env.edge.Sessions().Verify(late)
	if err != nil {
		t.Fatal(err)
	}
	rdb := env.s.st.Client()
	ctx := context.Background()
	rdb.ZAdd(ctx, env.s.prefix+"edge:revoked", redis.Z{Score: float64(ses.Expires), Member: ses.ID})
	rdb.Incr(ctx, env.s.prefix+"edge:revoked:version") // no PUBLISH: a missed message
	took = waitRefused(t, pubC.URL, item, late, 2*time.Second)
	t.Logf("a missed revocation reached edge C in %v (sync every 200 ms)", took)
	if a := order(pubB.URL, late); a.status != 200 {
		t.Fatalf("edge B (hourly check) heard of a revocation nobody published: %d", a.status)
	}
}

// TestCrossSiteRequestsRefused (issue 13 M1) through a real edge: a
// cross-site cookie POST and a login CSRF get 403 cross_origin, a browser
// body that is not JSON 415; curl, Bearer and same-origin requests work.
func TestCrossSiteRequestsRefused(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, nil, edge.Config{Difficulty: 1})
	item := env.createItem(5, "none", -time.Second, time.Hour)
	// curl, as in the README: no browser headers, no cookie.
	if a := registerFrom(t, env.pub.URL, "", "vic"); a.status != 201 {
		t.Fatalf("curl register: %d %v", a.status, a.body)
	}
	if a := registerFrom(t, env.pub.URL, "", "mallory"); a.status != 201 {
		t.Fatalf("curl register: %d %v", a.status, a.body)
	}
	tok, _ := login(t, env.pub.URL, "vic", "correct horse")
	cookie := "seckill_session=" + tok
	evil := map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
	with := func(h map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range h {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	challenge := fmt.Sprintf("%s/api/items/%d/challenge", env.pub.URL, item)
	cases := []struct {
		desc, url string
		body      any
		hdr       map[string]string
		status    int
		code      string
	}{
		{"cross-site cookie POST", challenge, nil, with(evil, "Cookie", cookie), 403, "cross_origin"},
		{"cross-site form with the cookie", challenge, "a=b", with(evil, "Cookie", cookie, "Content-Type", "application/x-www-form-urlencoded"), 403, "cross_origin"},
		{"login CSRF (form)", env.pub.URL + "/api/login", `{"username":"mallory","password":"correct horse"}`, with(evil, "Content-Type", "text/plain"), 403, "cross_origin"},
		{"forced logout", env.pub.URL + "/api/logout", nil, with(evil, "Cookie", cookie), 403, "cross_origin"},
		{"same-site page on another port", challenge, nil, map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1", "Cookie": cookie}, 403, "cross_origin"},
		{"same-origin text/plain body", env.pub.URL + "/api/login", `{"username":"mallory","password":"correct horse"}`, map[string]string{"Sec-Fetch-Site": "same-origin", "Content-Type": "text/plain"}, 415, "unsupported_media_type"},
		{"same-origin fetch with the cookie", challenge, nil, map[string]string{"Sec-Fetch-Site": "same-origin", "Cookie": cookie}, 200, ""},
		{"same-origin login", env.pub.URL + "/api/login", map[string]any{"username": "vic", "password": "correct horse"}, map[string]string{"Sec-Fetch-Site": "same-origin"}, 200, ""},
		{"bearer", challenge, nil, map[string]string{"Authorization": "Bearer " + tok}, 200, ""},
	}
	for _, tc := range cases {
		a := call(t, "POST", tc.url, tc.body, tc.hdr)
		if a.status != tc.status || a.code() != tc.code {
			t.Errorf("%s: %d %v, want %d %q", tc.desc, a.status, a.body, tc.status, tc.code)
		}
	}
	// The forced logout did not log vic out.
	if a := call(t, "GET", fmt.Sprintf("%s/api/items/%d/order", env.pub.URL, item), nil, map[string]string{"Cookie": cookie}); a.status != 200 {
		t.Fatalf("after the forced logout: %d", a.status)
	}
}

// TestAdminHardening (issue 13 low, issue 14 F22): unknown fields are a
// 400 on admin routes; duplicate keys a 400 everywhere; wrong admin tokens
// are throttled per address; admin writes are audited.
func TestAdminHardening(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, nil, edge.Config{Difficulty: 1})
	item := env.createItem(5, "none", -time.Second, time.Hour)
	if a := env.admin("PUT", fmt.Sprintf("/admin/items/%d/defences", item), map[string]any{"path_bindng": false}); a.status != 400 || a.code() != "invalid" {
		t.Fatalf("misspelt switch: %d %v", a.status, a.body)
	}
	if a := env.admin("GET", fmt.Sprintf("/admin/items/%d/defences", item), nil); a.body["path_binding"] != true {
		t.Fatalf("defences changed: %v", a.body)
	}
	if a := env.admin("PUT", fmt.Sprintf("/admin/items/%d/defences", item), `{"bloom":true,"bloom":false}`); a.status != 400 {
		t.Fatalf("duplicate key on the admin API: %d %v", a.status, a.body)
	}
	if a := call(t, "POST", env.pub.URL+"/api/register", `{"username":"ann","password":"correct horse","username":"root"}`, nil); a.status != 400 || a.code() != "invalid" {
		t.Fatalf("duplicate key on the public API: %d %v", a.status, a.body)
	}
	id, ans := regChallenge(t, env.pub.URL, "")
	if a := registerBody(t, env.pub.URL, "", map[string]any{"username": "ann", "password": "correct horse", "extra": 1}, id, ans); a.status != 201 {
		t.Fatalf("extra field on the public API: %d %v", a.status, a.body)
	}
	if a := env.admin("PUT", fmt.Sprintf("/admin/items/%d/defences", item), map[string]any{"bloom": false}); a.status != 200 {
		t.Fatalf("switch: %d %v", a.status, a.body)
	}
	// The audit list: newest first, who, what, when, how it ended.
	a := env.admin("GET", "/admin/audit", nil)
	entries, _ := a.body["entries"].([]any)
	if a.status != 200 || len(entries) != 4 {
		t.Fatalf("audit: %d %v", a.status, a.body)
	}
	last := entries[0].(map[string]any)
	if last["method"] != "PUT" || last["route"] != "/admin/items/:id/defences" || last["status"] != float64(200) ||
		last["client"] != "127.0.0.1" || last["token_id"] == "" || last["time"] == "" {
		t.Fatalf("audit entry: %v", last)
	}
	if first := entries[3].(map[string]any); first["method"] != "POST" || first["status"] != float64(201) {
		t.Fatalf("first entry: %v", first)
	}
	if e := entries[2].(map[string]any); e["status"] != float64(400) || e["code"] != "invalid" {
		t.Fatalf("refused write: %v", e)
	}
	// Wrong tokens: 10 refusals, then 429 for the address, right token or not.
	for i := range edge.AdminMaxFailures {
		a := call(t, "GET", env.adm.URL+"/admin/audit", nil, map[string]string{"Authorization": "Bearer guess" + strconv.Itoa(i)})
		if a.status != 401 {
			t.Fatalf("guess %d: %d", i, a.status)
		}
	}
	a = env.admin("GET", "/admin/audit", nil)
	if a.status != 429 || a.code() != "rate_limited" || a.header.Get("Retry-After") == "" {
		t.Fatalf("after %d wrong tokens: %d %v", edge.AdminMaxFailures, a.status, a.body)
	}
}

// TestFailedLoginsThrottledPerAccount (issue 13 M5): after 3 wrong
// passwords (the test's budget), under any spelling of the name, an
// account's logins get 429 with Retry-After, whatever the address, right
// password or not; another account is untouched.
func TestFailedLoginsThrottledPerAccount(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, nil, edge.Config{Difficulty: 1, LoginFailures: 3, LoginFailureWindow: time.Minute})
	for _, u := range []string{"ann", "bob"} {
		if a := registerFrom(t, env.pub.URL, "", u); a.status != 201 {
			t.Fatal(a.status)
		}
	}
	try := func(user, pw, ip string) answer {
		return call(t, "POST", env.pub.URL+"/api/login", map[string]any{"username": user, "password": pw}, map[string]string{"X-Forwarded-For": ip})
	}
	// One budget per account, not per spelling: "Ann" and the full-width
	// name are ann (package username).
	for i, spelling := range []string{"ann", "Ann", "ａｎｎ"} {
		if a := try(spelling, "wrong", fmt.Sprintf("10.0.0.%d", i+1)); a.status != 401 || a.code() != "bad_credentials" {
			t.Fatalf("guess %d: %d %v", i, a.status, a.body)
		}
	}
	a := try("ANN", "correct horse", "10.0.1.1")
	ra, _ := strconv.Atoi(a.header.Get("Retry-After"))
	if a.status != 429 || a.code() != "rate_limited" || ra < 50 || ra > 60 {
		t.Fatalf("after 3 failures: %d %v Retry-After %q", a.status, a.body, a.header.Get("Retry-After"))
	}
	if a := try("bob", "correct horse", "10.0.0.1"); a.status != 200 {
		t.Fatalf("another account: %d %v", a.status, a.body)
	}
}

// TestCaptchaIssueBucket (issue 13 low): captcha images have their own
// bucket per edge (each costs ~5 ms of CPU and 22 KB): past it 503
// overloaded with Retry-After, while proof-of-work challenges go on.
func TestCaptchaIssueBucket(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, nil, edge.Config{Difficulty: 1, CaptchaRate: 0.01, CaptchaBurst: 3})
	capItem := env.createItem(100, "captcha", -time.Second, time.Hour)
	powItem := env.createItem(100, "pow", -time.Second, time.Hour)
	names := []string{}
	for i := range 5 {
		names = append(names, fmt.Sprintf("user%d", i))
	}
	tok := env.sessions(names...)
	got := map[int]int{}
	for _, n := range names {
		sh := shopper{e: env, token: tok[n]}
		a := sh.challenge(capItem)
		got[a.status]++
		if a.status == 503 && (a.code() != "overloaded" || a.header.Get("Retry-After") == "") {
			t.Fatalf("captcha refusal: %v %v", a.body, a.header)
		}
		if p := sh.challenge(powItem); p.status != 200 {
			t.Fatalf("pow challenge: %d %v", p.status, p.body)
		}
	}
	if got[200] != 3 || got[503] != 2 {
		t.Fatalf("captcha answers %v, want 3 × 200 and 2 × 503", got)
	}
}
