package dynconfig

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"seckill/internal/testenv"
	"seckill/limit"
)

// cfgN is a valid configuration told apart by n (the burst of its rule).
func cfgN(n int) Config {
	c := goodConfig()
	c.Rules = []limit.Rule{{Name: "buy-per-user", Class: "buy", Key: "user", Rate: 1, Burst: n}}
	return c
}

// testKey signs the tests' pushes; testPub checks them.
var testKey, testPub = func() (ed25519.PrivateKey, ed25519.PublicKey) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(err)
	}
	return priv, pub
}()

// newStore is NewStore signing with testKey.
func newStore(conn *zk.Conn, root string) *Store {
	st := NewStore(conn, root)
	st.Signer = testKey
	return st
}

func dial(t *testing.T, addr string) *zk.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := Dial(ctx, addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// newRoot returns a root path of the test's own, deleted at the end.
func newRoot(t *testing.T, conn *zk.Conn) string {
	root := "/" + testenv.Name(t)
	t.Cleanup(func() { deleteTree(conn, root) })
	return root
}

func deleteTree(conn *zk.Conn, p string) {
	kids, _, err := conn.Children(p)
	if err != nil {
		return
	}
	for _, k := range kids {
		deleteTree(conn, path.Join(p, k))
	}
	_ = conn.Delete(p, -1)
}

// edge is a watcher with an apply func that records what it was given.
type edge struct {
	w    *Watcher
	reg  *prometheus.Registry
	disk string
	mu   sync.Mutex
	got  []Config
	done chan struct{}
}

func (e *edge) applied() []Config {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Config(nil), e.got...)
}

func (e *edge) lastBurst() int {
	g := e.applied()
	if len(g) == 0 {
		return 0
	}
	return g[len(g)-1].Rules[0].Burst
}

func (e *edge) metric(name string) float64 {
	switch name {
	case ResultApplied, ResultRejected, ResultStale:
		return value(e.w.mReloads.WithLabelValues(name))
	case "version":
		return value(e.w.mVersion)
	case "connected":
		return value(e.w.mConnected)
	}
	panic(name)
}

// value reads a gauge or counter.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

func startEdge(t *testing.T, addr, root, id, disk string, opts ...WatcherOption) *edge {
	t.Helper()
	e := &edge{reg: prometheus.NewRegistry(), disk: disk, done: make(chan struct{})}
	opts = append([]WatcherOption{WithRegisterer(e.reg), WithPublicKeys(testPub)}, opts...)
	w, err := NewWatcher(addr, root, disk, id, func(c Config) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.got = append(e.got, c)
		return nil
	}, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e.w = w
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(e.done)
		if err := w.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-e.done
	})
	return e
}

func registration(t *testing.T, conn *zk.Conn, root, id string) (EdgeStatus, bool) {
	t.Helper()
	data, _, err := conn.Get(path.Join(root, "edges", id))
	if errors.Is(err, zk.ErrNoNode) {
		return EdgeStatus{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var es EdgeStatus
	if err := json.Unmarshal(data, &es); err != nil {
		t.Fatal(err)
	}
	return es, true
}

func push(t *testing.T, st *Store, c Config, expected int32) int32 {
	t.Helper()
	v, err := st.Push(context.Background(), c, expected)
	if err != nil {
		t.Fatalf("push (expected %d): %v", expected, err)
	}
	if v != expected+1 {
		t.Fatalf("push returned version %d, want %d", v, expected+1)
	}
	return v
}

func TestTwoEdgesFollowPushes(t *testing.T) {
	addr := testenv.ZooKeeper(t)
	conn := dial(t, addr)
	root := newRoot(t, conn)
	st := newStore(conn, root)
	st.By = "alice"
	dir := t.TempDir()
	a := startEdge(t, addr, root, "edge-a", filepath.Join(dir, "a.json"))
	b := startEdge(t, addr, root, "edge-b", filepath.Join(dir, "b.json"))
	testenv.Eventually(t, 10*time.Second, "both edges registered", func() bool {
		_, okA := registration(t, conn, root, "edge-a")
		_, okB := registration(t, conn, root, "edge-b")
		return okA && okB
	})
	// Nothing pushed yet: the static configuration stays (no apply).
	if len(a.applied())+len(b.applied()) != 0 {
		t.Fatal("apply called without any push")
	}

	for v := int32(1); v <= 3; v++ {
		start := time.Now()
		push(t, st, cfgN(int(v)*10), v-1)
		testenv.Eventually(t, time.Second, fmt.Sprintf("version %d applied by both edges within 1s", v), func() bool {
			return a.lastBurst() == int(v)*10 && b.lastBurst() == int(v)*10
		})
		t.Logf("version %d applied by both in %v", v, time.Since(start))
	}
	for _, e := range []*edge{a, b} {
		_ = e.w.Status() // waits for the reload in progress to finish
		if n := len(e.applied()); n != 3 {
			t.Fatalf("apply called %d times, want 3", n)
		}
		if got := e.applied()[2]; !equalConfig(got, cfgN(30)) {
			t.Fatalf("applied %+v, want %+v", got, cfgN(30))
		}
		if e.metric("version") != 3 || e.metric(ResultApplied) != 3 || e.metric(ResultRejected) != 0 || e.metric(ResultStale) != 0 || e.metric("connected") != 1 {
			t.Fatalf("metrics: version %v applied %v rejected %v stale %v connected %v", e.metric("version"),
				e.metric(ResultApplied), e.metric(ResultRejected), e.metric(ResultStale), e.metric("connected"))
		}
		// The last good copy on disk is version 3 (Status waits for the
		// reload to finish).
		if s := e.w.Status(); s.Version != 3 {
			t.Fatalf("status %+v", s)
		}
		data, err := os.ReadFile(e.disk)
		if err != nil {
			t.Fatal(err)
		}
		rec, c, err := DecodeRecord(data)
		if err != nil || rec.Version != 3 || rec.PushedBy != "alice" || c.Rules[0].Burst != 30 {
			t.Fatalf("disk copy: %+v %v", rec, err)
		}
	}
	testenv.Eventually(t, time.Second, "registrations at version 3", func() bool {
		ra, _ := registration(t, conn, root, "edge-a")
		rb, _ := registration(t, conn, root, "edge-b")
		return ra.Version == 3 && rb.Version == 3 && ra.LastError == "" && ra.Source == SourceZooKeeper
	})
	edges, err := st.Edges(context.Background())
	if err != nil || len(edges) != 2 || edges[0].Edge != "edge-a" || edges[1].Edge != "edge-b" {
		t.Fatalf("Edges = %+v, %v", edges, err)
	}

	// History and rollback.
	hist, err := st.History(context.Background())
	if err != nil || len(hist) != 3 || hist[0].Version != 1 || hist[2].Version != 3 {
		t.Fatalf("History = %+v, %v", hist, err)
	}
	v, err := st.Rollback(context.Background(), 1, 3)
	if err != nil || v != 4 {
		t.Fatalf("Rollback = %d, %v", v, err)
	}
	testenv.Eventually(t, time.Second, "rollback applied", func() bool { return a.lastBurst() == 10 && b.lastBurst() == 10 })
	rec, _, err := st.Get(context.Background())
	if err != nil || rec.Version != 4 || rec.RollbackOf != 1 {
		t.Fatalf("Get after rollback = %+v, %v", rec, err)
	}
	if _, err := st.Rollback(context.Background(), 2, 3); !errors.Is(err, ErrConflict) {
		t.Fatalf("rollback with a stale expected version: %v, want ErrConflict", err)
	}
}

func equalConfig(a, b Config) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestHistoryKeepsLastN(t *testing.T) {
	addr := testenv.ZooKeeper(t)
	conn := dial(t, addr)
	root := newRoot(t, conn)
	st := newStore(conn, root)
	st.Keep = 3
	for v := int32(1); v <= 5; v++ {
		push(t, st, cfgN(int(v)), v-1)
	}
	hist, err := st.History(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var vs []int32
	for _, r := range hist {
		vs = append(vs, r.Version)
	}
	if fmt.Sprint(vs) != "[3 4 5]" {
		t.Fatalf("history versions %v, want [3 4 5]", vs)
	}
	if _, err := st.Rollback(context.Background(), 1, 5); err == nil || !strings.Contains(err.Error(), "not in the history") {
		t.Fatalf("rollback to a trimmed version: %v", err)
	}
}

func TestInvalidPushes(t *testing.T) {
	addr := testenv.ZooKeeper(t)
	conn := dial(t, addr)
	root := newRoot(t, conn)
	st := newStore(conn, root)
	dir := t.TempDir()
	a := startEdge(t, addr, root, "edge-a", filepath.Join(dir, "a.json"))
	b := startEdge(t, addr, root, "edge-b", filepath.Join(dir, "b.json"))
	push(t, st, cfgN(7), 0)
	testenv.Eventually(t, time.Second, "version 1 applied", func() bool { return a.lastBurst() == 7 && b.lastBurst() == 7 })

	// Through the CLI code path: refused before anything is written.
	bad := cfgN(7)
	bad.Rules[0].Rate = 0
	bad.TrustedProxies = []string{"10.0.0.1", "nope"}
	_, err := st.Push(context.Background(), bad, 1)
	ps := ProblemsOf(err)
	if len(ps) != 2 || ps[0].Error() != "rules[0] (buy-per-user): rate 0 must be > 0 and <= 1e+09 tokens per second" ||
		!strings.HasPrefix(ps[1].Error(), `trusted_proxies[1]: not an IP or CIDR: "nope"`) {
		t.Fatalf("invalid push: %v", err)
	}
	if cur, _ := st.Current(context.Background()); cur != 1 {
		t.Fatalf("version %d after a refused push, want 1", cur)
	}

	// Written around the CLI: a well-formed record with an invalid config...
	raw, _ := json.Marshal(bad)
	rec, _ := json.Marshal(Record{Version: 2, PushedBy: "mallory", Config: raw})
	if _, err := conn.Set(st.LimitsPath(), rec, 0); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*edge{a, b} {
		testenv.Eventually(t, 2*time.Second, "version 2 rejected", func() bool { return e.metric(ResultRejected) == 1 })
	}
	// ...then plain garbage (version 3).
	if _, err := conn.Set(st.LimitsPath(), []byte("rules: [}"), 1); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"edge-a", "edge-b"} {
		e := map[string]*edge{"edge-a": a, "edge-b": b}[id]
		testenv.Eventually(t, 2*time.Second, "version 3 rejected", func() bool { return e.metric(ResultRejected) == 2 })
		if len(e.applied()) != 1 || e.lastBurst() != 7 || e.metric("version") != 1 || e.metric(ResultApplied) != 1 {
			t.Fatalf("%s: applied %d times, burst %d, version metric %v", id, len(e.applied()), e.lastBurst(), e.metric("version"))
		}
		s := e.w.Status()
		if s.Version != 1 || !strings.HasPrefix(s.LastError, "version 3 rejected, version 1 stays in force: record is not valid JSON") {
			t.Fatalf("%s: status %+v", id, s)
		}
		testenv.Eventually(t, time.Second, "rejection in the registration node", func() bool {
			r, ok := registration(t, conn, root, id)
			return ok && r.Version == 1 && strings.HasPrefix(r.LastError, "version 3 rejected, version 1 stays in force")
		})
		// The disk copy is still version 1.
		_ = e.w.Status()
		data, _ := os.ReadFile(e.disk)
		if r, _, err := DecodeRecord(data); err != nil || r.Version != 1 {
			t.Fatalf("disk copy %+v, %v", r, err)
		}
	}
	// show reports the damage; push over it works (expected = 3).
	if _, _, err := st.Get(context.Background()); err == nil {
		t.Fatal("Get of a damaged node: no error")
	}
	cur, err := st.Current(context.Background())
	if err != nil || cur != 3 {
		t.Fatalf("Current = %d, %v", cur, err)
	}
	push(t, st, cfgN(9), 3)
	testenv.Eventually(t, time.Second, "version 4 applied", func() bool { return a.lastBurst() == 9 && b.lastBurst() == 9 })
	testenv.Eventually(t, time.Second, "error cleared", func() bool {
		r, _ := registration(t, conn, root, "edge-a")
		return r.Version == 4 && r.LastError == ""
	})
	if a.metric(ResultRejected) != 2 || a.metric(ResultApplied) != 2 {
		t.Fatalf("rejected %v applied %v", a.metric(ResultRejected), a.metric(ResultApplied))
	}
}

func TestConcurrentPushes(t *testing.T) {
	addr := testenv.ZooKeeper(t)
	conn := dial(t, addr)
	root := newRoot(t, conn)
	// Each pusher has its own connection, as two operators would.
	stores := []*Store{newStore(dial(t, addr), root), newStore(dial(t, addr), root)}
	stores[0].By, stores[1].By = "alice", "bob"
	for round := int32(0); round < 10; round++ {
		var wg sync.WaitGroup
		var vs [2]int32
		var errs [2]error
		gate := make(chan struct{})
		for i := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				vs[i], errs[i] = stores[i].Push(context.Background(), cfgN(int(round)*2+i+1), round)
			}()
		}
		close(gate)
		wg.Wait()
		winner := -1
		for i := range stores {
			if errs[i] == nil {
				if winner != -1 {
					t.Fatalf("round %d: both pushes won", round)
				}
				winner = i
			}
		}
		if winner == -1 {
			t.Fatalf("round %d: no push won: %v / %v", round, errs[0], errs[1])
		}
		loser := 1 - winner
		var ce *ConflictError
		if vs[winner] != round+1 || !errors.Is(errs[loser], ErrConflict) || !errors.As(errs[loser], &ce) ||
			ce.Expected != round || ce.Current != round+1 || ce.PushedBy != stores[winner].By {
			t.Fatalf("round %d: winner %d version %d; loser error %v", round, winner, vs[winner], errs[loser])
		}
		rec, c, err := stores[0].Get(context.Background())
		if err != nil || rec.Version != round+1 || c.Rules[0].Burst != int(round)*2+winner+1 {
			t.Fatalf("round %d: in force %+v %v", round, rec, err)
		}
	}
}

// cutter is a dialer whose network can be cut: open connections are closed
// and new ones refused.
type cutter struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (c *cutter) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return nil, errors.New("network cut by the test")
	}
	conn, err := net.DialTimeout(network, addr, timeout)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cutter) set(cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = cut
	if cut {
		for _, conn := range c.conns {
			_ = conn.Close()
		}
		c.conns = nil
	}
}

// TestSessionExpiry cuts one edge off for longer than its session timeout:
// ZooKeeper expires the session (its registration node goes), the edge
// gets EventNotWatching/ErrSessionExpired when it comes back, opens a new
// session, re-reads (catching the push made meanwhile), re-watches and
// registers again.
func TestSessionExpiry(t *testing.T) {
	addr := testenv.ZooKeeper(t)
	conn := dial(t, addr)
	root := newRoot(t, conn)
	st := newStore(conn, root)
	cut := &cutter{}
	a := startEdge(t, addr, root, "edge-a", filepath.Join(t.TempDir(), "a.json"),
		WithDialer(cut.dial), WithSessionTimeout(4*time.Second))
	push(t, st, cfgN(1), 0)
	testenv.Eventually(t, time.Second, "version 1 applied", func() bool { return a.lastBurst() == 1 })
	testenv.Eventually(t, time.Second, "registered", func() bool { _, ok := registration(t, conn, root, "edge-a"); return ok })
	a.w.mu.Lock()
	session := a.w.conn.SessionID()
	a.w.mu.Unlock()

	cut.set(true)
	testenv.Eventually(t, 5*time.Second, "disconnected", func() bool { return a.metric("connected") == 0 })
	// The server expires the session: the ephemeral registration goes.
	testenv.Eventually(t, 20*time.Second, "session expired (registration node deleted)", func() bool {
		_, ok := registration(t, conn, root, "edge-a")
		return !ok
	})
	push(t, st, cfgN(2), 1) // missed while away
	if a.lastBurst() != 1 {
		t.Fatal("applied while cut off")
	}
	cut.set(false)
	testenv.Eventually(t, 10*time.Second, "version 2 applied after the new session", func() bool { return a.lastBurst() == 2 })
	a.w.mu.Lock()
	session2 := a.w.conn.SessionID()
	a.w.mu.Unlock()
	if session2 == session || session2 == 0 {
		t.Fatalf("session %x after expiry, was %x: not a new session", session2, session)
	}
	testenv.Eventually(t, 2*time.Second, "registered again at version 2", func() bool {
		r, ok := registration(t, conn, root, "edge-a")
		return ok && r.Version == 2
	})
	// The watch is back: the next push is followed within a second.
	push(t, st, cfgN(3), 2)
	testenv.Eventually(t, time.Second, "version 3 applied", func() bool { return a.lastBurst() == 3 })
	if n := len(a.applied()); n != 3 || a.metric(ResultApplied) != 3 || a.metric("connected") != 1 {
		t.Fatalf("applied %d times (metric %v), connected %v", n, a.metric(ResultApplied), a.metric("connected"))
	}
}

// privateZK starts a ZooKeeper of the test's own with scripts/services.sh.
type privateZK struct {
	t      *testing.T
	script string
	dir    string
}

func startPrivateZK(t *testing.T) (*privateZK, string) {
	script := testenv.ServicesScript(t)
	z := &privateZK{t: t, script: script, dir: t.TempDir()}
	z.run("zookeeper-start")
	t.Cleanup(func() { z.run("zookeeper-stop") })
	addr, err := os.ReadFile(filepath.Join(z.dir, "zk_addr"))
	if err != nil {
		t.Fatal(err)
	}
	return z, strings.TrimSpace(string(addr))
}

func (z *privateZK) run(cmd string) {
	z.t.Helper()
	out, err := exec.Command(z.script, cmd, z.dir).CombinedOutput()
	if err != nil {
		z.t.Fatalf("services.sh %s: %v\n%s", cmd, err, out)
	}
}

func TestZooKeeperDown(t *testing.T) {
	zkp, addr := startPrivateZK(t)
	conn := dial(t, addr)
	root := "/" + testenv.Name(t)
	st := newStore(conn, root)
	dir := t.TempDir()
	a := startEdge(t, addr, root, "edge-a", filepath.Join(dir, "a.json"))
	b := startEdge(t, addr, root, "edge-b", filepath.Join(dir, "b.json"))
	push(t, st, cfgN(1), 0)
	testenv.Eventually(t, time.Second, "version 1 applied", func() bool { return a.lastBurst() == 1 && b.lastBurst() == 1 })

	zkp.run("zookeeper-stop")
	for _, e := range []*edge{a, b} {
		testenv.Eventually(t, 5*time.Second, "disconnected", func() bool { return e.metric("connected") == 0 })
	}
	// A new edge started while ZooKeeper is down loads the copy on disk (the
	// copy of edge a, as after a restart of that edge)...
	data, err := os.ReadFile(filepath.Join(dir, "a.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "c.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c := startEdge(t, addr, root, "edge-c", filepath.Join(dir, "c.json"), WithStartTimeout(300*time.Millisecond))
	// ...and one with no copy keeps its static configuration.
	d := startEdge(t, addr, root, "edge-d", filepath.Join(dir, "d.json"), WithStartTimeout(300*time.Millisecond))
	testenv.Eventually(t, 3*time.Second, "edge c applied the disk copy", func() bool { return c.lastBurst() == 1 })
	if s := c.w.Status(); s.Version != 1 || s.Source != SourceDisk {
		t.Fatalf("edge c status %+v", s)
	}
	time.Sleep(500 * time.Millisecond)
	if s := d.w.Status(); s.Version != 0 || s.Source != SourceStatic || len(d.applied()) != 0 {
		t.Fatalf("edge d status %+v, applied %d", s, len(d.applied()))
	}
	// The others keep the last good configuration while ZooKeeper is away.
	time.Sleep(time.Second)
	for _, e := range []*edge{a, b} {
		if s := e.w.Status(); s.Version != 1 || len(e.applied()) != 1 || e.metric("version") != 1 {
			t.Fatalf("status while ZooKeeper is down: %+v", s)
		}
	}

	zkp.run("zookeeper-start") // same port, same data
	for _, e := range []*edge{a, b, c, d} {
		testenv.Eventually(t, 15*time.Second, "reconnected", func() bool { return e.metric("connected") == 1 })
	}
	// Edge d reads version 1 once connected; edge c already has it.
	testenv.Eventually(t, 2*time.Second, "edge d at version 1", func() bool { return d.lastBurst() == 1 })
	cur, err := st.Current(context.Background())
	if err != nil || cur != 1 {
		t.Fatalf("Current after restart = %d, %v", cur, err)
	}
	push(t, st, cfgN(2), 1)
	for _, e := range []*edge{a, b, c, d} {
		testenv.Eventually(t, time.Second, "version 2 applied after ZooKeeper came back", func() bool { return e.lastBurst() == 2 })
	}
	if n := len(c.applied()); n != 2 { // disk v1, then v2; the re-read of v1 was no reload
		t.Fatalf("edge c applied %d times, want 2", n)
	}
	if s := c.w.Status(); s.Source != SourceZooKeeper || s.Version != 2 {
		t.Fatalf("edge c status %+v", s)
	}
	for _, e := range []*edge{a, b, c, d} {
		if e.metric(ResultStale) != 0 || e.metric(ResultRejected) != 0 {
			t.Fatalf("stale %v rejected %v", e.metric(ResultStale), e.metric(ResultRejected))
		}
	}
}

func TestStaleIgnored(t *testing.T) {
	addr := testenv.ZooKeeper(t)
	conn := dial(t, addr)
	root := newRoot(t, conn)
	st := newStore(conn, root)
	dir := t.TempDir()
	// A disk copy of version 5 (pushed to another ensemble, say).
	raw, _ := json.Marshal(cfgN(5))
	r := Record{Version: 5, Config: raw}
	if err := Sign(&r, testKey); err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(r)
	if err := os.WriteFile(filepath.Join(dir, "a.json"), rec, 0o644); err != nil {
		t.Fatal(err)
	}
	push(t, st, cfgN(1), 0)
	e := &edge{}
	w, err := NewWatcher(addr, root, filepath.Join(dir, "a.json"), "edge-a", func(c Config) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.got = append(e.got, c)
		return nil
	}, nil, WithPublicKeys(testPub))
	if err != nil {
		t.Fatal(err)
	}
	e.w = w
	if v, err := w.LoadLast(); err != nil || v != 5 {
		t.Fatalf("LoadLast = %d, %v", v, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testenv.Eventually(t, 5*time.Second, "version 1 counted stale", func() bool { return e.metric(ResultStale) == 1 })
	if e.lastBurst() != 5 || w.Status().Version != 5 {
		t.Fatalf("burst %d, status %+v", e.lastBurst(), w.Status())
	}
}
