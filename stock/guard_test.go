package stock_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/rkeys"
	"seckill/internal/testenv"
	"seckill/stock"
)

// durable is PostgreSQL for the guard: items and stored orders in memory.
type durable struct {
	mu    sync.Mutex
	items []seckill.Item
	sold  map[int64]map[int64]string
	nets  map[int64]map[int64]string // item -> user -> registration network
}

func (d *durable) Items(context.Context) ([]seckill.Item, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]seckill.Item(nil), d.items...), nil
}

func (d *durable) OrderNetworks(_ context.Context, item int64) (map[int64]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[int64]string{}
	for u, n := range d.nets[item] {
		if _, ok := d.sold[item][u]; ok {
			out[u] = n
		}
	}
	return out, nil
}

func (d *durable) OrderRefs(_ context.Context, item int64) (map[int64]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[int64]string{}
	for u, r := range d.sold[item] {
		out[u] = r
	}
	return out, nil
}

func (d *durable) CountOrders(_ context.Context, item int64) (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(len(d.sold[item])), nil
}

// privateRedis starts a Redis server of the test's own (these tests empty
// its script cache, which would disturb guarded backends of other tests on
// the shared one) and returns a client and a key prefix.
func privateRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	rdb, prefix, _ := privateRedisRestartable(t)
	return rdb, prefix
}

// privateRedisRestartable also returns a function that stops the server
// (SIGTERM) and starts it again on the same port, without persistence:
// a new server process, empty.
func privateRedisRestartable(t *testing.T) (*redis.Client, string, func()) {
	t.Helper()
	script := testenv.ServicesScript(t)
	dir := filepath.Join(t.TempDir(), "redis")
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := startCmd(script, dir).CombinedOutput(); err != nil {
		t.Fatalf("redis-start: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("bash", script, "redis-stop", dir).Run() })
	raw, err := os.ReadFile(filepath.Join(dir, "redis_url"))
	if err != nil {
		t.Fatal(err)
	}
	opt, err := redis.ParseURL(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	restart := func() {
		if out, err := exec.Command("bash", script, "redis-stop", dir).CombinedOutput(); err != nil {
			t.Fatalf("redis-stop: %v\n%s", err, out)
		}
		if out, err := startCmd(script, dir).CombinedOutput(); err != nil {
			t.Fatalf("redis-start: %v\n%s", err, out)
		}
	}
	return rdb, testenv.Name(t) + ":", restart
}

func startCmd(script, dir string) *exec.Cmd {
	cmd := exec.Command("bash", script, "redis-start", dir)
	cmd.Env = append(os.Environ(), "REDIS_AOF=no")
	return cmd
}

// guarded returns a store with a running guard over the test Redis, and
// waits for the guard's first verification.
func guarded(t *testing.T, rdb *redis.Client, prefix string, d *durable, ready func(context.Context) (int, error)) (*stock.Store, *stock.Guard, func()) {
	t.Helper()
	s := stock.New(rdb, prefix)
	g := stock.NewGuard(s, stock.GuardConfig{Source: d, QueueReady: ready, Interval: 50 * time.Millisecond,
		Settle: 200 * time.Millisecond, Poll: 20 * time.Millisecond, Logger: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	testenv.Eventually(t, 10*time.Second, "the guard's first verification", func() bool { return !g.Frozen() })
	return s, g, stop
}

func reserveCode(t *testing.T, s *stock.Store, item, user int64) string {
	t.Helper()
	r, err := s.Reserve(context.Background(), item, seckill.Account{ID: user}, fmt.Sprint("q", user), fmt.Sprint("ref", user))
	if err != nil {
		return string(seckill.ErrorCode(err))
	}
	return string(r.Outcome)
}

// TestGuardNoscriptFence: with the guard's watch stopped (the window
// between a restart and its detection), a Redis whose script cache was
// emptied refuses the reservation with NOSCRIPT: nothing is sold, the store
// freezes, and only a verification loads the script again.
func TestGuardNoscriptFence(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := privateRedis(t)
	it := liveItem(1, 10)
	d := &durable{items: []seckill.Item{it}}
	s, g, stop := guarded(t, rdb, prefix, d, nil)
	if err := s.LoadItem(ctx, it, nil, nil); err != nil {
		t.Fatal(err)
	}
	if c := reserveCode(t, s, 1, 1); c != "queued" {
		t.Fatalf("first reservation: %s", c)
	}
	before := g.Status().Freezes // the first verification of a new prefix is one
	stop()                       // no watch: only the fence stands
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if c := reserveCode(t, s, 1, 2); c != string(seckill.EUnavailable) {
		t.Fatalf("reservation after the script cache was emptied: %s, want %s", c, seckill.EUnavailable)
	}
	if !g.Frozen() {
		t.Fatal("NOSCRIPT did not freeze the store")
	}
	// Frozen: refused without even asking Redis, and no EVAL loaded it.
	if c := reserveCode(t, s, 1, 3); c != string(seckill.EUnavailable) {
		t.Fatalf("reservation while frozen: %s", c)
	}
	if ex, _ := rdb.ScriptExists(ctx, "0").Result(); len(ex) != 1 {
		t.Fatal("SCRIPT EXISTS")
	}
	c, _ := s.Counters(ctx, 1)
	if c.StockLeft != 9 || c.Reserved != 1 || c.OutboxPending != 1 {
		t.Fatalf("counters after refused reservations: %+v", c)
	}
	st := g.Status()
	if st.Freezes != before+1 || !st.Frozen {
		t.Fatalf("status %+v", st)
	}
	// The watch resumes: same server, already verified: load and flow.
	ctx2, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = g.Run(ctx2) }()
	testenv.Eventually(t, 10*time.Second, "the freeze to end", func() bool { return !g.Frozen() })
	if c := reserveCode(t, s, 1, 2); c != "queued" {
		t.Fatalf("reservation after the freeze: %s", c)
	}
	if st := g.Status(); st.Freezes != before+1 || st.LastFreezeSeconds <= 0 {
		t.Fatalf("status after the freeze %+v", st)
	}
}

// TestGuardRunIDChangeReseeds: the Redis server's run_id differs from the
// verified one (what a restart or a restored snapshot looks like): the
// guard freezes within its interval, waits while the orders queue still
// holds messages, then re-seeds from the durable store: stored buyers Redis
// had lost are back and stock = total - |stored ∪ Redis buyers|.
func TestGuardRunIDChangeReseeds(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := privateRedis(t)
	it := liveItem(7, 10)
	d := &durable{items: []seckill.Item{it}, sold: map[int64]map[int64]string{7: {}}}
	var queueReady atomic.Int64
	s, g, _ := guarded(t, rdb, prefix, d, func(context.Context) (int, error) { return int(queueReady.Load()), nil })
	if err := s.LoadItem(ctx, it, nil, nil); err != nil {
		t.Fatal(err)
	}
	for u := int64(1); u <= 4; u++ {
		if c := reserveCode(t, s, 7, u); c != "queued" {
			t.Fatalf("user %d: %s", u, c)
		}
	}
	before := g.Status().Freezes
	// The relay's part: the outbox went to RabbitMQ.
	if err := rdb.XTrimMaxLen(ctx, rkeys.Space(prefix).Item(7).Outbox, 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Make Redis stale: users 3 and 4 (and 5, 6, sold by a Redis state
	// that is gone) are stored in PostgreSQL; Redis forgets 3 and 4.
	d.mu.Lock()
	for u := int64(1); u <= 6; u++ {
		d.sold[7][u] = fmt.Sprint("ref", u)
	}
	d.mu.Unlock()
	buyers := rkeys.Space(prefix).Item(7).Buyers
	if err := rdb.HDel(ctx, buyers, "3", "4").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.IncrBy(ctx, rkeys.Space(prefix).Item(7).Stock, 2).Err(); err != nil {
		t.Fatal(err)
	}
	queueReady.Store(3) // orders still waiting in RabbitMQ
	// A restart changes the run_id; a restored snapshot carries an older
	// verified value. Either way they differ.
	if err := rdb.Set(ctx, rkeys.Space(prefix).VerifiedRunID(), "0123456789abcdef", 0).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the guard to freeze", g.Frozen)
	for u := int64(3); u <= 8; u++ {
		if c := reserveCode(t, s, 7, u); c != string(seckill.EUnavailable) {
			t.Fatalf("user %d while frozen: %s", u, c)
		}
	}
	time.Sleep(500 * time.Millisecond) // longer than Settle: the queue holds it
	if !g.Frozen() {
		t.Fatal("unfrozen while the orders queue still held messages")
	}
	if st := g.Status(); st.Waiting == "" {
		t.Fatalf("status while frozen says nothing about what it waits for: %+v", st)
	}
	queueReady.Store(0)
	testenv.Eventually(t, 10*time.Second, "the freeze to end", func() bool { return !g.Frozen() })
	c, _ := s.Counters(ctx, 7)
	if c.Reserved != 6 || c.StockLeft != 4 {
		t.Fatalf("after the re-seed: %+v, want 6 reserved and 4 left", c)
	}
	run, err := s.ServerRunID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.VerifiedRunID(ctx); v != run {
		t.Fatalf("verified run_id %q, server %q", v, run)
	}
	for u := int64(1); u <= 6; u++ {
		if c := reserveCode(t, s, 7, u); c != "already_bought" && !(u <= 4 && c == "queued") {
			t.Fatalf("user %d after the re-seed: %s", u, c)
		}
	}
	sold := 0
	for u := int64(7); u <= 20; u++ {
		if reserveCode(t, s, 7, u) == "queued" {
			sold++
		}
	}
	if sold != 4 {
		t.Fatalf("sold %d more, want exactly the 4 left", sold)
	}
	if st := g.Status(); st.Freezes != before+1 || st.LastFreezeSeconds < 0.5 {
		t.Fatalf("status %+v", st)
	}
}

// TestReseedOnAnotherServerDisarms: a re-seed whose transaction is answered
// by a server other than the one recovery watched (a restart in between)
// flushes the script again instead of leaving that server armed.
func TestReseedOnAnotherServerDisarms(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := privateRedis(t)
	s := stock.New(rdb, prefix)
	it := liveItem(3, 5)
	err := s.Reseed(ctx, "not-this-server", []stock.ReseedItem{{Item: it, Sold: map[int64]string{1: "a"}}})
	if err == nil {
		t.Fatal("re-seed answered by another server reported success")
	}
	ex, err := rdb.ScriptExists(ctx, stock.ReserveScriptHash()).Result()
	if err != nil || ex[0] {
		t.Fatalf("reservation script still loaded after a mismatched re-seed: %v %v", ex, err)
	}
	// The re-seed itself is harmless: it is what recovery would have done.
	c, _ := s.Counters(ctx, 3)
	if c.Reserved != 1 || c.StockLeft != 4 {
		t.Fatalf("counters %+v", c)
	}
}

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestGuardDetectsRealRestart: the Redis server is restarted (a new process,
// empty) while no reservation is attempted: the watch alone sees the new
// run_id, freezes, waits while the queue still holds messages, and re-seeds
// the stored buyers; the verified run_id becomes the new server's.
func TestGuardDetectsRealRestart(t *testing.T) {
	ctx := context.Background()
	rdb, prefix, restart := privateRedisRestartable(t)
	it := liveItem(5, 10)
	d := &durable{items: []seckill.Item{it}, sold: map[int64]map[int64]string{5: {}}}
	var queueReady atomic.Int64
	s, g, _ := guarded(t, rdb, prefix, d, func(context.Context) (int, error) { return int(queueReady.Load()), nil })
	if err := s.LoadItem(ctx, it, nil, nil); err != nil {
		t.Fatal(err)
	}
	for u := int64(1); u <= 3; u++ {
		if c := reserveCode(t, s, 5, u); c != "queued" {
			t.Fatalf("user %d: %s", u, c)
		}
		d.mu.Lock()
		d.sold[5][u] = fmt.Sprint("ref", u) // stored by the worker
		d.mu.Unlock()
	}
	run1, err := s.ServerRunID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := g.Status().Freezes
	queueReady.Store(1)
	restart()
	testenv.Eventually(t, 10*time.Second, "the watch to see the restart", g.Frozen)
	if c := reserveCode(t, s, 5, 4); c != string(seckill.EUnavailable) {
		t.Fatalf("reservation while frozen: %s", c)
	}
	queueReady.Store(0)
	testenv.Eventually(t, 10*time.Second, "the freeze to end", func() bool { return !g.Frozen() })
	run2, _ := s.ServerRunID(ctx)
	if v, _ := s.VerifiedRunID(ctx); run2 == run1 || v != run2 {
		t.Fatalf("run_id before %s, after %s, verified %s", run1, run2, v)
	}
	c, _ := s.Counters(ctx, 5)
	if c.Reserved != 3 || c.StockLeft != 7 || c.StockTotal != 10 {
		t.Fatalf("counters after the re-seed of an empty Redis: %+v", c)
	}
	if c := reserveCode(t, s, 5, 2); c != "already_bought" {
		t.Fatalf("stored buyer after the restart: %s", c)
	}
	if c := reserveCode(t, s, 5, 4); c != "queued" {
		t.Fatalf("new buyer after the restart: %s", c)
	}
	if st := g.Status(); st.Freezes != before+1 || st.RunID != run2 {
		t.Fatalf("status %+v", st)
	}
}

// TestGuardsRecoverConcurrently: three backends' guards over one Redis see
// the same run_id mismatch and recover at once (one may find the server
// verified by another and only thaw). Then all three sell concurrently:
// exactly the units left are sold, every stored buyer is refused.
func TestGuardsRecoverConcurrently(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := privateRedis(t)
	it := liveItem(9, 300)
	sold := map[int64]string{}
	for u := int64(1); u <= 100; u++ {
		sold[u] = fmt.Sprint("ref", u)
	}
	d := &durable{items: []seckill.Item{it}, sold: map[int64]map[int64]string{9: sold}}
	var stores []*stock.Store
	var guards []*stock.Guard
	var queueReady atomic.Int64 // held at 1 until every guard froze
	for i := 0; i < 3; i++ {
		s, g, _ := guarded(t, rdb, prefix, d, func(context.Context) (int, error) { return int(queueReady.Load()), nil })
		stores, guards = append(stores, s), append(guards, g)
	}
	// The start re-seeded the 100 stored buyers. Make Redis stale: it
	// knows only 40 of them, and sold 10 more that PostgreSQL does not
	// hold yet (in its outbox, taken by the relay below).
	for u := int64(41); u <= 100; u++ {
		if err := rdb.HDel(ctx, rkeys.Space(prefix).Item(9).Buyers, fmt.Sprint(u)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.IncrBy(ctx, rkeys.Space(prefix).Item(9).Stock, 60).Err(); err != nil {
		t.Fatal(err)
	}
	for u := int64(1001); u <= 1010; u++ {
		if c := reserveCode(t, stores[1], 9, u); c != "queued" {
			t.Fatalf("user %d: %s", u, c)
		}
	}
	if err := rdb.XTrimMaxLen(ctx, rkeys.Space(prefix).Item(9).Outbox, 0).Err(); err != nil {
		t.Fatal(err)
	}
	var before []uint64
	for _, g := range guards {
		before = append(before, g.Status().Freezes)
	}
	queueReady.Store(1)
	if err := rdb.Set(ctx, rkeys.Space(prefix).VerifiedRunID(), "older-server", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i, g := range guards {
		testenv.Eventually(t, 10*time.Second, fmt.Sprint("guard ", i, " to freeze"), g.Frozen)
	}
	queueReady.Store(0) // all three recover at once now
	for i, g := range guards {
		testenv.Eventually(t, 10*time.Second, fmt.Sprint("guard ", i, " to thaw"), func() bool { return !g.Frozen() })
		if f := g.Status().Freezes; f != before[i]+1 {
			t.Fatalf("guard %d: %d freezes, want %d", i, f, before[i]+1)
		}
	}
	c, _ := stores[2].Counters(ctx, 9)
	// |stored ∪ Redis buyers| = 100 + 10.
	if c.Reserved != 110 || c.StockLeft != 190 {
		t.Fatalf("after concurrent recovery: %+v, want 110 reserved, 190 left", c)
	}
	var queued atomic.Int64
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := int64(1); u <= 400; u++ {
				user := u
				if u > 100 {
					user = 10000*int64(i+1) + u
				}
				if reserveCode(t, s, 9, user) == "queued" {
					queued.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	c, _ = stores[0].Counters(ctx, 9)
	if queued.Load() != 190 || c.Reserved != 300 || c.StockLeft != 0 {
		t.Fatalf("sold %d after the recovery (want 190); counters %+v", queued.Load(), c)
	}
}

// TestReseedManyBuyers: a re-seed carries its buyers in chunks, all in one
// transaction; every stored buyer arrives, the stock is total - HLEN once.
func TestReseedManyBuyers(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := privateRedis(t)
	s := stock.New(rdb, prefix)
	it := liveItem(4, 10000)
	if err := s.LoadItem(ctx, it, nil, nil); err != nil {
		t.Fatal(err)
	}
	for u := int64(1); u <= 3; u++ { // Redis buyers; 1 and 2 are stored too
		if _, err := s.Reserve(ctx, 4, seckill.Account{ID: u}, fmt.Sprint("q", u), fmt.Sprint("ref", u)); err != nil {
			t.Fatal(err)
		}
	}
	sold := map[int64]string{}
	for u := int64(1); u <= 4501; u++ {
		sold[u] = fmt.Sprint("ref", u)
	}
	run, err := s.ServerRunID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // twice: idempotent
		if err := s.Reseed(ctx, run, []stock.ReseedItem{{Item: it, Sold: sold}}); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := s.Counters(ctx, 4)
	if c.Reserved != 4501 || c.StockLeft != 10000-4501 || c.StockTotal != 10000 {
		t.Fatalf("counters %+v", c)
	}
	if v, _ := s.VerifiedRunID(ctx); v != run {
		t.Fatalf("verified %q, want %q", v, run)
	}
	if ex, _ := rdb.ScriptExists(ctx, stock.ReserveScriptHash()).Result(); !ex[0] {
		t.Fatal("reservation script not loaded by the re-seed")
	}
	if ref, ok, _ := s.Buyer(ctx, 4, 3); !ok || ref != "ref3" {
		t.Fatalf("buyer 3: %q %v", ref, ok)
	}
}

// TestGuardReseedCountsNetworks: the guard's re-seed of a stale Redis
// counts max_per_network again from the stored buyers' networks and the
// buyers Redis still holds: a network cannot buy past its limit after a
// restore that lost some of its buyers and all of its counts.
func TestGuardReseedCountsNetworks(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := privateRedis(t)
	it := liveItem(9, 10)
	it.MaxPerNetwork = 2
	const a, b = "203.0.113.0/24", "192.0.2.0/24"
	d := &durable{items: []seckill.Item{it}, sold: map[int64]map[int64]string{9: {}},
		nets: map[int64]map[int64]string{9: {1: a, 2: a, 3: b, 5: b}}}
	s, g, _ := guarded(t, rdb, prefix, d, nil)
	if err := s.LoadItem(ctx, it, nil, nil); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	for u, n := range map[int64]string{1: a, 2: a, 3: b} {
		r, err := s.Reserve(ctx, 9, seckill.Account{ID: u, CreatedAt: old, Network: n}, fmt.Sprint("q", u), fmt.Sprint("ref", u))
		if err != nil || r.Outcome != stock.Queued {
			t.Fatalf("user %d: %+v %v", u, r, err)
		}
	}
	k := rkeys.Space(prefix).Item(9)
	if err := rdb.XTrimMaxLen(ctx, k.Outbox, 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Stored: 1, 2, 3 and 5 (sold by a Redis state that is gone). The
	// restored Redis forgot buyer 2 and every count.
	d.mu.Lock()
	for _, u := range []int64{1, 2, 3, 5} {
		d.sold[9][u] = fmt.Sprint("ref", u)
	}
	d.mu.Unlock()
	if err := rdb.HDel(ctx, k.Buyers, "2").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, k.Networks).Err(); err != nil {
		t.Fatal(err)
	}
	before := g.Status().Freezes
	if err := rdb.Set(ctx, rkeys.Space(prefix).VerifiedRunID(), "0123456789abcdef", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Nothing holds this freeze open (no queue to wait for): it lasts
	// about Settle (200 ms), which a poll of Frozen can miss on a busy
	// machine. The count of freezes cannot be missed.
	testenv.Eventually(t, 5*time.Second, "the guard to freeze", func() bool { return g.Status().Freezes > before })
	testenv.Eventually(t, 10*time.Second, "the freeze to end", func() bool { return !g.Frozen() })
	nets, err := s.Networks(ctx, 9)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(nets) != fmt.Sprint(map[string]int64{a: 2, b: 2}) {
		t.Fatalf("networks after the re-seed: %v, want %s: 2, %s: 2", nets, a, b)
	}
	for u, n := range map[int64]string{6: a, 7: b} {
		r, err := s.Reserve(ctx, 9, seckill.Account{ID: u, CreatedAt: old, Network: n}, fmt.Sprint("q", u), fmt.Sprint("ref", u))
		if err != nil || r.Outcome != stock.NotEligible {
			t.Fatalf("user %d of a full network after the re-seed: %+v %v", u, r, err)
		}
	}
	// A released re-seeded buyer gives its slot back.
	if ok, err := s.Release(ctx, 9, 2, "ref2"); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	if r, err := s.Reserve(ctx, 9, seckill.Account{ID: 6, CreatedAt: old, Network: a}, "q6b", "ref6b"); err != nil || r.Outcome != stock.Queued {
		t.Fatalf("after the release: %+v %v", r, err)
	}
}
