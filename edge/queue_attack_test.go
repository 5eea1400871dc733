package edge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
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

// Attacks on the waiting room's views (queue_view.go): several edges,
// faults of Redis, clients that hang up, bots.

// edges returns n waiting rooms on the queue's Redis and key prefix, as n
// edges with the same Redis see it, each with its own views.
func (q *queueEnv) edges(n int, tick time.Duration) []*waitingRoom {
	ws := make([]*waitingRoom, n)
	for i := range ws {
		ws[i] = newWaitingRoom(q.rdb, q.w.prefix, time.Second, 0)
		ws[i].tick = tick
	}
	return ws
}

// pollAt is a poll as pollQueue makes it at edge w: from the view with the
// token, else by the script.
func pollAt(ctx context.Context, w *waitingRoom, it seckill.Item, tok pollToken) (queueStatus, error) {
	if st, ok, err := w.fromView(ctx, it, tok, 1); ok || err != nil {
		return st, err
	}
	return w.run(ctx, opPoll, it, tok.User, 1)
}

// roomState reads the queue's counters and Redis's clock in one script
// (an atomic snapshot).
func (q *queueEnv) roomState(t *testing.T) (admitted, waiting, active, left, nowMS int64) {
	t.Helper()
	qk := rkeys.Space(q.w.prefix).Queue(q.it.ID)
	ik := rkeys.Space(q.w.prefix).Item(q.it.ID)
	v, err := q.rdb.Eval(context.Background(), `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {tonumber(redis.call('HGET', KEYS[1], 'admitted') or '0'), redis.call('ZCARD', KEYS[2]),
  redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf'), tonumber(redis.call('GET', KEYS[4]) or '0'), now}`,
		[]string{qk.State, qk.Waiting, qk.Active, ik.Stock}).Int64Slice()
	if err != nil {
		t.Fatal(err)
	}
	return v[0], v[1], v[2], v[3], v[4]
}

// TestQueueViewsThreeEdges: 300 tickets (150 in the pre-queue, 150 after
// the start) poll every 200 ms with their tokens, each poll at a random one
// of three edges (answered from that edge's view, or by the script at the
// head); every tenth stops polling after half a second. Admissions follow
// new_users_per_minute by Redis's clock within ±5 %, no polling ticket is
// dropped as abandoned although most of its polls never reach Redis
// themselves (abandon_after 1.5 s), every one that stopped is dropped
// (unless admitted before), and the admitted never outnumber the units
// left.
func TestQueueViewsThreeEdges(t *testing.T) {
	const users, rate = 300, 1200 // 20 a second
	starts := time.Now().Add(500 * time.Millisecond)
	q := newQueueEnv(t, 1000, starts, seckill.SaleRules{NewUsersPerMinute: rate, AbandonAfter: seckill.Duration(1500 * time.Millisecond)})
	ws := q.edges(3, queueTick)
	ctx := context.Background()
	toks := make([]pollToken, users+1)
	for u := int64(1); u <= users; u++ {
		if u == users/2+1 {
			time.Sleep(time.Until(starts) + 20*time.Millisecond)
		}
		s, err := ws[u%3].run(ctx, opJoin, q.it, u, 1)
		if err != nil {
			t.Fatal(err)
		}
		toks[u] = q.token(t, u, s)
	}
	var (
		mu       sync.Mutex
		admitted = map[int64]bool{}
		viewed   int
		asked    int
		wg       sync.WaitGroup
	)
	began := time.Now()
	stop := began.Add(3500 * time.Millisecond)
	quits := func(u int64) bool { return u%10 == 0 && time.Since(began) > 500*time.Millisecond }
	for g := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for time.Now().Before(stop) {
				for u := int64(1 + g); u <= users; u += 6 {
					mu.Lock()
					done := admitted[u]
					mu.Unlock()
					if done || quits(u) {
						continue
					}
					st, err := pollAt(ctx, ws[rng.IntN(3)], q.it, toks[u])
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					switch {
					case st.State == qAdmitted:
						admitted[u] = true
					case st.State != qWaiting:
						t.Errorf("user %d: %+v", u, st)
					}
					if st.FromView {
						viewed++
					} else {
						asked++
					}
					mu.Unlock()
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
	// A sampler: the admitted and unexpired never above the units left.
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for time.Now().Before(stop) {
			_, _, active, left, _ := q.roomState(t)
			if active > left {
				t.Errorf("%d admitted and unexpired, %d units left", active, left)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	wg.Wait()
	<-sampled
	if t.Failed() {
		return
	}
	total, waiting, _, _, _ := q.roomState(t)
	last, err := q.rdb.HGet(ctx, rkeys.Space(q.w.prefix).Queue(q.it.ID).State, "last").Int64()
	if err != nil {
		t.Fatal(err)
	}
	want := float64(last-starts.UnixMilli()) * rate / 60000
	t.Logf("%d polls from the views, %d by the script; %d admitted in %d ms of Redis time (want %.1f), %d waiting",
		viewed, asked, total, last-starts.UnixMilli(), want, waiting)
	if viewed < 4*asked {
		t.Errorf("only %d of %d polls answered from the views", viewed, viewed+asked)
	}
	if f := float64(total); f < want*0.95 || f > want*1.05 {
		t.Errorf("admitted %d, want %.1f ± 5 %%", total, want)
	}
	qk := rkeys.Space(q.w.prefix).Queue(q.it.ID)
	var lost, kept int
	for u := int64(1); u <= users; u++ {
		id := strconv.FormatInt(u, 10)
		_, werr := q.rdb.ZScore(ctx, qk.Waiting, id).Result()
		_, aerr := q.rdb.ZScore(ctx, qk.Active, id).Result()
		switch in := werr == nil || aerr == nil; {
		case u%10 != 0 && !in:
			lost++
		case u%10 == 0 && werr == nil:
			kept++
		}
	}
	if lost > 0 || kept > 0 {
		t.Errorf("%d polling tickets dropped as abandoned, %d that stopped polling still waiting", lost, kept)
	}
	// Every admitted ticket was told so (its next poll reached the script).
	mu.Lock()
	told := int64(len(admitted))
	mu.Unlock()
	if told > total || told < total-rate/60 {
		t.Errorf("%d told admitted, %d admitted", told, total)
	}
}

// behindHead joins users 1..n and returns the token of the last in line
// (never the head).
func (q *queueEnv) behindHead(t *testing.T, n int64) pollToken {
	t.Helper()
	var last pollToken
	for u := int64(1); u <= n; u++ {
		tok := q.token(t, u, q.join(t, u))
		if u == 1 || tok.Place > last.Place {
			last = tok
		}
	}
	return last
}

// waitTick waits until the view of w is at least a tick old.
func waitTick(t *testing.T, w *waitingRoom, item int64) time.Time {
	t.Helper()
	v := w.view(item)
	v.mu.Lock()
	fetched := v.view.Fetched
	v.mu.Unlock()
	for time.Since(fetched) < w.tick {
		time.Sleep(w.tick / 4)
	}
	return fetched
}

// TestQueueViewRefreshOutlivesHangUp: the poll that refreshes a view does
// it for every poll of the edge; its client hanging up (its context
// cancelled) must not cancel the refresh. Before the fix a client that
// hung up as soon as it had sent its poll cancelled the script run: the
// view was not refreshed, the polls it held were not recorded, and a bot
// doing so every tick sent every other poll to Redis after stale.
func TestQueueViewRefreshOutlivesHangUp(t *testing.T) {
	q := newQueueEnv(t, 10, time.Now().Add(time.Hour), seckill.SaleRules{})
	q.w.tick = 50 * time.Millisecond
	tok := q.behindHead(t, 3)
	if _, ok, _ := q.w.fromView(context.Background(), q.it, tok, 1); !ok {
		t.Fatal("not answered from a fresh view")
	}
	before := waitTick(t, q.w, q.it.ID)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if st, ok, _ := q.w.fromView(gone, q.it, tok, 1); !ok || st.State != qWaiting {
		t.Fatalf("a poll whose client hung up: %+v %v", st, ok)
	}
	v := q.w.view(q.it.ID)
	v.mu.Lock()
	after, seen, refreshing := v.view.Fetched, len(v.seen), v.refreshing
	v.mu.Unlock()
	if !after.After(before) || seen != 0 || refreshing {
		t.Fatalf("after a refresh whose client hung up: view fetched %v (was %v), %d polls unrecorded, refreshing %v",
			after, before, seen, refreshing)
	}
}

// panicHook panics on the next command while armed.
type panicHook struct{ armed atomic.Bool }

func (h *panicHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *panicHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.CompareAndSwap(true, false) {
			panic("injected")
		}
		return next(ctx, cmd)
	}
}
func (h *panicHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestQueueViewRefreshPanics: a refresh that panics (net/http recovers the
// handler's panic and the edge goes on) leaves no refreshing flag behind.
// Before the fix the flag stayed set: the view was never refreshed again
// and every poll of that queue at that edge went to Redis after stale.
func TestQueueViewRefreshPanics(t *testing.T) {
	q := newQueueEnv(t, 10, time.Now().Add(time.Hour), seckill.SaleRules{})
	q.w.tick, q.w.stale = 20*time.Millisecond, 100*time.Millisecond
	tok := q.behindHead(t, 3)
	if _, ok, _ := q.w.fromView(context.Background(), q.it, tok, 1); !ok {
		t.Fatal("not answered from a fresh view")
	}
	h := &panicHook{}
	q.rdb.AddHook(h)
	waitTick(t, q.w, q.it.ID)
	h.armed.Store(true)
	func() {
		defer func() { _ = recover() }()
		q.w.fromView(context.Background(), q.it, tok, 1)
	}()
	time.Sleep(q.w.stale + 10*time.Millisecond)
	if st, ok, _ := q.w.fromView(context.Background(), q.it, tok, 1); !ok || st.State != qWaiting {
		t.Fatalf("after a refresh that panicked: %+v %v (refresh never ran again)", st, ok)
	}
}

// TestQueueViewRefreshReplyLost: the reply of the script run that
// refreshes a view (and records its polls, and admits) is lost; go-redis
// sends it again. The poll is answered, the polls it carried are recorded
// (none left over, no refreshing flag), nobody is admitted twice, and the
// admissions stay exactly the credit of the time elapsed by Redis's clock.
func TestQueueViewRefreshReplyLost(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	const rate = 600 // 10 a second
	starts := time.Now().Add(300 * time.Millisecond)
	it := seckill.Item{ID: 7, Name: "q", Stock: 1000, StartsAt: starts, EndsAt: starts.Add(time.Hour),
		SaleRules: seckill.SaleRules{Allocation: seckill.AllocationQueue, NewUsersPerMinute: rate}}
	if err := stock.New(f.Direct, f.Prefix).LoadItem(context.Background(), it, nil, nil); err != nil {
		t.Fatal(err)
	}
	w := newWaitingRoom(f.Client, f.Prefix, time.Second, 0)
	w.tick = 50 * time.Millisecond
	q := &queueEnv{rdb: f.Direct, w: w, it: it}
	ctx := context.Background()
	tok := q.behindHead(t, 100)
	if _, ok, err := w.fromView(ctx, it, tok, 1); !ok || err != nil {
		t.Fatalf("not answered from a fresh view: %v", err)
	}
	time.Sleep(time.Until(starts) + time.Second)
	waitTick(t, w, it.ID)
	qk := rkeys.Space(f.Prefix).Queue(it.ID)
	polled := func(ctx context.Context) float64 {
		s, _ := f.Direct.ZScore(ctx, qk.Seen, strconv.FormatInt(tok.User, 10)).Result()
		return s
	}
	// the ticket was recorded at its first poll above: forget that, so this
	// poll is handed to Redis again (roomView.record) by the refresh whose
	// reply is lost
	v := w.view(it.ID)
	v.mu.Lock()
	delete(v.recorded, seenOf(tok).key())
	v.mu.Unlock()
	before := polled(ctx)
	type answer struct {
		st queueStatus
		ok bool
	}
	a, err := testenv.LoseReply(t, f, func(ctx context.Context) bool { return polled(ctx) > before }, func() (answer, error) {
		st, ok, err := w.fromView(ctx, it, tok, 1)
		return answer{st, ok}, err
	})
	if err != nil || !a.ok || a.st.State != qWaiting {
		t.Fatalf("the poll whose refresh lost its reply: %+v %v", a, err)
	}
	v.mu.Lock()
	seen, refreshing := len(v.seen), v.refreshing
	v.mu.Unlock()
	if seen != 0 || refreshing {
		t.Fatalf("after the retried refresh: %d polls unrecorded, refreshing %v", seen, refreshing)
	}
	st, err := f.Direct.HMGet(ctx, qk.State, "admitted", "last").Result()
	if err != nil {
		t.Fatal(err)
	}
	admitted, _ := strconv.ParseInt(st[0].(string), 10, 64)
	last, _ := strconv.ParseInt(st[1].(string), 10, 64)
	active, err := f.Direct.ZCard(ctx, qk.Active).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := (last - starts.UnixMilli()) * rate / 60000
	t.Logf("%d admitted, %d in the active set, credit of %d ms: %d", admitted, active, last-starts.UnixMilli(), want)
	if admitted != want || active != admitted {
		t.Fatalf("%d admitted (%d in the active set), want %d: the credit of %d ms", admitted, active, want, last-starts.UnixMilli())
	}
}

// TestQueueViewNewArrival: a ticket that arrived after the view was taken
// (its place past the view's last) is told a position after everyone the
// view knows, and never a position past the number waiting (before the
// fix: position 4 of 3 waiting, a progress bar past its end).
func TestQueueViewNewArrival(t *testing.T) {
	q := newQueueEnv(t, 10, time.Now().Add(-time.Second), seckill.SaleRules{})
	q.w.tick = time.Hour // the view is taken once
	ctx := context.Background()
	join := func(u int64) pollToken {
		s, err := q.w.run(ctx, opJoin, q.it, u, 0) // load factor 0: nobody admitted
		if err != nil {
			t.Fatal(err)
		}
		return q.token(t, u, s)
	}
	for u := int64(1); u <= 3; u++ {
		join(u)
	}
	if st, ok, err := q.w.fromView(ctx, q.it, join(4), 0); !ok || err != nil || st.Position != 4 || st.Waiting != 4 {
		t.Fatalf("the fourth, in the view: %+v %v %v", st, ok, err)
	}
	for u := int64(5); u <= 6; u++ {
		st, ok, err := q.w.fromView(ctx, q.it, join(u), 0)
		if !ok || err != nil || st.Position <= 4 || st.Position > st.Waiting {
			t.Fatalf("arrival %d after the view: %+v %v %v", u, st, ok, err)
		}
	}
}

// TestQueueViewSoldOutAndBack: three units, three admitted who buy them,
// seventeen waiting with tokens. Within a few ticks the views tell every
// waiting ticket sold_out. One order fails and its unit comes back after a
// step took its buyer off the admitted (it held a unit): the buyer is
// still admitted (its pass is valid), so the unit is its own until its
// admission ends; then exactly the next one is admitted, and the views
// tell the others waiting again. Before the fix the next one was admitted
// at once, next to the buyer whose pass was still valid (two admitted
// without a unit for one unit left), and the buyer was told expired.
func TestQueueViewSoldOutAndBack(t *testing.T) {
	const session = 1500 * time.Millisecond
	q := newQueueEnv(t, 3, time.Now().Add(-time.Second), seckill.SaleRules{NewUsersPerMinute: 600_000, SessionDuration: seckill.Duration(session)})
	ws := q.edges(2, 20*time.Millisecond)
	ctx := context.Background()
	toks := map[int64]pollToken{}
	var until2 time.Time
	for u := int64(1); u <= 20; u++ {
		s := q.join(t, u)
		if u <= 3 {
			if s.State != qAdmitted {
				t.Fatalf("user %d: %+v", u, s)
			}
			if u == 2 {
				until2 = s.Until
			}
			continue
		}
		toks[u] = q.token(t, u, s)
	}
	for u := int64(1); u <= 3; u++ {
		if r, err := q.st.Reserve(ctx, q.it.ID, seckill.Account{ID: u}, fmt.Sprintf("r%d", u), fmt.Sprintf("ref%d", u)); err != nil || r.Outcome != stock.Queued {
			t.Fatalf("reserving for %d: %+v %v", u, r, err)
		}
	}
	everyone := func(state string, from int64) bool { // from: behind the head
		for u := from; u <= 20; u++ {
			st, err := pollAt(ctx, ws[u%2], q.it, toks[u])
			if err != nil {
				t.Fatal(err)
			}
			if st.State != state || !st.FromView {
				return false
			}
		}
		return true
	}
	testenvEventuallyState(t, func() bool { return everyone(qSoldOut, 5) })
	if st, err := pollAt(ctx, ws[0], q.it, toks[4]); err != nil || st.State != qSoldOut || st.FromView {
		t.Fatalf("the head, sold out: %+v %v", st, err)
	}
	// A step while the three hold their units: they need no slot.
	qk := rkeys.Space(q.w.prefix).Queue(q.it.ID)
	testenvEventuallyState(t, func() bool {
		if _, err := ws[0].run(ctx, opStep, q.it, 0, 1); err != nil {
			t.Fatal(err)
		}
		n, err := q.rdb.ZCard(ctx, qk.Active).Result()
		return err == nil && n == 0
	})
	if ok, err := q.st.Release(ctx, q.it.ID, 2, "ref2"); !ok || err != nil {
		t.Fatalf("releasing: %v %v", ok, err)
	}
	// While 2's admission lasts: 2 is admitted, 4 waits first in line.
	for time.Until(until2) > 100*time.Millisecond {
		s2, err := ws[0].run(ctx, opPoll, q.it, 2, 1)
		if err != nil {
			t.Fatal(err)
		}
		st, err := pollAt(ctx, ws[1], q.it, toks[4])
		if err != nil {
			t.Fatal(err)
		}
		if time.Until(until2) > 100*time.Millisecond && (s2.State != qAdmitted || st.State != qWaiting || st.Position != 1) {
			t.Fatalf("%v before the end of 2's admission: 2 %+v, 4 %+v", time.Until(until2), s2, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	testenvEventuallyState(t, func() bool {
		st, err := pollAt(ctx, ws[1], q.it, toks[4])
		return err == nil && st.State == qAdmitted
	})
	testenvEventuallyState(t, func() bool { return everyone(qWaiting, 6) })
	// One unit, one admitted without it: the next one waits, first in line.
	for range 5 {
		st, err := ws[0].run(ctx, opPoll, q.it, 5, 1)
		if err != nil || st.State != qWaiting || st.Position != 1 {
			t.Fatalf("the next one with the unit's one taker admitted: %+v %v", st, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestQueueViewAdmittedTokens: the token a ticket had while waiting, shown
// after the ticket was admitted, after its admission expired, and after it
// joined again, is never answered "waiting" at its old place by a view of
// any edge more than once (the edge that answered it learns at its next
// run that the ticket is gone): the script answers admitted, expired, and
// the new place.
func TestQueueViewAdmittedTokens(t *testing.T) {
	q := newQueueEnv(t, 10, time.Now().Add(-time.Second), seckill.SaleRules{NewUsersPerMinute: 600_000, TotalActiveUsers: 1,
		SessionDuration: seckill.Duration(300 * time.Millisecond)})
	q.w.grace = 100 * time.Millisecond
	ws := q.edges(2, 20*time.Millisecond)
	for _, w := range ws {
		w.grace = q.w.grace
	}
	ctx := context.Background()
	var toks [6]pollToken
	for u := int64(1); u <= 5; u++ {
		s, err := q.w.run(ctx, opJoin, q.it, u, 0) // nobody admitted yet
		if err != nil {
			t.Fatal(err)
		}
		toks[u] = q.token(t, u, s)
	}
	views := 0
	check := func(when, want string) {
		t.Helper()
		for _, w := range ws {
			st, err := pollAt(ctx, w, q.it, toks[1])
			if err != nil {
				t.Fatal(err)
			}
			if st.FromView {
				views++
				continue
			}
			if st.State != want {
				t.Fatalf("%s: %+v, want %s", when, st, want)
			}
		}
	}
	// 1 is admitted (the step of a poll of another user).
	testenvEventuallyState(t, func() bool { return q.poll(t, 5).Admitted == 1 })
	check("admitted", qAdmitted)
	time.Sleep(350 * time.Millisecond) // the admission ends (300 ms)
	check("after the admission", qExpired)
	if s := q.join(t, 1); s.State != qWaiting || s.Place == toks[1].Place {
		t.Fatalf("joining again: %+v", s)
	}
	for range 3 {
		check("joined again at a new place", qWaiting)
		time.Sleep(30 * time.Millisecond)
	}
	if views > 2 {
		t.Fatalf("the old token answered from the views %d times", views)
	}
}
