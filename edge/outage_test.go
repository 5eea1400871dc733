package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"seckill"
	"seckill/backend"
	"seckill/backendclient"
	"seckill/captcha"
	"seckill/edge"
	"seckill/internal/testenv"
	"seckill/limit"
	"seckill/sqlite"
	"seckill/stock"
)

// outageEnv is an edge in front of a real backend (SQLite store), each on
// the real Redis through a fault proxy of its own, with production Redis
// client settings (internal/redisconf), so a fault can hit the edge's
// Redis, the backend's, or both.
type outageEnv struct {
	edgeRedis, beRedis *testenv.FaultyRedis
	e                  *edge.Edge
	pub, adm           *httptest.Server
	live, soldOut      int64
}

func newOutageEnv(t *testing.T, opts ...func(*edge.Config)) *outageEnv {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	edgeRedis := testenv.RedisBehindProxyProd(t)
	beRedis := edgeRedis.Another(t)
	db, err := sqlite.Open(ctx, ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	svc := backend.New(db, stock.New(beRedis.Client, beRedis.Prefix), log)
	now := time.Now()
	live, err := svc.CreateItem(ctx, seckill.Item{Name: "live", Stock: 1000, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour), Challenge: "none"})
	if err != nil {
		t.Fatal(err)
	}
	sold, err := svc.CreateItem(ctx, seckill.Item{Name: "last one", Stock: 1, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour), Challenge: "none"})
	if err != nil {
		t.Fatal(err)
	}
	bs := httptest.NewServer(backend.NewHandler(svc, backend.HTTPConfig{Logger: log}))
	t.Cleanup(bs.Close)
	lim, err := limit.New(nil, limit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lim.Close() })
	cfg := edge.Config{
		SessionSecret: []byte("outage-secret-0123456789abcdef01"),
		AdminToken:    "outage-admin",
		CatalogTTL:    time.Minute,
		// The breaker is not under test here: keep it closed so each row
		// shows what the route itself answers.
		Breaker: edge.BreakerConfig{ConsecutiveFailures: 1 << 20},
	}
	for _, o := range opts {
		o(&cfg)
	}
	e := edge.New(cfg, edge.Deps{
		Backend:    backendclient.New(bs.URL, "", &http.Client{Timeout: 15 * time.Second}),
		Redis:      edgeRedis.Client,
		Prefix:     edgeRedis.Prefix,
		Limiter:    lim,
		Challenges: captcha.NewStore(edgeRedis.Client, edgeRedis.Prefix, captcha.Options{}),
		Buyers:     stock.New(edgeRedis.Client, edgeRedis.Prefix),
		Log:        log,
	})
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.Listen(lctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	env := &outageEnv{edgeRedis: edgeRedis, beRedis: beRedis, e: e, live: live.ID, soldOut: sold.ID}
	env.pub = httptest.NewServer(e.Public())
	t.Cleanup(env.pub.Close)
	env.adm = httptest.NewServer(e.Admin())
	t.Cleanup(env.adm.Close)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if r := env.do(t, "GET", fmt.Sprintf("/api/items/%d", live.ID), 0, nil); r.status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the edge never loaded its catalogue")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return env
}

type reply struct {
	status     int
	code       string
	retryAfter string
	body       map[string]any
	took       time.Duration
}

var outageClient = &http.Client{Timeout: 30 * time.Second}

// do sends one request as user (0: no session) and decodes the answer.
func (env *outageEnv) do(t *testing.T, method, path string, user int64, body any) reply {
	t.Helper()
	return env.send(t, env.pub.URL, method, path, user, body)
}

// admin sends one request to the admin listener with the admin token.
func (env *outageEnv) admin(t *testing.T, method, path string, body any) reply {
	t.Helper()
	return env.send(t, env.adm.URL, method, path, -1, body)
}

func (env *outageEnv) send(t *testing.T, base, method, path string, user int64, body any) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = strings.NewReader(string(raw))
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if user > 0 {
		tok, _ := env.e.Sessions().Sign(user, fmt.Sprintf("u%d", user))
		req.Header.Set("Authorization", "Bearer "+tok)
	} else if user < 0 {
		req.Header.Set("Authorization", "Bearer outage-admin")
	}
	start := time.Now()
	resp, err := outageClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return reply{}
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: map[string]any{}, took: time.Since(start)}
	_ = json.NewDecoder(resp.Body).Decode(&r.body)
	r.code, _ = r.body["code"].(string)
	return r
}

func (env *outageEnv) challenge(t *testing.T, user int64) string {
	t.Helper()
	r := env.do(t, "POST", fmt.Sprintf("/api/items/%d/challenge", env.live), user, nil)
	if r.status != 200 {
		t.Fatalf("challenge: %d %v", r.status, r.body)
	}
	return r.body["challenge_id"].(string)
}

func (env *outageEnv) pathFor(t *testing.T, user int64, challengeID string) string {
	t.Helper()
	r := env.do(t, "POST", fmt.Sprintf("/api/items/%d/path", env.live), user, map[string]any{"challenge_id": challengeID, "answer": "0"})
	if r.status != 200 {
		t.Fatalf("path: %d %v", r.status, r.body)
	}
	return r.body["path"].(string)
}

func (env *outageEnv) buy(t *testing.T, user int64, path string) reply {
	t.Helper()
	return env.do(t, "POST", fmt.Sprintf("/api/items/%d/buy/%s", env.live, path), user, nil)
}

// want is an expected answer: a status and, for errors, a code.
type want struct {
	status int
	code   seckill.Code
}

const (
	dep = seckill.EDependency
	bu  = seckill.EUnavailable
)

// TestRoutesUnderRedisFaults is the route × dependency table of issue 11
// (D2): with the edge's Redis, the backend's Redis, or both refused
// ("down") or answering nothing ("stalled"), no public route answers 500;
// a route that can answer from what the edge holds (catalogue copy, sold-
// out marker, Bloom of ids, session) keeps answering; every other answer is
// 503 with its code and Retry-After, within 10 s. After the fault the
// purchase flow works again, and a path refused with 503 is still usable.
func TestRoutesUnderRedisFaults(t *testing.T) {
	env := newOutageEnv(t)
	ctx := context.Background()
	_ = ctx
	// Sell the last unit of the sold-out item: the edge marks it.
	{
		const u = 900
		ch := env.do(t, "POST", fmt.Sprintf("/api/items/%d/challenge", env.soldOut), u, nil)
		p := env.do(t, "POST", fmt.Sprintf("/api/items/%d/path", env.soldOut), u, map[string]any{"challenge_id": ch.body["challenge_id"], "answer": "0"})
		b := env.do(t, "POST", fmt.Sprintf("/api/items/%d/buy/%s", env.soldOut, p.body["path"]), u, nil)
		if b.status != 202 {
			t.Fatalf("buying the last unit: %d %v", b.status, b.body)
		}
	}

	type target struct{ edge, backend bool }
	rows := []struct {
		name  string
		hit   target
		stall bool
		wants map[string]want
	}{
		{"edge redis down", target{edge: true}, false, nil},
		{"edge redis stalled", target{edge: true}, true, nil},
		{"backend redis down", target{backend: true}, false, nil},
		{"backend redis stalled", target{backend: true}, true, nil},
		{"all redis down", target{true, true}, false, nil},
		{"all redis stalled", target{true, true}, true, nil},
	}
	// The expected answers follow from which Redis the route needs.
	expect := func(hit target) map[string]want {
		ok := want{status: 200}
		w := map[string]want{
			"GET items":              ok,
			"GET item":               ok,
			"GET unknown item":       {404, seckill.EUnknownItem},
			"challenge":              ok,
			"challenge sold out":     {410, seckill.ESoldOut},
			"path":                   ok,
			"buy":                    {202, ""},
			"buy sold out":           {410, seckill.ESoldOut},
			"buy without session":    {401, seckill.EUnauthorized},
			"order":                  ok,
			"order without session":  {401, seckill.EUnauthorized},
			"challenge without user": {401, seckill.EUnauthorized},
			"admin stats":            ok,
			"admin put defences":     ok,
			"admin get defences":     ok,
		}
		if hit.backend {
			w["buy"] = want{503, bu}
			w["order"] = want{503, bu}
			w["admin stats"] = want{503, bu}
		}
		if hit.edge {
			w["admin put defences"] = want{503, dep}
			w["challenge"] = want{503, dep}
			w["path"] = want{503, dep}
			w["buy"] = want{503, dep}
		}
		return w
	}

	user := int64(1000)
	next := func() int64 { user++; return user }
	for _, row := range rows {
		t.Run(strings.ReplaceAll(row.name, " ", "_"), func(t *testing.T) {
			wants := expect(row.hit)
			// Before the fault: a challenge to answer, a path to buy with,
			// a holder whose order to poll.
			pathUser, buyUser, holder, fresh := next(), next(), next(), next()
			chID := env.challenge(t, pathUser)
			path := env.pathFor(t, buyUser, env.challenge(t, buyUser))
			if r := env.buy(t, holder, env.pathFor(t, holder, env.challenge(t, holder))); r.status != 202 {
				t.Fatalf("holder's buy: %d %v", r.status, r.body)
			}

			var proxies []*testenv.FaultyRedis
			if row.hit.edge {
				proxies = append(proxies, env.edgeRedis)
			}
			if row.hit.backend {
				proxies = append(proxies, env.beRedis)
			}
			for _, f := range proxies {
				if row.stall {
					f.Proxy.DropReplies(true)
				} else {
					f.Proxy.Refuse(true)
					f.Proxy.CutAll()
				}
			}
			heal := func() {
				for _, f := range proxies {
					f.Proxy.DropReplies(false)
					f.Proxy.Refuse(false)
				}
			}
			defer heal()

			live, so := env.live, env.soldOut
			reqs := map[string]func() reply{
				"GET items":          func() reply { return env.do(t, "GET", "/api/items", 0, nil) },
				"GET item":           func() reply { return env.do(t, "GET", fmt.Sprintf("/api/items/%d", live), 0, nil) },
				"GET unknown item":   func() reply { return env.do(t, "GET", "/api/items/987654", 0, nil) },
				"challenge":          func() reply { return env.do(t, "POST", fmt.Sprintf("/api/items/%d/challenge", live), fresh, nil) },
				"challenge sold out": func() reply { return env.do(t, "POST", fmt.Sprintf("/api/items/%d/challenge", so), fresh, nil) },
				"path": func() reply {
					return env.do(t, "POST", fmt.Sprintf("/api/items/%d/path", live), pathUser, map[string]any{"challenge_id": chID, "answer": "0"})
				},
				"buy":                   func() reply { return env.buy(t, buyUser, path) },
				"buy sold out":          func() reply { return env.do(t, "POST", fmt.Sprintf("/api/items/%d/buy/%s", so, path), buyUser, nil) },
				"buy without session":   func() reply { return env.buy(t, 0, path) },
				"order":                 func() reply { return env.do(t, "GET", fmt.Sprintf("/api/items/%d/order", live), holder, nil) },
				"order without session": func() reply { return env.do(t, "GET", fmt.Sprintf("/api/items/%d/order", live), 0, nil) },
				"challenge without user": func() reply {
					return env.do(t, "POST", fmt.Sprintf("/api/items/%d/challenge", live), 0, nil)
				},
				"admin stats": func() reply { return env.admin(t, "GET", fmt.Sprintf("/admin/items/%d/stats", live), nil) },
				"admin put defences": func() reply {
					return env.admin(t, "PUT", fmt.Sprintf("/admin/items/%d/defences", live), map[string]any{})
				},
				"admin get defences": func() reply { return env.admin(t, "GET", fmt.Sprintf("/admin/items/%d/defences", live), nil) },
			}
			got := map[string]reply{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for name, f := range reqs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := f()
					mu.Lock()
					got[name] = r
					mu.Unlock()
				}()
			}
			wg.Wait()
			var slowest time.Duration
			slowName := ""
			for name, w := range wants {
				r := got[name]
				if r.took > slowest {
					slowest, slowName = r.took, name
				}
				switch {
				case r.status == 500:
					t.Errorf("%s: 500 %v", name, r.body)
				case r.status != w.status || (w.code != "" && r.code != string(w.code)):
					t.Errorf("%s: %d %s, want %d %s (%v)", name, r.status, r.code, w.status, w.code, r.body)
				case r.status == 503 && r.retryAfter == "":
					t.Errorf("%s: 503 without Retry-After", name)
				}
				if r.took > 10*time.Second {
					t.Errorf("%s: answered after %v", name, r.took)
				}
			}
			t.Logf("%s: slowest answer %v (%s)", row.name, slowest.Round(time.Millisecond), slowName)

			// A stale catalogue copy whose refresh fails is still served.
			env.e.Catalog().Invalidate()
			if r := env.do(t, "GET", fmt.Sprintf("/api/items/%d", live), 0, nil); r.status != 200 || r.took > 10*time.Second {
				t.Errorf("stale catalogue: %d %v after %v", r.status, r.body, r.took)
			} else {
				t.Logf("%s: stale catalogue served after %v", row.name, r.took.Round(time.Millisecond))
			}

			// Back to normal: the path refused with 503 still buys, and a
			// fresh buyer goes through the whole flow.
			heal()
			deadline := time.Now().Add(10 * time.Second)
			for {
				r := env.buy(t, buyUser, path)
				if r.status == 202 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the fault the kept path answers %d %v", r.status, r.body)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if r := env.buy(t, fresh, env.pathFor(t, fresh, env.challenge(t, fresh))); r.status != 202 {
				t.Fatalf("after the fault a fresh buyer gets %d %v", r.status, r.body)
			}
		})
	}
}
