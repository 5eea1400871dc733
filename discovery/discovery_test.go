package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"seckill"
	"seckill/internal/testenv"
)

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fake is a backend speaking the little of the backend API the tests use,
// on an address it keeps across a stop and a start.
type fake struct {
	mu    sync.Mutex
	addr  string
	srv   *http.Server
	calls atomic.Int64
}

func startFake(t *testing.T) *fake {
	f := &fake{}
	f.start(t)
	t.Cleanup(f.stop)
	return f
}

func (f *fake) url() string { return "http://" + f.addr }

func (f *fake) start(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	addr := f.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/reservations", func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		var req struct {
			RequestID string `json:"request_id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(seckill.Reservation{Status: "queued", OrderRef: "o-" + req.RequestID, StockLeft: 1})
	})
	mux.HandleFunc("GET /v1/items", func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"items":[]}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		_, _ = io.WriteString(w, `{}`)
	})
	srv := &http.Server{Handler: mux}
	f.srv = srv
	go func() { _ = srv.Serve(ln) }()
}

func (f *fake) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		_ = f.srv.Close()
		f.srv = nil
	}
}

// cutter dials ZooKeeper and can cut every connection it made and refuse
// new ones: to ZooKeeper the client is gone as if SIGKILLed, and its
// session expires after the timeout.
type cutter struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (c *cutter) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return nil, errors.New("cut by the test")
	}
	conn, err := net.DialTimeout(network, addr, timeout)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cutter) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	for _, conn := range c.conns {
		_ = conn.Close()
	}
	c.conns = nil
}

func (c *cutter) Restore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = false
}

// byHost counts the requests sent to each backend (host:port).
type byHost struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *byHost) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n[r.URL.Host]++
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func (c *byHost) get(host string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[host]
}

const session = 4 * time.Second // the least the test ZooKeeper grants (2 ticks)

// zkRoot returns a root of the test's own, removed at the end.
func zkRoot(t *testing.T) (addr, root string) {
	addr = testenv.ZooKeeper(t)
	root = "/" + testenv.Name(t)
	t.Cleanup(func() {
		conn, _, err := zk.Connect([]string{addr}, session, zk.WithLogInfo(false))
		if err != nil {
			return
		}
		defer conn.Close()
		var rm func(p string)
		rm = func(p string) {
			kids, _, _ := conn.Children(p)
			for _, k := range kids {
				rm(p + "/" + k)
			}
			_ = conn.Delete(p, -1)
		}
		rm(root)
	})
	return addr, root
}

func register(t *testing.T, addr, root, url string, c *cutter) *Registration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := []Option{WithSessionTimeout(session)}
	if c != nil {
		opts = append(opts, WithDialer(c.dial))
	}
	r, err := Register(ctx, []string{addr}, root, url, quiet(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func urls(b *Balancer) []string {
	var out []string
	for _, s := range b.Backends() {
		out = append(out, s.URL)
	}
	return out
}

func waitURLs(t *testing.T, b *Balancer, timeout time.Duration, want ...string) time.Duration {
	t.Helper()
	slices.Sort(want)
	start := time.Now()
	testenv.Eventually(t, timeout, fmt.Sprintf("backends %v", want), func() bool { return slices.Equal(urls(b), want) })
	return time.Since(start)
}

func TestStaticSpreadsAndRetries(t *testing.T) {
	a, b := startFake(t), startFake(t)
	bal := NewStatic([]string{a.url(), b.url()}, WithLogger(quiet()), WithBreaker(BreakerConfig{ConsecutiveFailures: 3, OpenFor: time.Minute}))
	ctx := context.Background()
	for i := range 100 {
		if _, err := bal.Reserve(ctx, 1, seckill.Account{ID: int64(i + 1)}, fmt.Sprint("r", i)); err != nil {
			t.Fatal(err)
		}
	}
	if a.calls.Load() != 50 || b.calls.Load() != 50 {
		t.Fatalf("calls a=%d b=%d, want 50 each", a.calls.Load(), b.calls.Load())
	}
	// A down: every reservation still succeeds (retried once on b), and the
	// breaker of a opens after 3 failures, so a gets no more tries.
	a.stop()
	for i := range 100 {
		r, err := bal.Reserve(ctx, 1, seckill.Account{ID: int64(i + 1)}, fmt.Sprint("s", i))
		if err != nil || r.OrderRef != fmt.Sprint("o-s", i) {
			t.Fatalf("reserve %d with a down: %+v %v", i, r, err)
		}
	}
	for _, st := range bal.Backends() {
		open := st.URL == a.url()
		if (st.State == "open") != open || st.InRotation == open {
			t.Fatalf("states %+v", bal.Backends())
		}
	}
	// b down too (a's breaker open): the buyer gets UnavailableError.
	b.stop()
	_, err := bal.Reserve(ctx, 1, seckill.Account{ID: 1}, "x")
	var ue *seckill.UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("both down: %v", err)
	}
	if _, err := NewStatic(nil).Items(ctx); !errors.As(err, &ue) || !errors.Is(err, ErrNoBackend) {
		t.Fatalf("no backend: %v", err)
	}
}

// TestKillAndReturn: two backends registered in ZooKeeper share the
// traffic; one dies as a SIGKILL would (listener closed, ZooKeeper session
// left to expire): the buyers see no error (each failure is retried on the
// other backend), the dead one gets at most ConsecutiveFailures tries and
// none once its node is gone; it comes back and gets traffic again.
func TestKillAndReturn(t *testing.T) {
	t.Parallel()
	addr, root := zkRoot(t)
	a, b := startFake(t), startFake(t)
	ca := &cutter{}
	register(t, addr, root, a.url(), ca)
	rb := register(t, addr, root, b.url(), nil)

	hosts := &byHost{n: map[string]int{}}
	const fails = 3
	ctx := context.Background()
	bal, err := NewBalancer(ctx, []string{addr}, root, WithSessionTimeout(session), WithLogger(quiet()),
		WithHTTPClient(&http.Client{Transport: hosts, Timeout: 5 * time.Second}),
		WithBreaker(BreakerConfig{ConsecutiveFailures: fails, OpenFor: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	waitURLs(t, bal, 5*time.Second, a.url(), b.url())

	for i := range 200 {
		if _, err := bal.Reserve(ctx, 1, seckill.Account{ID: int64(i + 1)}, fmt.Sprint("r", i)); err != nil {
			t.Fatal(err)
		}
	}
	if a.calls.Load() == 0 || b.calls.Load() == 0 {
		t.Fatalf("calls a=%d b=%d: both must get traffic", a.calls.Load(), b.calls.Load())
	}
	t.Logf("before the kill: a=%d b=%d", a.calls.Load(), b.calls.Load())

	// SIGKILL of a: the listener and the ZooKeeper connection go at once.
	a.stop()
	ca.Cut()
	killed := time.Now()
	triesBefore := hosts.get(a.addr)
	var buyerErrors, n int
	for slices.Contains(urls(bal), a.url()) {
		if time.Since(killed) > 4*session {
			t.Fatalf("a still listed %v after the kill", time.Since(killed))
		}
		if _, err := bal.Reserve(ctx, 1, seckill.Account{ID: int64(n + 1)}, fmt.Sprint("k", n)); err != nil {
			buyerErrors++
		}
		n++
		time.Sleep(2 * time.Millisecond)
	}
	gone := time.Since(killed)
	triesDead := hosts.get(a.addr) - triesBefore
	t.Logf("a dropped %v after the kill (session %v); %d reservations meanwhile, %d buyer errors, %d tries at a",
		gone, session, n, buyerErrors, triesDead)
	if buyerErrors > fails || triesDead > fails {
		t.Fatalf("%d buyer errors, %d tries at the dead backend: more than the breaker's %d", buyerErrors, triesDead, fails)
	}
	for i := range 100 {
		if _, err := bal.Reserve(ctx, 1, seckill.Account{ID: int64(i + 1)}, fmt.Sprint("g", i)); err != nil {
			t.Fatalf("after a is gone: %v", err)
		}
	}
	if d := hosts.get(a.addr) - triesBefore - triesDead; d != 0 {
		t.Fatalf("%d tries at a after its node was gone", d)
	}

	// a comes back on its address and registers again (a new process): it
	// gets a fresh breaker and traffic again.
	a.start(t)
	before := a.calls.Load()
	register(t, addr, root, a.url(), nil)
	waitURLs(t, bal, 5*time.Second, a.url(), b.url())
	for i := range 100 {
		if _, err := bal.Reserve(ctx, 1, seckill.Account{ID: int64(i + 1)}, fmt.Sprint("b", i)); err != nil {
			t.Fatal(err)
		}
	}
	if a.calls.Load()-before == 0 {
		t.Fatal("a got no traffic after its return")
	}

	// A clean shutdown removes the node at once, well before any timeout.
	rb.Close()
	if d := waitURLs(t, bal, session/2, a.url()); d > time.Second {
		t.Fatalf("b dropped %v after its Close", d)
	}
}

// TestRegistrationAfterSessionExpiry: a backend cut off from ZooKeeper for
// longer than its session loses its node; once back it registers again.
func TestRegistrationAfterSessionExpiry(t *testing.T) {
	t.Parallel()
	addr, root := zkRoot(t)
	a := startFake(t)
	ca := &cutter{}
	r := register(t, addr, root, a.url(), ca)
	bal, err := NewBalancer(context.Background(), []string{addr}, root, WithSessionTimeout(session), WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	waitURLs(t, bal, 5*time.Second, a.url())
	first := r.Path()

	ca.Cut()
	d := waitURLs(t, bal, 4*session, []string{}...)
	t.Logf("node gone %v after the cut", d)
	ca.Restore()
	waitURLs(t, bal, 4*session, a.url())
	if r.Created() != 2 || r.Path() == first {
		t.Fatalf("created %d nodes, path %s (first %s)", r.Created(), r.Path(), first)
	}
}

// TestBalancerSessionExpiry: the balancer's own session expires while
// backends come and go; it keeps the last list meanwhile, reads the list
// again on the new session and sees later changes (watches set again).
func TestBalancerSessionExpiry(t *testing.T) {
	t.Parallel()
	addr, root := zkRoot(t)
	a, b, c, d := startFake(t), startFake(t), startFake(t), startFake(t)
	register(t, addr, root, a.url(), nil)
	rb := register(t, addr, root, b.url(), nil)
	cut := &cutter{}
	bal, err := NewBalancer(context.Background(), []string{addr}, root, WithSessionTimeout(session), WithLogger(quiet()), WithDialer(cut.dial))
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	waitURLs(t, bal, 5*time.Second, a.url(), b.url())

	cut.Cut()
	rb.Close()
	register(t, addr, root, c.url(), nil)
	time.Sleep(2*session + time.Second) // the session expires on the server
	if got := urls(bal); !slices.Equal(got, sortedURLs(a, b)) {
		t.Fatalf("while cut off: %v, want the last list", got)
	}
	if _, err := bal.Items(context.Background()); err != nil {
		t.Fatalf("while cut off: %v", err)
	}
	cut.Restore()
	waitURLs(t, bal, 4*session, a.url(), c.url())
	if bal.expired.Load() == 0 {
		t.Fatal("the balancer's session did not expire: the test proves nothing")
	}
	register(t, addr, root, d.url(), nil)
	waitURLs(t, bal, 5*time.Second, a.url(), c.url(), d.url())
}

func sortedURLs(fs ...*fake) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.url())
	}
	slices.Sort(out)
	return out
}

// refusingAddr is an address where nothing listens (ZooKeeper down).
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestStartWithoutZooKeeper: ZooKeeper is down. Follow returns at once and
// serves the operator's list; a registration starts at once and keeps
// trying; both close promptly.
func TestStartWithoutZooKeeper(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	zkDown := refusingAddr(t)
	start := time.Now()
	bal, err := Follow([]string{zkDown}, "/x", WithLogger(quiet()), WithInitial([]string{f.url()}))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := StartRegistration([]string{zkDown}, "/x", f.url(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bal.Reserve(context.Background(), 1, seckill.Account{ID: 1}, "r1"); err != nil {
		t.Fatalf("reserve with ZooKeeper down: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("started and served in %v with ZooKeeper down", d)
	}
	if reg.Path() != "" {
		t.Fatalf("registered at %q with ZooKeeper down", reg.Path())
	}
	closed := time.Now()
	bal.Close()
	reg.Close()
	if d := time.Since(closed); d > 5*time.Second {
		t.Fatalf("closing took %v", d)
	}
}

// TestCachedListServesWhenZooKeeperIsDown: a balancer writes the list it
// read from ZooKeeper to its cache file (each node's content verbatim);
// a balancer started later while ZooKeeper is down serves that list.
func TestCachedListServesWhenZooKeeperIsDown(t *testing.T) {
	t.Parallel()
	addr, root := zkRoot(t)
	a := startFake(t)
	register(t, addr, root, a.url(), nil)
	cache := filepath.Join(t.TempDir(), "backends.json")
	bal, err := NewBalancer(context.Background(), []string{addr}, root, WithLogger(quiet()), WithCache(cache))
	if err != nil {
		t.Fatal(err)
	}
	waitURLs(t, bal, 5*time.Second, a.url())
	testenv.Eventually(t, 5*time.Second, "the cache file", func() bool {
		urls, err := loadCache(cache, RegistrationKey(""))
		return err == nil && slices.Equal(urls, []string{a.url()})
	})
	bal.Close()
	raw, _ := os.ReadFile(cache)
	var c backendCache
	if err := json.Unmarshal(raw, &c); err != nil || c.Format != 1 || len(c.Backends) != 1 || !strings.Contains(string(c.Backends[0].Data), `"started_at"`) {
		t.Fatalf("cache file: %s (%v)", raw, err)
	}

	later, err := Follow([]string{refusingAddr(t)}, root, WithLogger(quiet()), WithCache(cache))
	if err != nil {
		t.Fatal(err)
	}
	defer later.Close()
	if got := urls(later); !slices.Equal(got, []string{a.url()}) {
		t.Fatalf("backends from the cache: %v", got)
	}
	if _, err := later.Reserve(context.Background(), 1, seckill.Account{ID: 1}, "c1"); err != nil {
		t.Fatalf("reserve from the cached list: %v", err)
	}
}

// TestInitialListKeptUntilZooKeeperListsOne: ZooKeeper answers but no
// backend has registered again yet (they do it in the background after an
// outage): the operator's list stays in use; once one registers, ZooKeeper's
// list replaces it.
func TestInitialListKeptUntilZooKeeperListsOne(t *testing.T) {
	t.Parallel()
	addr, root := zkRoot(t)
	a, b := startFake(t), startFake(t)
	bal, err := Follow([]string{addr}, root, WithLogger(quiet()), WithInitial([]string{a.url()}))
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	testenv.Eventually(t, 5*time.Second, "a read of ZooKeeper", func() bool { return bal.reads.Load() > 0 })
	time.Sleep(100 * time.Millisecond)
	if got := urls(bal); !slices.Equal(got, []string{a.url()}) {
		t.Fatalf("backends after an empty ZooKeeper list: %v", got)
	}
	register(t, addr, root, b.url(), nil)
	waitURLs(t, bal, 5*time.Second, b.url())
}

// TestClassesAndBreakerOff: catalogue failures open only the catalogue's
// breaker, never the purchases'; a call marked WithoutBreaker (a sale whose
// breaker defence is off) goes through an open breaker.
func TestClassesAndBreakerOff(t *testing.T) {
	t.Parallel()
	a := startFake(t)
	bal := NewStatic([]string{a.url()}, WithLogger(quiet()), WithBreaker(BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Minute}))
	ctx := context.Background()
	a.stop()
	for range 3 {
		_, _ = bal.Items(ctx)
	}
	if st := bal.Backends()[0].Breakers; st["catalog"] != "open" || st["reserve"] != "closed" || st["read"] != "closed" {
		t.Fatalf("breakers %v after catalogue failures", st)
	}
	a.start(t)
	if _, err := bal.Reserve(ctx, 1, seckill.Account{ID: 1}, "r1"); err != nil {
		t.Fatalf("purchase after catalogue failures: %v", err)
	}
	if _, err := bal.Items(ctx); !errors.Is(err, ErrNoBackend) {
		t.Fatalf("catalogue with its breaker open: %v", err)
	}
	if _, err := bal.Items(seckill.WithoutBreaker(ctx)); err != nil {
		t.Fatalf("catalogue without breaker: %v", err)
	}
	if st := bal.PurchaseBreakerState(); st.String() != "closed" {
		t.Fatalf("purchase breaker state %v", st)
	}
}
