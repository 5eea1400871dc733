package edge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/testenv"
	"seckill/stock"
)

// Attacks on what an edge knows of tickets across a Redis restart that
// loses writes (roomView.observe, poll tokens naming the server): a
// private redis-server on a free port, killed with SIGKILL and started
// again from its last snapshot.

// privateRedis is a redis-server of the test's own, without persistence
// but an explicit SAVE (the snapshot a restart loads).
type privateRedis struct {
	port int
	dir  string
	cmd  *exec.Cmd
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	testenv.RedisURL(t) // skipped without the test servers, like every Redis test
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("the test servers run but redis-server is not on PATH: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	r := &privateRedis{port: port, dir: t.TempDir()}
	r.start(t, bin)
	t.Cleanup(func() { r.kill() })
	return r
}

func (r *privateRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *privateRedis) start(t *testing.T, bin string) {
	t.Helper()
	r.cmd = exec.Command(bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", r.dir, "--dbfilename", "dump.rdb", "--logfile", filepath.Join(r.dir, "log"))
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer c.Close()
	testenv.Eventually(t, 10*time.Second, "redis-server answers", func() bool {
		return c.Ping(context.Background()).Err() == nil
	})
}

func (r *privateRedis) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill() // SIGKILL: no save on the way out
		_ = r.cmd.Wait()
	}
}

// restart kills the server and starts it again from its last SAVE: the
// writes since are lost, and it has another run_id.
func (r *privateRedis) restart(t *testing.T) {
	t.Helper()
	r.kill()
	bin, _ := exec.LookPath("redis-server")
	r.start(t, bin)
}

type holdKey struct{}

// holdBeforeKey: the command is held before it is sent.
type holdBeforeKey struct{}

// holdHook holds the reply of a command whose context carries a channel
// (holdKey) until that channel is closed, after telling reached.
type holdHook struct{ reached chan struct{} }

func (h holdHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h holdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if release, ok := ctx.Value(holdBeforeKey{}).(chan struct{}); ok {
			h.reached <- struct{}{}
			<-release
		}
		err := next(ctx, cmd)
		if release, ok := ctx.Value(holdKey{}).(chan struct{}); ok && err == nil {
			h.reached <- struct{}{}
			<-release
		}
		return err
	}
}
func (h holdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestQueueRestartLostTickets: Redis is killed and started again from a
// snapshot without tickets 3 and 4 (joined after it). Ticket 4 was known
// waiting at the edge (a fresh token, polls answered from the view);
// ticket 3's join ran on the old server, and its reply reached the edge
// only after the edge had seen the new server (a slow request): its
// token must not name the new server, which never had it (it would stand
// there for a recorded, confirmed poll, and every poll of the lost ticket
// after would go unchecked, ZADD XX, and count as confirmed: answered
// waiting from the view for as long as it polls). After the edge has seen
// the new server, each lost ticket is answered waiting from the view at
// most once (its next poll, while that poll is checked), then by the
// script (none); ticket 2, in the snapshot, stays waiting throughout.
func TestQueueRestartLostTickets(t *testing.T) {
	const abandon = 2 * time.Second
	srv := startPrivateRedis(t)
	hook := holdHook{reached: make(chan struct{}, 1)}
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr(), ReadTimeout: 300 * time.Millisecond, MaxRetries: 10,
		MinRetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 100 * time.Millisecond})
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	it := abandonItem(t, rdb, "r:", abandon)
	w := newWaitingRoom(rdb, "r:", time.Second, 0)
	w.tick = 20 * time.Millisecond
	var next float64
	w.place = func() float64 { next += 0.01; return next }
	q := &queueEnv{rdb: rdb, w: w, it: it}
	sign := func(u int64, st queueStatus) pollToken { // as answerQueue signs it
		tk := q.token(t, u, st)
		tk.Issued, tk.Run = st.Now, st.Run
		return tk
	}
	q.join(t, 1) // the head, kept by the script
	two := sign(2, q.join(t, 2))
	if err := rdb.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	four := sign(4, q.join(t, 4))
	old := w.runOf(it.ID)
	for range 3 { // 4 known at this edge: its token, polls from the view
		if st, err := pollAt(ctx, w, it, four); err != nil || !st.FromView || st.State != qWaiting {
			t.Fatalf("user 4 before the restart: %+v %v", st, err)
		}
		time.Sleep(30 * time.Millisecond)
	}

	// 3 joins on the old server; its reply is held until the edge has seen
	// the new one.
	release := make(chan struct{})
	joined := make(chan queueStatus, 1)
	go func() {
		st, err := w.run(context.WithValue(ctx, holdKey{}, release), opJoin, it, 3, 1)
		if err != nil {
			t.Error(err)
		}
		joined <- st
	}()
	<-hook.reached
	srv.restart(t)
	restarted := time.Now()
	testenv.Eventually(t, 10*time.Second, "a step on the new server", func() bool {
		_, err := w.run(ctx, opStep, it, 0, 1)
		return err == nil
	})
	if w.runOf(it.ID) == old || w.runOf(it.ID) == "" {
		t.Fatalf("the edge still knows run %q (was %q)", w.runOf(it.ID), old)
	}
	close(release)
	three := sign(3, <-joined)
	if three.Run == w.runOf(it.ID) {
		t.Fatalf("user 3's token, joined on the old server, names the new one (%q)", three.Run)
	}

	// 3 and 4 poll every 30 ms (2 too) for abandon_after; the head by the
	// script.
	fromView := map[int64]int{}
	for end := time.Now().Add(abandon); time.Now().Before(end); {
		q.poll(t, 1)
		for _, tk := range []pollToken{two, three, four} {
			st, err := pollAt(ctx, w, it, tk)
			if err != nil {
				t.Fatalf("user %d: %v", tk.User, err)
			}
			if tk.User == 2 {
				if st.State != qWaiting {
					t.Fatalf("user 2, in the snapshot, %s after the restart: %+v", time.Since(restarted), st)
				}
				continue
			}
			if st.State == qWaiting {
				fromView[tk.User]++
			} else if st.State != qNone {
				t.Fatalf("user %d lost in the restart: %+v", tk.User, st)
			}
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Logf("answered waiting after the edge saw the new server: user 3 %d times, user 4 %d times", fromView[3], fromView[4])
	if fromView[3] > 1 || fromView[4] > 1 {
		t.Fatalf("lost tickets answered waiting after the edge saw the new server: user 3 %d times, user 4 %d (want at most once each)",
			fromView[3], fromView[4])
	}
}

// TestQueueRestartKnownInFlight: a run of the script carrying a known
// poll of ticket 4 (unchecked, ZADD XX) took it before Redis restarted
// without 4 and is sent after another run told the edge of the new
// server; 4 polled meanwhile (recorded again, checked at the next run).
// The in-flight run tells the new server's run_id, the one the edge knows
// now, but what it confirms is not of the server the poll was known on:
// 4 must not count as known waiting there (its polls would go unchecked
// and be confirmed, each, on a server that lost it).
func TestQueueRestartKnownInFlight(t *testing.T) {
	const abandon = 2 * time.Second
	srv := startPrivateRedis(t)
	hook := holdHook{reached: make(chan struct{}, 1)}
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr(), ReadTimeout: 300 * time.Millisecond, MaxRetries: 10,
		MinRetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 100 * time.Millisecond})
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	it := abandonItem(t, rdb, "r:", abandon)
	w := newWaitingRoom(rdb, "r:", time.Second, 0)
	var next float64
	w.place = func() float64 { next += 0.01; return next }
	q := &queueEnv{rdb: rdb, w: w, it: it}
	q.join(t, 1)
	if err := rdb.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	st := q.join(t, 4)
	four := q.token(t, 4, st)
	four.Issued, four.Run = st.Now, st.Run
	w.tick, w.stale = time.Hour, time.Hour // the view is refreshed only when the test says
	if _, err := w.run(ctx, opStep, it, 0, 1); err != nil {
		t.Fatal(err)
	}
	poll := func() {
		t.Helper()
		if st, err := pollAt(ctx, w, it, four); err != nil || !st.FromView {
			t.Fatalf("user 4: %+v %v", st, err)
		}
	}
	time.Sleep(time.Until(st.Now.Add(recordEvery(it) + 50*time.Millisecond)))
	poll() // recorded, known (its token), held
	v := w.view(it.ID)
	v.mu.Lock()
	if len(v.seen) != 1 || v.seen[0].known.IsZero() {
		t.Fatalf("held: %+v", v.seen)
	}
	v.mu.Unlock()
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() { // takes the held poll, sent after the restart
		_, err := w.run(context.WithValue(ctx, holdBeforeKey{}, release), opPoll, it, 1, 1)
		done <- err
	}()
	<-hook.reached
	srv.restart(t)
	testenv.Eventually(t, 10*time.Second, "a step on the new server", func() bool {
		_, err := w.run(ctx, opStep, it, 0, 1)
		return err == nil
	})
	poll() // recorded again (the edge forgot it), checked at the next run
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	r, ok := v.recorded[recKey{user: 4, place: four.Place}]
	v.mu.Unlock()
	if ok && !r.known.IsZero() {
		t.Fatalf("user 4, lost in the restart, counts as known waiting on the new server since %s", r.known)
	}
}

// TestQueueRecordQuietEdge: a poll an edge answered from a view another
// poll had just refreshed waits in the edge for its next script run; on an
// edge that then gets no poll (a quiet edge, random routing), nothing ran
// it: the ticket, polling every 0.95 × abandon_after with every edge
// running, was dropped 0.85 × abandon_after after a poll (Redis's last
// poll of it was its record at the other edge, 1.5 × abandon_after
// before). The edge hands over what it holds within a tick or so whether
// or not polls come (waitingRoom.flushPolls).
func TestQueueRecordQuietEdge(t *testing.T) {
	const abandon = 2 * time.Second
	q, toks := recordEnv(t, abandon, 2)
	ctx, cancel := context.WithCancel(context.Background())
	ws := q.edges(3, 20*time.Millisecond)
	a, b, y := ws[0], ws[1], ws[2] // y polls the head (steps: drops)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, w := range []*waitingRoom{a, b} {
		wg.Go(func() { w.flushPolls(ctx, func() float64 { return 1 }) })
	}
	poll := func(w *waitingRoom) queueStatus {
		t.Helper()
		st, err := pollAt(ctx, w, q.it, toks[2])
		if err != nil || st.State != qWaiting {
			t.Fatalf("user 2: %+v %v", st, err)
		}
		return st
	}
	held := func(w *waitingRoom) int {
		v := w.view(q.it.ID)
		v.mu.Lock()
		defer v.mu.Unlock()
		return len(v.seen)
	}
	if st := poll(a); !st.FromView { // a's first: a step, then recorded, handed over at a's next run
		t.Fatalf("user 2: %+v", st)
	}
	if _, err := a.run(ctx, opStep, q.it, 0, 1); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	at := func(f float64) { q.keepHead(t, y, time.Until(t0.Add(time.Duration(f*float64(abandon))))) }
	at(0.45)
	poll(a) // not recorded: a recorded it less than recordEvery ago
	at(0.75)
	if _, err := b.run(ctx, opStep, q.it, 0, 1); err != nil { // b's view fresh
		t.Fatal(err)
	}
	poll(b) // recorded, held by b (its view is fresh); b gets no poll after
	if h := held(b); h != 1 && h != 0 {
		t.Fatalf("b holds %d polls", h)
	}
	at(1.6) // Redis's record at a is 1.6 × abandon_after old; the last poll 0.85 ×
	if !q.waitingNow(t, 2) {
		t.Fatalf("user 2, polling every 0.95 × abandon_after, dropped 0.85 × abandon_after after its poll at a quiet edge")
	}
	if d := q.seenScore(t, q.rdb, 2).Sub(t0.Add(abandon * 3 / 4)); d < 0 || d > 100*time.Millisecond {
		t.Fatalf("Redis's last poll of user 2 is %s after its poll at b", d)
	}
	poll(a)
}

// TestQueueKnownThreeEdgesFaults: 30 tickets poll three edges at random
// with v3 tokens as answerQueue signs them (a token of a script's answer
// counts as a recorded, confirmed poll; known tickets' polls go
// unchecked), one edge behind a proxy that adds latency past the read
// timeout or loses replies (go-redis sends the script again) most of the
// time. Every ticket polls every 0 to 0.6 × abandon_after (a poll that
// fails is made again at the next edge); half of them stop once for
// 2 × abandon_after, then poll again. A ticket whose polls came at most
// abandon_after apart is never dropped (Redis, after each of its polls);
// one that stopped is dropped, and once it polls again each edge answers
// it waiting from its view at most twice (its first poll there, checked,
// and one made while that check was on its way).
func TestQueueKnownThreeEdgesFaults(t *testing.T) {
	const abandon = 2 * time.Second
	const n = 30
	f := testenv.RedisBehindProxy(t)
	ctx, cancel := context.WithCancel(context.Background())
	it := abandonItem(t, f.Direct, f.Prefix, abandon)
	var ws [3]*waitingRoom
	for i, c := range []*redis.Client{f.Client, f.Direct, f.Direct} {
		ws[i] = newWaitingRoom(c, f.Prefix, time.Second, 0)
		ws[i].tick = 20 * time.Millisecond
	}
	var next float64
	ws[1].place = func() float64 { next += 0.001; return next }
	q := &queueEnv{rdb: f.Direct, w: ws[1], it: it}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, w := range ws {
		wg.Go(func() { w.flushPolls(ctx, func() float64 { return 1 }) })
	}
	sign := func(u int64, st queueStatus) pollToken {
		tk := q.token(t, u, st)
		tk.Issued, tk.Run = st.Now, st.Run
		return tk
	}
	if _, err := ws[1].run(ctx, opJoin, it, 1, 1); err != nil { // the head
		t.Fatal(err)
	}
	toks := make([]pollToken, n+2)
	for u := int64(2); u <= n+1; u++ {
		st, err := ws[1].run(ctx, opJoin, it, u, 1)
		if err != nil {
			t.Fatal(err)
		}
		toks[u] = sign(u, st)
	}
	start := time.Now()
	end := start.Add(5 * abandon)
	var tg sync.WaitGroup // the head, the faults, the tickets
	tg.Go(func() {        // the head by the script, a step each time
		for time.Now().Before(end) && ctx.Err() == nil {
			if _, err := ws[1].run(ctx, opPoll, it, 1, 1); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(30 * time.Millisecond)
		}
	})
	tg.Go(func() { // the proxied edge's Redis: fine, slow, past the read timeout, or losing replies
		rng := rand.New(rand.NewPCG(16, 2))
		for time.Now().Before(end) && ctx.Err() == nil {
			f.Proxy.SetLatency(0)
			f.Proxy.DropReplies(false)
			switch rng.IntN(4) {
			case 1:
				f.Proxy.SetLatency(150 * time.Millisecond)
			case 2:
				f.Proxy.SetLatency(500 * time.Millisecond)
			case 3:
				f.Proxy.DropReplies(true)
			}
			time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond)
		}
		f.Proxy.SetLatency(0)
		f.Proxy.DropReplies(false)
	})
	type result struct {
		polls, views, errs, late int
		dropped                  bool
		viewsAfter               [3]int
	}
	res := make([]result, n+2)
	for u := int64(2); u <= n+1; u++ {
		tg.Go(func() {
			r := &res[u]
			rng := rand.New(rand.NewPCG(16, uint64(u)))
			tok, last := toks[u], start
			var stop, resume time.Time
			if u%2 == 0 {
				stop = start.Add(abandon/2 + time.Duration(rng.Int64N(int64(abandon))))
				resume = stop.Add(2 * abandon)
			}
			for ctx.Err() == nil {
				next := time.Now().Add(time.Duration(rng.Int64N(int64(abandon * 6 / 10))))
				if !stop.IsZero() && next.After(stop) && !r.dropped {
					next = resume
				}
				if next.After(end) {
					return
				}
				time.Sleep(time.Until(next))
				if !resume.IsZero() && !r.dropped && time.Now().After(resume) {
					r.dropped = true
					if q.waitingNow(t, u) {
						t.Errorf("user %d, not polled for 2 × abandon_after, still waiting", u)
						return
					}
				}
				var st queueStatus
				var err error
				e := rng.IntN(3)
				for try := 0; try < 3; try++ { // a poll that fails is made again at another edge
					if st, err = pollAt(ctx, ws[e], it, tok); err == nil {
						break
					}
					r.errs++
					e = (e + 1) % 3
				}
				if err != nil {
					t.Errorf("user %d: %v", u, err)
					return
				}
				r.polls++
				if st.FromView {
					r.views++
				}
				switch {
				case r.dropped:
					if st.State == qWaiting {
						r.viewsAfter[e]++
					}
				case time.Since(last) > abandon: // the test's own polls came late (a slow edge)
					r.late++
				case st.State != qWaiting || !q.waitingNow(t, u):
					t.Errorf("user %d, %s after its last poll, at edge %d: %+v, waiting in Redis %v",
						u, time.Since(last), e, st, q.waitingNow(t, u))
					return
				}
				if !st.FromView && st.HasPlace && st.State == qWaiting {
					tok = sign(u, st)
				}
				last = time.Now()
			}
		})
	}
	tg.Wait()
	var polls, views, errs, late, dropped, worst int
	for u := int64(2); u <= n+1; u++ {
		r := res[u]
		polls, views, errs, late = polls+r.polls, views+r.views, errs+r.errs, late+r.late
		if r.dropped {
			dropped++
		}
		for _, c := range r.viewsAfter {
			worst = max(worst, c)
		}
	}
	t.Logf("%d polls, %d from the views, %d failed (made again elsewhere), %d more than abandon_after after the last (not checked); %d dropped and back, answered waiting at most %d times by one edge after",
		polls, views, errs, late, dropped, worst)
	if dropped != n/2 || worst > 2 || late > polls/10 {
		t.Fatalf("%d dropped (want %d); a dropped ticket answered waiting by one edge up to %d times after it polled again; %d late", dropped, n/2, worst, late)
	}
}

// TestQueueRestartThreeEdges: 20 tickets poll three edges at random (v3
// tokens as answerQueue signs them) every 0 to 300 ms while Redis is
// killed and started again from a snapshot that has tickets 2..11 and not
// 12..21. The survivors are never answered anything but waiting (nor
// dropped); once an edge has seen the new server, it answers each lost
// ticket waiting from its view at most twice (the poll that is checked,
// and one made while that check was on its way), then the script answers
// none.
func TestQueueRestartThreeEdges(t *testing.T) {
	const abandon = 2 * time.Second
	const n = 20
	srv := startPrivateRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	it := seckill.Item{ID: 7, Name: "q", Stock: 10, StartsAt: time.Now().Add(time.Hour), EndsAt: time.Now().Add(2 * time.Hour),
		SaleRules: seckill.SaleRules{Allocation: seckill.AllocationQueue, AbandonAfter: seckill.Duration(abandon)}}
	var ws [3]*waitingRoom
	for i := range ws {
		rdb := redis.NewClient(&redis.Options{Addr: srv.addr(), ReadTimeout: 300 * time.Millisecond, MaxRetries: 3,
			MinRetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 100 * time.Millisecond})
		t.Cleanup(func() { _ = rdb.Close() })
		ws[i] = newWaitingRoom(rdb, "r:", time.Second, 0)
		ws[i].tick = 20 * time.Millisecond
	}
	direct := redis.NewClient(&redis.Options{Addr: srv.addr()})
	t.Cleanup(func() { _ = direct.Close() })
	if err := stock.New(direct, "r:").LoadItem(ctx, it, nil, nil); err != nil {
		t.Fatal(err)
	}
	var next float64
	ws[0].place = func() float64 { next += 0.01; return next }
	q := &queueEnv{rdb: direct, w: ws[0], it: it}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, w := range ws {
		wg.Go(func() { w.flushPolls(ctx, func() float64 { return 1 }) })
	}
	sign := func(u int64, st queueStatus) pollToken {
		tk := q.token(t, u, st)
		tk.Issued, tk.Run = st.Now, st.Run
		return tk
	}
	toks := make([]pollToken, n+2)
	for u := int64(1); u <= n+1; u++ {
		if u == 12 {
			if err := direct.Save(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		st, err := ws[0].run(ctx, opJoin, it, u, 1)
		if err != nil {
			t.Fatal(err)
		}
		if u > 1 {
			toks[u] = sign(u, st)
		}
	}
	old := ws[0].runOf(it.ID)
	start := time.Now()
	end := start.Add(3 * abandon)
	var tg sync.WaitGroup
	tg.Go(func() { // the head by the script
		for time.Now().Before(end) {
			_, _ = ws[0].run(ctx, opPoll, it, 1, 1)
			time.Sleep(30 * time.Millisecond)
		}
	})
	type result struct {
		polls, failed, views int
		after                [3]int // lost: answered waiting by each edge after it saw the new server
		bad                  string
		lastWaiting          time.Time // lost: answered waiting
	}
	res := make([]result, n+2)
	for u := int64(2); u <= n+1; u++ {
		tg.Go(func() {
			r := &res[u]
			rng := rand.New(rand.NewPCG(7, uint64(u)))
			tok := toks[u]
			for time.Now().Before(end) {
				time.Sleep(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
				e := rng.IntN(3)
				saw := ws[e].runOf(it.ID) != old
				st, err := pollAt(ctx, ws[e], it, tok)
				if err != nil {
					r.failed++ // Redis away: 503
					continue
				}
				r.polls++
				if st.FromView {
					r.views++
				}
				switch {
				case u <= 11 && st.State != qWaiting:
					r.bad = fmt.Sprintf("survivor %d at edge %d, %s after the start: %+v", u, e, time.Since(start), st)
					return
				case u > 11 && st.State == qWaiting:
					r.lastWaiting = time.Now()
					if saw {
						r.after[e]++
					}
				case u > 11 && st.State != qWaiting && st.State != qNone:
					r.bad = fmt.Sprintf("lost ticket %d: %+v", u, st)
					return
				}
				if !st.FromView && st.HasPlace && st.State == qWaiting {
					tok = sign(u, st)
				}
			}
		})
	}
	time.Sleep(abandon / 2)
	srv.restart(t)
	restarted := time.Now()
	tg.Wait()
	var polls, failed, views, worst int
	var last time.Duration
	for u := int64(2); u <= n+1; u++ {
		r := res[u]
		if r.bad != "" {
			t.Error(r.bad)
		}
		polls, failed, views = polls+r.polls, failed+r.failed, views+r.views
		if !r.lastWaiting.IsZero() {
			last = max(last, r.lastWaiting.Sub(restarted))
		}
		for _, c := range r.after {
			worst = max(worst, c)
		}
	}
	for u := int64(2); u <= 11; u++ {
		if !q.waitingNow(t, u) {
			t.Errorf("survivor %d dropped", u)
		}
	}
	t.Logf("%d polls (%d from the views), %d failed while Redis was away (restarted %s after the start); a lost ticket answered waiting at most %d times by one edge after it saw the new server; the last %s after the restart",
		polls, views, failed, restarted.Sub(start), worst, last)
	if worst > 2 || last > time.Second {
		t.Fatalf("a lost ticket answered waiting %d times by one edge after it saw the new server, the last %s after the restart (want at most 2, within the view's stale second)",
			worst, last)
	}
}
