package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"seckill"
	"seckill/backend"
	"seckill/backendclient"
	"seckill/discovery"
	"seckill/edge"
	"seckill/httpapi"
	"seckill/internal/faultproxy"
	"seckill/internal/testenv"
	"seckill/stock"
)

// holdReserves is a transport that holds every reservation until the
// caller gives up (its context ends) while hold is set: a backend too slow
// for a client that hangs up.
type holdReserves struct {
	next http.RoundTripper
	hold atomic.Bool
	held atomic.Int64
}

func (h *holdReserves) RoundTrip(r *http.Request) (*http.Response, error) {
	if h.hold.Load() && r.URL.Path == "/v1/reservations" {
		h.held.Add(1)
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return h.next.RoundTrip(r)
}

// TestHangUpsDoNotOpenBreaker: five buyers in a row hang up mid-buy while
// the backend is slow (each edge request is cancelled by its client going
// away). A hang-up says nothing about the backend: the breaker (5
// consecutive failures) stays closed, and the next buyers, the five
// included, are all accepted. Both wirings: the edge's own breaker over one
// backend client, and the balancer's per-backend breakers.
func TestHangUpsDoNotOpenBreaker(t *testing.T) {
	t.Parallel()
	for _, balanced := range []bool{false, true} {
		name := "edge guard"
		if balanced {
			name = "balancer"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			hangUps(t, balanced)
		})
	}
}

func hangUps(t *testing.T, balanced bool) {
	hold := &holdReserves{next: &http.Transport{MaxIdleConnsPerHost: 64}}
	var bal *discovery.Balancer
	env := newEdgeEnvWith(t, nil, edge.Config{Difficulty: 1, Breaker: edge.BreakerConfig{ConsecutiveFailures: 5, OpenFor: time.Minute}},
		func(d *edge.Deps) {
			base := d.Backend.(*backendclient.Client).Base()
			hc := &http.Client{Transport: hold, Timeout: 30 * time.Second}
			if balanced {
				bal = discovery.NewStatic([]string{base}, discovery.WithHTTPClient(hc),
					discovery.WithBreaker(discovery.BreakerConfig{ConsecutiveFailures: 5, OpenFor: time.Minute}))
				d.Backend = bal
				return
			}
			d.Backend = backendclient.New(base, "", hc)
		}, nil)
	item := env.createItem(100, "none", -time.Second, time.Hour)
	names := []string{"hang1", "hang2", "hang3", "hang4", "hang5", "after"}
	tokens := env.sessions(names...)
	paths := map[string]string{}
	for _, n := range names {
		paths[n] = shopper{e: env, token: tokens[n]}.getPath(item)
	}

	hold.hold.Store(true)
	impatient := &http.Client{Timeout: 150 * time.Millisecond}
	for i, n := range names[:5] {
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/items/%d/buy/%s", env.pub.URL, item, paths[n]), nil)
		req.Header.Set("Authorization", "Bearer "+tokens[n])
		resp, err := impatient.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("hang-up %d: got an answer %d, want the client to give up first", i, resp.StatusCode)
		}
		// Wait until the edge saw the hang-up (its backend call ended).
		testenv.Eventually(t, 5*time.Second, "the held call to end", func() bool {
			n, _ := env.edge.Guard().InFlight()
			return n == 0 && hold.held.Load() == int64(i+1)
		})
	}
	hold.hold.Store(false)
	if st := env.edge.Guard().State(); st != gobreaker.StateClosed {
		t.Fatalf("edge breaker %v after 5 hang-ups, want closed", st)
	}
	if bal != nil {
		if st := bal.Backends()[0].Breakers; st["reserve"] != "closed" {
			t.Fatalf("balancer breakers %v after 5 hang-ups, want reserve closed", st)
		}
	}
	accepted := 0
	for _, n := range names {
		a := shopper{e: env, token: tokens[n]}.buy(item, paths[n])
		if a.status != 202 {
			t.Fatalf("%s after the hang-ups: %d %v", n, a.status, a.body)
		}
		accepted++
	}
	if accepted != 6 || hold.held.Load() != 5 {
		t.Fatalf("accepted %d (want 6), held %d (want 5)", accepted, hold.held.Load())
	}
}

// pgRefuse makes PostgreSQL refuse the test's database for real: it stops
// accepting connections to it and ends the ones open (the server says
// "database is not currently accepting connections"). Other tests' databases
// on the same server are untouched. It returns the function that ends the
// outage.
func pgRefuse(t *testing.T, dbURL string) (restore func()) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin := *u
	admin.Path = "/postgres"
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		t.Fatal(err)
	}
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec("ALTER DATABASE " + name + " ALLOW_CONNECTIONS false")
	exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + name + "' AND pid <> pg_backend_pid()")
	var once sync.Once
	restore = func() {
		once.Do(func() {
			exec("ALTER DATABASE " + name + " ALLOW_CONNECTIONS true")
			_ = conn.Close(ctx)
		})
	}
	t.Cleanup(restore)
	return restore
}

// staticBalancer puts the production balancer (one breaker per backend and
// call class) between the edge and the test's backend.
func staticBalancer(d *edge.Deps) {
	base := d.Backend.(*backendclient.Client).Base()
	d.Backend = discovery.NewStatic([]string{base},
		discovery.WithBreaker(discovery.BreakerConfig{ConsecutiveFailures: 5, OpenFor: time.Second}))
}

// TestPostgresOutagePurchasesContinue: PostgreSQL refuses the sale's
// database. Status polls fail on it (enough to open the status breaker
// many times over) and the catalogue cannot be listed, yet every purchase
// through the edge is accepted: purchases need only Redis, and each call
// class has its own breaker. A buyer Redis knows is answered "queued",
// degraded; one it does not know gets 503 with Retry-After. After the
// outage every accepted order is stored exactly once.
func TestPostgresOutagePurchasesContinue(t *testing.T) {
	t.Parallel()
	env := newEdgeEnvWith(t, nil, edge.Config{Difficulty: 1}, staticBalancer, nil)
	item := env.createItem(1000, "none", -time.Second, time.Hour)
	const buyers = 200
	names := make([]string, buyers)
	for i := range names {
		names[i] = fmt.Sprintf("pgout%03d", i)
	}
	tokens := env.sessions(names...)
	// The first ten buy before the outage.
	accepted := map[string]string{}
	for _, n := range names[:10] {
		sh := shopper{e: env, token: tokens[n]}
		a := sh.buy(item, sh.getPath(item))
		if a.status != 202 {
			t.Fatalf("before the outage: %d %v", a.status, a.body)
		}
		accepted[n] = a.str("order_ref")
	}

	restore := pgRefuse(t, env.s.pgURL)
	outage := time.Now()
	// Status polls answer what Redis knows: those who bought are queued,
	// the others none; both say degraded. Nothing fails, so no breaker
	// opens for them either.
	degraded := 0
	for round := range 3 {
		for _, n := range names[:20] {
			a := shopper{e: env, token: tokens[n]}.order(item)
			ref, bought := accepted[n]
			want := "none"
			if bought {
				want = "queued"
			}
			if a.status != 200 || a.str("status") != want || a.body["degraded"] != true || a.str("order_ref") != ref {
				t.Fatalf("round %d: status of %s during the outage: %d %v, want %s degraded", round, n, a.status, a.body, want)
			}
			degraded++
		}
	}
	if degraded != 60 {
		t.Fatalf("%d degraded answers, want 60", degraded)
	}
	// The backend stays ready (purchases need only Redis); the details
	// behind its admin route name PostgreSQL.
	var br map[string]string
	if code := getJSON(t, "http://"+env.be.addr+"/readyz", "", &br); code != 200 {
		t.Fatalf("backend readyz during the outage: %d %v", code, br)
	}
	var det httpapi.Readiness
	getJSON(t, "http://"+env.be.addr+"/v1/admin/readyz", "", &det)
	if det.Status != "ready" || len(det.Checks) != 2 || det.Checks[1].Name != "postgres" || det.Checks[1].OK || det.Checks[1].Needed {
		t.Fatalf("backend readiness details during the outage: %+v", det)
	}
	// The catalogue still answers (the edge's copy; the backend's last list).
	if a := (shopper{e: env}).do("GET", "/api/items", nil); a.status != 200 {
		t.Fatalf("catalogue during the outage: %d %v", a.status, a.body)
	}
	var one map[string]any
	if code := getJSON(t, fmt.Sprintf("http://%s/v1/items/%d", env.be.addr, item), "", &one); code != 200 {
		t.Fatalf("backend item during the outage: %d %v", code, one)
	}
	// Every purchase goes through.
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, n := range names[10:] {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sh := shopper{e: env, token: tokens[n]}
			a := sh.buy(item, sh.getPath(item))
			// Status polls in between, as real clients do.
			sh.order(item)
			mu.Lock()
			defer mu.Unlock()
			if a.status != 202 {
				t.Errorf("%s during the outage: %d %v", n, a.status, a.body)
				return
			}
			accepted[n] = a.str("order_ref")
		}()
	}
	wg.Wait()
	if len(accepted) != buyers {
		t.Fatalf("%d accepted during and before the outage, want %d", len(accepted), buyers)
	}
	states := env.edge.Backend().(*discovery.Balancer).Backends()
	t.Logf("%d purchases accepted in %v of PostgreSQL outage; breakers %v", buyers-10, time.Since(outage), states[0].Breakers)
	if states[0].Breakers["reserve"] != "closed" || states[0].Breakers["read"] != "closed" {
		t.Fatalf("breakers %v during the outage, want reserve and read closed", states[0].Breakers)
	}
	restore()

	// After the outage, everything is stored once, and status is exact again.
	byUser := map[int64]string{}
	ids, err := env.s.db.EnsureUsers(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	for n, ref := range accepted {
		byUser[ids[n]] = ref
	}
	env.s.waitOrders(item, buyers, 60*time.Second)
	testenv.Eventually(t, 10*time.Second, "status confirmed, not degraded", func() bool {
		a := shopper{e: env, token: tokens[names[0]]}.order(item)
		return a.status == 200 && a.str("status") == "confirmed" && a.body["degraded"] == nil
	})
	it, err := env.s.db.Item(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	waitOutboxEmpty(t, env.s, item)
	env.s.checkFinal(it, byUser)
}

// freePort returns a loopback address nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type edgeProc struct {
	*proc
	public, admin string
}

// startEdgeProc runs `seckill edge` against the stack's Redis and returns
// once it wrote its addresses.
func startEdgeProc(t *testing.T, s *stack, deadline time.Time, args ...string) edgeProc {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	env := append(s.env(s.amqpURL), "SECKILL_ADMIN_TOKEN="+stackToken)
	p := startProc(t, env, append([]string{"edge", "--public-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--addr-file", addrFile, "--limits", "../configs/limits.yaml"}, args...)...)
	ep := edgeProc{proc: p}
	for ep.public == "" || ep.admin == "" {
		if time.Now().After(deadline) {
			t.Fatalf("seckill edge did not listen in time:\n%s", p.out.String())
		}
		if b, err := os.ReadFile(addrFile); err == nil {
			for _, f := range strings.Fields(string(b)) {
				k, v, _ := strings.Cut(f, "=")
				switch k {
				case "public":
					ep.public = "http://" + v
				case "admin":
					ep.admin = "http://" + v
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ep
}

// TestStartWithZooKeeperDown: ZooKeeper is down (its address refuses).
// A `seckill backend` and a `seckill edge` are started at the same moment,
// both told to use it: the backend serves and registers in the background,
// the edge starts from --backend-url. A purchase through the edge is
// accepted within 5 s of the start, and both processes are still running.
func TestStartWithZooKeeperDown(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.createItem(10, "none")
	zkDown := freePort(t)
	beAddr := freePort(t)
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	be := startProc(t, s.env(s.amqpURL), "backend", "--listen", beAddr, "--zk", zkDown, "--zk-root", "/"+testenv.Name(t),
		"--relay-id", "relay-"+s.queue)
	ep := startEdgeProc(t, s, deadline, "--zk", zkDown, "--zk-root", "/"+testenv.Name(t), "--backend-url", "http://"+beAddr,
		"--edge-id", testenv.Name(t), "--backends-cache", filepath.Join(t.TempDir(), "backends.json"))
	env := &edgeEnv{t: t, s: s, pub: &httptest.Server{URL: ep.public}, adm: &httptest.Server{URL: ep.admin}, token: stackToken}

	// Ready once the catalogue is loaded (through the backend).
	for {
		resp, err := http.Get(ep.public + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the edge was not ready within 5 s (last: %v)\nbackend:\n%s\nedge:\n%s", err, be.out.String(), ep.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ready := time.Since(start)
	tok := env.sessions("zkdown1")["zkdown1"]
	sh := shopper{e: env, token: tok}
	// A backend starts with reservations frozen until it has verified its
	// Redis (docs/RELIABILITY.md, "Stale Redis"): a client retries a 503
	// on the same path after Retry-After, as docs/API.md says.
	path := sh.getPath(item.ID)
	a := sh.buy(item.ID, path)
	for (a.status == 503 || a.status == 429) && time.Now().Before(deadline) {
		time.Sleep(time.Second) // every 429 and 503 says Retry-After: 1
		a = sh.buy(item.ID, path)
	}
	served := time.Since(start)
	if a.status != 202 {
		t.Fatalf("purchase with ZooKeeper down: %d %v", a.status, a.body)
	}
	t.Logf("ZooKeeper down: edge ready %v after the start, first purchase accepted after %v", ready, served)
	if served > 5*time.Second {
		t.Fatalf("first purchase %v after the start, want within 5 s", served)
	}
	for name, p := range map[string]*proc{"backend": be, "edge": ep.proc} {
		select {
		case <-p.done:
			t.Fatalf("the %s exited:\n%s", name, p.out.String())
		default:
		}
	}
}

// timedGet returns the status of a GET and how long it took.
func timedGet(t *testing.T, url string) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := edgeClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// TestCatalogueUnderRedisLatency: 200 ms of latency (each way) between the
// backend and its Redis (internal/faultproxy). The edge's catalogue copy
// goes stale every 200 ms, and is refreshed in the background while reads
// are served from the copy: no catalogue read through the edge waits for
// one Redis round trip (400 ms), and reads are as fast as without the
// latency (generous bounds). The backend lists 30 items (live, upcoming,
// ended) in one pipelined round trip, not one per item.
func TestCatalogueUnderRedisLatency(t *testing.T) {
	t.Parallel()
	env := newEdgeEnvWith(t, nil, edge.Config{Difficulty: 1, CatalogTTL: 200 * time.Millisecond}, nil, nil)
	var live []int64
	for range 20 {
		live = append(live, env.createItem(100, "none", -time.Second, time.Hour))
	}
	for range 5 {
		env.createItem(100, "none", time.Hour, time.Hour)
	}
	for range 5 {
		env.createItem(100, "none", -2*time.Hour, time.Hour)
	}

	// The backend again, its Redis behind the proxy.
	rdb := env.s.st.Client().(*redis.Client)
	px, err := faultproxy.New(rdb.Options().Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	opt := *rdb.Options()
	opt.Addr = px.Addr()
	slow := redis.NewClient(&opt)
	t.Cleanup(func() { _ = slow.Close() })
	svc := backend.New(env.s.db, stock.New(slow, env.s.prefix), quietLog(t))
	env.be.stop()
	env.be.h = backend.NewHandler(svc, backend.HTTPConfig{Logger: quietLog(t)})
	env.be.start(t)

	read := func(phase string) []time.Duration {
		var ds []time.Duration
		for i := range 40 {
			url := env.pub.URL + "/api/items"
			if i%2 == 1 {
				url = fmt.Sprintf("%s/api/items/%d", env.pub.URL, live[i%len(live)])
			}
			st, d := timedGet(t, url)
			if st != 200 {
				t.Fatalf("%s: GET %s: %d", phase, url, st)
			}
			ds = append(ds, d)
			time.Sleep(50 * time.Millisecond) // 2 s in all: the copy goes stale ten times
		}
		return ds
	}
	testenv.Eventually(t, 10*time.Second, "the catalogue from the new backend", func() bool {
		st, _ := timedGet(t, env.pub.URL+"/api/items")
		return st == 200 && env.edge.Catalog().Age() < 200*time.Millisecond
	})
	fast := read("no latency")

	px.SetLatency(200 * time.Millisecond)
	before := env.edge.Catalog().Refreshes()
	slowReads := read("200 ms latency")
	refreshed := env.edge.Catalog().Refreshes() - before

	// The backend's list under latency: one pipelined round trip for 30 items.
	start := time.Now()
	var list struct {
		Items []seckill.ItemView `json:"items"`
	}
	if code := getJSON(t, "http://"+env.be.addr+"/v1/items", "", &list); code != 200 || len(list.Items) != 30 {
		t.Fatalf("backend list: %d, %d items", code, len(list.Items))
	}
	listTook := time.Since(start)
	states := map[seckill.ItemState]int{}
	for _, it := range list.Items {
		states[it.State]++
	}
	px.SetLatency(0)

	t.Logf("catalogue reads through the edge: no latency p50 %v max %v; 200 ms Redis latency p50 %v max %v; %d background refreshes meanwhile; backend list of 30 items under latency %v; states %v",
		percentile(fast, 0.5), percentile(fast, 1), percentile(slowReads, 0.5), percentile(slowReads, 1), refreshed, listTook, states)
	if refreshed < 1 {
		t.Fatalf("no refresh went through during the latency: the test proves nothing")
	}
	if m := percentile(slowReads, 1); m >= 200*time.Millisecond {
		t.Fatalf("a catalogue read took %v under Redis latency: it waited for a refresh", m)
	}
	if p50s, p50f := percentile(slowReads, 0.5), percentile(fast, 0.5); p50s > 5*p50f+50*time.Millisecond {
		t.Fatalf("median read %v under Redis latency, %v without: not as fast", p50s, p50f)
	}
	// One round trip is at least 400 ms here; thirty in series would be 12 s.
	if listTook > 3*time.Second {
		t.Fatalf("the backend listed 30 items in %v under 200 ms latency: not one pipelined round trip", listTook)
	}
	if states["live"] != 20 || states["upcoming"] != 5 || states["ended"] != 5 {
		t.Fatalf("states %v, want 20 live, 5 upcoming, 5 ended", states)
	}
}

// holdItems holds every catalogue request until release is closed.
type holdItems struct {
	next    http.RoundTripper
	release chan struct{}
}

func (h *holdItems) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/v1/items" {
		select {
		case <-h.release:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return h.next.RoundTrip(r)
}

// TestHealthContract: /healthz names the process (the same instance on
// both listeners, another for another process); the public /readyz says
// only ready or not, and is not ready until the catalogue is loaded; a
// request for a live item made before the catalogue is loaded waits for
// it instead of answering unknown_item; the admin /readyz gives the
// details; draining makes the public /readyz fail at once. The backend
// follows the same contract, details behind its admin token.
func TestHealthContract(t *testing.T) {
	t.Parallel()
	hold := &holdItems{next: &http.Transport{}, release: make(chan struct{})}
	env := newEdgeEnvWith(t, nil, edge.Config{Difficulty: 1}, func(d *edge.Deps) {
		base := d.Backend.(*backendclient.Client).Base()
		d.Backend = backendclient.New(base, "", &http.Client{Transport: hold, Timeout: 30 * time.Second})
	}, nil)
	item := env.s.createItem(10, "none")

	var pubH, admH httpapi.Health
	if getJSON(t, env.pub.URL+"/healthz", "", &pubH) != 200 || getJSON(t, env.adm.URL+"/healthz", "", &admH) != 200 {
		t.Fatal("healthz")
	}
	if pubH.Instance == "" || pubH.Instance != admH.Instance || pubH.Service != "edge" || pubH.Status != "ok" {
		t.Fatalf("healthz public %+v admin %+v", pubH, admH)
	}
	var beH httpapi.Health
	if getJSON(t, "http://"+env.be.addr+"/healthz", "", &beH) != 200 || beH.Service != "backend" || beH.Instance == "" || beH.Instance == pubH.Instance {
		t.Fatalf("backend healthz %+v", beH)
	}

	// Not ready before the catalogue: only the verdict on the public side.
	resp, err := http.Get(env.pub.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || strings.TrimSpace(string(raw)) != `{"status":"unready"}` || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("public readyz before the catalogue: %d %s %v", resp.StatusCode, raw, resp.Header)
	}
	var det httpapi.Readiness
	if code := getJSON(t, env.adm.URL+"/readyz", "", &det); code != 503 || det.Status != "unready" || det.Checks[0].Name != "catalog" || det.Checks[0].OK {
		t.Fatalf("admin readyz before the catalogue: %d %+v", code, det)
	}
	// A live item asked for before the catalogue is loaded: never 404.
	got := make(chan answer, 1)
	go func() { got <- shopper{e: env}.do("GET", fmt.Sprintf("/api/items/%d", item.ID), nil) }()
	time.Sleep(100 * time.Millisecond)
	close(hold.release)
	if a := <-got; a.status != 200 {
		t.Fatalf("item asked for before the catalogue was loaded: %d %v", a.status, a.body)
	}
	testenv.Eventually(t, 3*time.Second, "public readyz ready", func() bool {
		var r map[string]string
		return getJSON(t, env.pub.URL+"/readyz", "", &r) == 200 && r["status"] == "ready" && len(r) == 1
	})
	if code := getJSON(t, env.adm.URL+"/readyz", "", &det); code != 200 || det.Status != "ready" || det.Instance != pubH.Instance || len(det.Checks) != 3 {
		t.Fatalf("admin readyz: %d %+v", code, det)
	}
	for _, c := range det.Checks {
		if !c.OK {
			t.Fatalf("check %+v", c)
		}
	}

	// The backend: ready (Redis), details behind the admin route.
	var br map[string]string
	if getJSON(t, "http://"+env.be.addr+"/readyz", "", &br) != 200 || br["status"] != "ready" || len(br) != 1 {
		t.Fatalf("backend readyz %v", br)
	}
	var bdet httpapi.Readiness
	if code := getJSON(t, "http://"+env.be.addr+"/v1/admin/readyz", "", &bdet); code != 200 || len(bdet.Checks) != 2 || bdet.Instance != beH.Instance {
		t.Fatalf("backend admin readyz: %d %+v", code, bdet)
	}

	env.edge.Drain()
	var r map[string]string
	if code := getJSON(t, env.pub.URL+"/readyz", "", &r); code != 503 || r["status"] != "unready" {
		t.Fatalf("public readyz while draining: %d %v", code, r)
	}
}

// TestRecoveryAfterBackendRestart measures how long purchases take to come
// back at full rate after the backend returns. Eight buyers buy without a
// pause (each retries its path every 20 ms after a 503) through the edge and
// the production balancer (one breaker per backend and call class, none in
// series, open for 1 s). Three times, the backend's listener goes away (for
// 3.0, 3.4 and 3.8 s, so the return falls at different points of the
// breaker's open/probe cycle) and comes back on the same address. After
// each return, refusals stop within the breaker's open time plus its probes
// (2 s); every buyer ends accepted, every order stored once.
func TestRecoveryAfterBackendRestart(t *testing.T) {
	t.Parallel()
	env := newEdgeEnvWith(t, nil, edge.Config{Difficulty: 1}, staticBalancer, nil)
	const buyers = 1500
	item := env.createItem(buyers, "none", -time.Second, time.Hour)
	names := make([]string, buyers)
	for i := range names {
		names[i] = fmt.Sprintf("restart%04d", i)
	}
	tokens := env.sessions(names...)

	type attempt struct {
		at     time.Time
		status int
	}
	var (
		mu       sync.Mutex
		attempts []attempt
		accepted = map[string]string{}
		next     atomic.Int64
	)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= buyers {
					return
				}
				sh := shopper{e: env, token: tokens[names[i]]}
				p := sh.getPath(item)
				for {
					a := sh.buy(item, p)
					mu.Lock()
					attempts = append(attempts, attempt{time.Now(), a.status})
					if a.status == 202 {
						accepted[names[i]] = a.str("order_ref")
					}
					mu.Unlock()
					if a.status == 202 {
						break
					}
					if a.status != 503 || a.header.Get("Retry-After") == "" {
						t.Errorf("%s: %d %v", names[i], a.status, a.body)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	nAccepted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted)
	}
	type cycle struct{ stopped, back time.Time }
	var cycles []cycle
	for _, down := range []time.Duration{3000 * time.Millisecond, 3400 * time.Millisecond, 3800 * time.Millisecond} {
		want := nAccepted() + 100
		testenv.Eventually(t, 30*time.Second, "100 purchases before the stop", func() bool { return nAccepted() >= want })
		env.be.stop()
		c := cycle{stopped: time.Now()}
		time.Sleep(down)
		env.be.start(t)
		c.back = time.Now()
		cycles = append(cycles, c)
	}
	wg.Wait()
	if len(accepted) != buyers {
		t.Fatalf("%d accepted, want %d", len(accepted), buyers)
	}
	for i, c := range cycles {
		end := time.Now()
		if i+1 < len(cycles) {
			end = cycles[i+1].stopped
		}
		var firstOK, lastRefusal time.Time
		refusals, before := 0, 0
		var windows []int // accepted per 250 ms after the return
		for _, a := range attempts {
			switch {
			case a.at.Before(c.stopped.Add(-time.Second)) || !a.at.Before(end):
			case a.at.Before(c.stopped):
				if a.status == 202 {
					before++
				}
			case a.status == 503:
				refusals++
				if a.at.After(lastRefusal) {
					lastRefusal = a.at
				}
			case a.status == 202 && a.at.After(c.back):
				if firstOK.IsZero() || a.at.Before(firstOK) {
					firstOK = a.at
				}
				w := int(a.at.Sub(c.back) / (250 * time.Millisecond))
				for len(windows) <= w {
					windows = append(windows, 0)
				}
				windows[w]++
			}
		}
		if len(windows) > 6 {
			windows = windows[:6]
		}
		recovery := lastRefusal.Sub(c.back)
		t.Logf("restart %d: backend away %v; %d accepted in the second before; %d refusals (503); after the return: first accepted %v, last refusal %v; accepted per 250 ms after the return: %v",
			i+1, c.back.Sub(c.stopped).Round(time.Millisecond), before, refusals,
			firstOK.Sub(c.back).Round(time.Millisecond), recovery.Round(time.Millisecond), windows)
		if refusals == 0 {
			t.Fatalf("restart %d: no refusal while the backend was away: the test proves nothing", i+1)
		}
		// Two breakers in series, or a half-open refusal counted as a
		// failure, took 3 s and more.
		if recovery > 2*time.Second {
			t.Fatalf("restart %d: refusals went on %v after the backend returned, want within 2 s", i+1, recovery)
		}
	}
	byUser := map[int64]string{}
	ids, err := env.s.db.EnsureUsers(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	for n, ref := range accepted {
		byUser[ids[n]] = ref
	}
	env.s.waitOrders(item, buyers, 60*time.Second)
	it, err := env.s.db.Item(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	waitOutboxEmpty(t, env.s, item)
	env.s.checkFinal(it, byUser)
}
