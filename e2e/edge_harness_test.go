package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"seckill/apiclient"
	"seckill/backend"
	"seckill/backendclient"
	"seckill/captcha"
	"seckill/captcha/pow"
	"seckill/edge"
	"seckill/internal/app"
	"seckill/limit"
)

// restartable is a backend listener the test can stop and start again on
// the same address.
type restartable struct {
	mu   sync.Mutex
	addr string
	h    http.Handler
	srv  *http.Server
}

func (r *restartable) start(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 { // the port may linger for a moment after close
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.srv = &http.Server{Handler: r.h}
	go func() { _ = r.srv.Serve(ln) }()
}

func (r *restartable) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		_ = r.srv.Close()
		r.srv = nil
	}
}

// counting counts the requests the edge sends to the backend, by path.
type counting struct {
	next  http.RoundTripper
	mu    sync.Mutex
	calls map[string]int
	total atomic.Int64
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.calls[r.Method+" "+r.URL.Path]++
	c.mu.Unlock()
	c.total.Add(1)
	return c.next.RoundTrip(r)
}

func (c *counting) reserves() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls["POST /v1/reservations"]
}

type edgeEnv struct {
	t      *testing.T
	s      *stack
	be     *restartable
	calls  *counting
	edge   *edge.Edge
	pub    *httptest.Server
	adm    *httptest.Server
	ch     *captcha.Store
	token  string
	secret []byte
}

// newEdgeEnv runs a backend (relay and worker included) and an edge in
// front of it, on the real servers.
func newEdgeEnv(t *testing.T, rules []limit.Rule, cfg edge.Config) *edgeEnv {
	t.Helper()
	return newEdgeEnvWith(t, rules, cfg, nil, nil)
}

// newEdgeEnvWith is newEdgeEnv with extra edge dependencies (deps may set
// fields of edge.Deps) and a wrapper around the public handler; both may be nil.
func newEdgeEnvWith(t *testing.T, rules []limit.Rule, cfg edge.Config, deps func(*edge.Deps), wrap func(http.Handler) http.Handler) *edgeEnv {
	t.Helper()
	s := newStack(t)
	s.startRelay(s.amqpURL, "relay-"+s.queue)
	s.startWorker(s.amqpURL)
	be := &restartable{h: backend.NewHandler(s.svc, backend.HTTPConfig{Logger: quietLog(t)})}
	be.start(t)
	t.Cleanup(be.stop)
	calls := &counting{next: &http.Transport{MaxIdleConnsPerHost: 512}, calls: map[string]int{}}
	lim, err := limit.New(rules, limit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lim.Close() })
	// The edge role as `seckill edge` builds it (internal/app), on the
	// test's Redis prefix, in front of the restartable backend through a
	// counting client; the test's rules, edge settings and dependencies
	// go in through the role's test hooks.
	var ch *captcha.Store
	ecfg := app.DefaultEdge
	ecfg.Stores = s.stores(s.amqpURL)
	ecfg.PublicListen, ecfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	ecfg.AdminToken, ecfg.SessionSecret = edgeAdminToken, "test-secret-0123456789abcdef0123"
	ecfg.TrustedProxies = []string{"127.0.0.1/32"}
	ecfg.Backend = backendclient.New("http://"+be.addr, "", &http.Client{Transport: calls, Timeout: 5 * time.Second})
	ecfg.Log = quietLog(t)
	ecfg.Hooks = &app.EdgeHooks{
		Tune: func(c *edge.Config, d *edge.Deps) {
			secret, token := c.SessionSecret, c.AdminToken
			*c = cfg
			c.SessionSecret, c.AdminToken = secret, token
			d.Limiter = lim
			d.Storefront, d.Dashboard = nil, nil
			if deps != nil {
				deps(d)
			}
			ch, _ = d.Challenges.(*captcha.Store)
		},
		WrapPublic: wrap,
	}
	ctx, stop := context.WithCancel(context.Background())
	ae, err := app.StartEdge(ctx, ecfg)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if err := ae.Wait(); err != nil {
			t.Errorf("edge: %v", err)
		}
	})
	env := &edgeEnv{t: t, s: s, be: be, calls: calls, edge: ae.Edge(), ch: ch, token: ecfg.AdminToken, secret: []byte(ecfg.SessionSecret),
		pub: &httptest.Server{URL: "http://" + ae.PublicAddr()}, adm: &httptest.Server{URL: "http://" + ae.AdminAddr()}}
	return env
}

// edgeAdminToken is the admin token of the test edges (outside `seckill
// dev`, at least 32 bytes).
const edgeAdminToken = "e2e-edge-admin-token-0123456789abcdef"

type answer struct {
	status int
	body   map[string]any
	header http.Header
}

func (a answer) code() string { s, _ := a.body["code"].(string); return s }
func (a answer) str(k string) string {
	s, _ := a.body[k].(string)
	return s
}

var edgeClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}, Timeout: 30 * time.Second}

func call(t *testing.T, method, url string, body any, hdr map[string]string) answer {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := edgeClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return checkAnswer(t, method, url, resp.StatusCode, resp.Header, raw)
}

// checkAnswer decodes an answer and checks every refusal is a problem
// (application/problem+json) and no 5xx but 503 comes back.
func checkAnswer(t *testing.T, method, url string, status int, header http.Header, raw []byte) answer {
	t.Helper()
	a := answer{status: status, header: header, body: map[string]any{}}
	_ = json.Unmarshal(raw, &a.body)
	if status >= 400 && header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("%s %s: %d with content type %q: %s", method, url, status, header.Get("Content-Type"), raw)
	}
	if status >= 500 && status != 503 {
		t.Errorf("%s %s: %d: %s", method, url, status, raw)
	}
	return a
}

func (e *edgeEnv) admin(method, path string, body any) answer {
	return call(e.t, method, e.adm.URL+path, body, map[string]string{"Authorization": "Bearer " + e.token})
}

// createItem creates an item through the edge's admin API.
func (e *edgeEnv) createItem(units int, challenge string, startIn, lasts time.Duration) int64 {
	e.t.Helper()
	now := time.Now()
	a := e.admin("POST", "/admin/items", map[string]any{
		"name": "flash", "price_cents": 999, "stock": units, "challenge": challenge,
		"starts_at": now.Add(startIn).UTC().Format(time.RFC3339Nano), "ends_at": now.Add(startIn + lasts).UTC().Format(time.RFC3339Nano),
	})
	if a.status != 201 {
		e.t.Fatalf("create item: %d %v", a.status, a.body)
	}
	return int64(a.body["id"].(float64))
}

// sessions creates users through the admin API and returns their tokens.
func (e *edgeEnv) sessions(names ...string) map[string]string {
	e.t.Helper()
	a := e.admin("POST", "/admin/sessions", map[string]any{"usernames": names})
	if a.status != 200 {
		e.t.Fatalf("sessions: %d %v", a.status, a.body)
	}
	out := map[string]string{}
	for k, v := range a.body["tokens"].(map[string]any) {
		out[k] = v.(string)
	}
	return out
}

// shopper is one client of the public API.
type shopper struct {
	e     *edgeEnv
	token string
	ip    string // sent as X-Forwarded-For through the trusted loopback proxy
}

func (sh shopper) do(method, path string, body any) answer {
	sh.e.t.Helper()
	if b, ok := body.(string); ok {
		body = []byte(b)
	}
	var hdr http.Header
	if sh.ip != "" {
		hdr = http.Header{"X-Forwarded-For": {sh.ip}}
	}
	api := apiclient.New(sh.e.pub.URL, "", "", edgeClient) // public API only
	a, err := api.Send(context.Background(), method, path, sh.token, body, hdr)
	if err != nil {
		sh.e.t.Fatal(err)
	}
	return checkAnswer(sh.e.t, method, sh.e.pub.URL+path, a.Status, a.Header, a.Body)
}

func (sh shopper) challenge(item int64) answer {
	return sh.do("POST", fmt.Sprintf("/api/items/%d/challenge", item), nil)
}

// solve answers a challenge the way an honest client does (pow), or
// through the captcha store's test hook.
func (sh shopper) solve(ch answer) string {
	sh.e.t.Helper()
	if ch.str("kind") == captcha.KindCaptcha {
		ans, err := sh.e.ch.AnswerForTest(context.Background(), ch.str("challenge_id"))
		if err != nil {
			sh.e.t.Fatal(err)
		}
		return ans
	}
	diff := 0
	if d, ok := ch.body["difficulty"].(float64); ok {
		diff = int(d)
	}
	return pow.Solve(ch.str("seed"), diff)
}

func (sh shopper) path(item int64, challengeID, ans string) answer {
	return sh.do("POST", fmt.Sprintf("/api/items/%d/path", item), map[string]any{"challenge_id": challengeID, "answer": ans})
}

// getPath goes through challenge and path, failing the test on any refusal.
func (sh shopper) getPath(item int64) string {
	sh.e.t.Helper()
	ch := sh.challenge(item)
	if ch.status != 200 {
		sh.e.t.Fatalf("challenge: %d %v", ch.status, ch.body)
	}
	p := sh.path(item, ch.str("challenge_id"), sh.solve(ch))
	if p.status != 200 {
		sh.e.t.Fatalf("path: %d %v", p.status, p.body)
	}
	return p.str("path")
}

func (sh shopper) buy(item int64, path string) answer {
	return sh.do("POST", fmt.Sprintf("/api/items/%d/buy/%s", item, path), nil)
}

func (sh shopper) order(item int64) answer {
	return sh.do("GET", fmt.Sprintf("/api/items/%d/order", item), nil)
}

// httpClientWith is an http.Client whose transport counts requests.
func httpClientWith(c *counting) *http.Client {
	return &http.Client{Transport: c, Timeout: 5 * time.Second}
}
