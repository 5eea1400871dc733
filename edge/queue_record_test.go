package edge

import (
	"context"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"seckill"
	"seckill/internal/rkeys"
	"seckill/internal/testenv"
	"seckill/stock"
)

// Attacks on the recording of view-answered polls (roomView.record: an
// edge hands a ticket's poll to Redis at most once per quarter of
// abandon_after) and on the poll spread (queue_timing.go).

// recordEnv is a pre-queue on the real Redis with user 1 at the head
// (kept alive by polls of the script) and users 2.. behind it, in order.
func recordEnv(t *testing.T, abandon time.Duration, users int64) (*queueEnv, []pollToken) {
	t.Helper()
	q := newQueueEnv(t, 10, time.Now().Add(time.Hour), seckill.SaleRules{AbandonAfter: seckill.Duration(abandon)})
	q.w.tick = 20 * time.Millisecond
	var next float64
	q.w.place = func() float64 { next += 0.01; return next }
	toks := make([]pollToken, users+1)
	for u := int64(1); u <= users; u++ {
		toks[u] = q.token(t, u, q.join(t, u))
	}
	return q, toks
}

// keepHead polls the head by the script (a step each time, which drops the
// abandoned) every 50 ms until d has passed.
func (q *queueEnv) keepHead(t *testing.T, w *waitingRoom, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		if _, err := w.run(context.Background(), opPoll, q.it, 1, 1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQueueRecordIrregularPolls: a ticket whose polls are never more than
// half of abandon_after apart is never dropped, whatever their rhythm
// (docs/API.md). The worst rhythm: a poll recorded, one just under a
// quarter of abandon_after later (not recorded: this edge recorded the
// ticket less than a quarter ago), the next half of abandon_after after
// that. Polls up to abandon_after apart (the claim of docs/API.md before
// the fix) are not safe: after that unrecorded poll, a gap of 0.95 ×
// abandon_after leaves Redis's last poll of the ticket 1.15 ×
// abandon_after old, and the ticket is dropped.
func TestQueueRecordIrregularPolls(t *testing.T) {
	const abandon = 2 * time.Second
	q, toks := recordEnv(t, abandon, 3)
	ctx := context.Background()
	poll := func(u int64) queueStatus {
		t.Helper()
		st, err := pollAt(ctx, q.w, q.it, toks[u])
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// 2: recorded, then 0.2 A later not, then the gaps below.
	// 3: the same, with a gap of 0.95 A after the unrecorded poll.
	for _, u := range []int64{2, 3} {
		if st := poll(u); st.State != qWaiting || !st.FromView {
			t.Fatalf("user %d's first poll: %+v", u, st)
		}
	}
	t0 := time.Now()
	q.poll(t, 1) // hands both polls to Redis
	at := func(f float64) { q.keepHead(t, q.w, time.Until(t0.Add(time.Duration(f*float64(abandon))))) }
	at(0.2)
	for _, u := range []int64{2, 3} {
		v := q.w.view(q.it.ID)
		v.mu.Lock()
		before := len(v.seen)
		v.mu.Unlock()
		if st := poll(u); st.State != qWaiting || !st.FromView {
			t.Fatalf("user %d's second poll: %+v", u, st)
		}
		v.mu.Lock()
		after := len(v.seen)
		v.mu.Unlock()
		if after != before {
			t.Fatalf("user %d's poll 0.2 × abandon_after after its recorded one was recorded (%d polls held, were %d)", u, after, before)
		}
	}
	// from t0 + 0.2 A: 2 polls every half of abandon_after; 3 polls once,
	// 0.95 A after its unrecorded poll
	at(0.7)
	if st := poll(2); st.State != qWaiting {
		t.Fatalf("user 2, 0.5 × abandon_after after its last poll: %+v", st)
	}
	at(1.15)
	st3, waiting3 := poll(3), q.waitingNow(t, 3)
	for _, f := range []float64{1.2, 1.7, 2.2, 2.7} {
		at(f)
		if st := poll(2); st.State != qWaiting || !q.waitingNow(t, 2) {
			t.Fatalf("user 2, polling every half of abandon_after, at %.2f × abandon_after: %+v", f, st)
		}
	}
	if waiting3 || st3.State != qExpired && !st3.FromView { // the view may answer once before Redis tells it gone
		t.Fatalf("user 3, polled 0.95 × abandon_after after an unrecorded poll: %+v (Redis's last poll of it 1.15 × abandon_after old)", st3)
	}
}

// waitingNow tells whether user u still waits in Redis.
func (q *queueEnv) waitingNow(t *testing.T, u int64) bool {
	t.Helper()
	_, err := q.rdb.ZScore(context.Background(), rkeys.Space(q.w.prefix).Queue(q.it.ID).Waiting, strconv.FormatInt(u, 10)).Result()
	return err == nil
}

// TestQueueRecordLateDelivery: a poll answered from a view another poll
// had just refreshed waits in the edge (seen) for the edge's next script
// run; when that comes late (a quiet edge), the poll must still count at
// the time it was made, not when Redis hears of it: a ticket that stops
// is dropped at most abandon_after (and a step) after its last poll.
// Before the fix Redis counted it as polled at the late run: the ticket
// stayed 1.75 × abandon_after after its last poll.
func TestQueueRecordLateDelivery(t *testing.T) {
	const abandon = 2 * time.Second
	q, toks := recordEnv(t, abandon, 3)
	q.w.tick = 50 * time.Millisecond
	other := q.edges(1, 50*time.Millisecond)[0] // steps and the head's polls, not this edge's
	ctx := context.Background()
	waitTick(t, q.w, q.it.ID)
	if _, ok, err := q.w.fromView(ctx, q.it, toks[3], 1); !ok || err != nil { // refreshes the view
		t.Fatalf("user 3: %v %v", ok, err)
	}
	if _, ok, err := q.w.fromView(ctx, q.it, toks[2], 1); !ok || err != nil { // from the fresh view: held
		t.Fatalf("user 2: %v %v", ok, err)
	}
	last := time.Now()
	v := q.w.view(q.it.ID)
	v.mu.Lock()
	held := len(v.seen)
	v.mu.Unlock()
	if held != 1 {
		t.Fatalf("%d polls held, want user 2's", held)
	}
	q.keepHead(t, other, time.Until(last.Add(abandon*3/4)))
	if _, ok, err := q.w.fromView(ctx, q.it, toks[3], 1); !ok || err != nil { // this edge's next run
		t.Fatalf("user 3: %v %v", ok, err)
	}
	var gone time.Duration
	for gone == 0 && time.Since(last) < 2*abandon {
		q.keepHead(t, other, 10*time.Millisecond)
		if !q.waitingNow(t, 2) {
			gone = time.Since(last)
		}
	}
	t.Logf("user 2 dropped %s after its last poll (abandon_after %s)", gone, abandon)
	if gone < abandon*3/4 || gone == 0 || gone > abandon+300*time.Millisecond {
		t.Fatalf("user 2 dropped %s after its last poll, want between %s and %s", gone, abandon*3/4, abandon+300*time.Millisecond)
	}
}

// TestQueueRecordThreeEdgesStopWindow: 30 tickets poll with their tokens,
// each poll at a random one of three edges, the gaps between a ticket's
// polls random up to half of abandon_after; each stops after a random
// time. No ticket is dropped while it polls, and each is dropped between
// 3/4 of abandon_after and abandon_after (and a step) after its last
// poll (docs/API.md), though most polls never reach Redis.
func TestQueueRecordThreeEdgesStopWindow(t *testing.T) {
	const abandon = 2 * time.Second
	const n = 30
	q, toks := recordEnv(t, abandon, n+1)
	ws := q.edges(3, 50*time.Millisecond)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(16, 4))
	gap := func() time.Duration { return time.Duration(rng.Int64N(int64(abandon / 2))) }
	start := time.Now()
	type ticket struct {
		next, stop, last, dropped time.Time
	}
	ts := make([]ticket, n+2)
	for u := 2; u <= n+1; u++ {
		ts[u] = ticket{next: start.Add(gap()), stop: start.Add(abandon/2 + time.Duration(rng.Int64N(int64(abandon*3/2))))}
	}
	var views, scripts, heads int
	for left := n; left > 0; {
		now := time.Now()
		if now.Sub(start) > 10*abandon {
			t.Fatalf("%d tickets not dropped %s after the start", left, 10*abandon)
		}
		if _, err := ws[heads%3].run(ctx, opPoll, q.it, 1, 1); err != nil { // the head, and a step
			t.Fatal(err)
		}
		heads++
		for u := 2; u <= n+1; u++ {
			tk := &ts[u]
			switch {
			case !tk.dropped.IsZero():
			case tk.last.IsZero() || now.Before(tk.stop) || tk.next.Before(tk.stop):
				if now.Before(tk.next) {
					continue
				}
				st, err := pollAt(ctx, ws[rng.IntN(3)], q.it, toks[u])
				if err != nil || st.State != qWaiting || !q.waitingNow(t, int64(u)) {
					t.Fatalf("user %d, %s after its last poll (gaps at most %s): %+v %v", u, now.Sub(tk.last), abandon/2, st, err)
				}
				if st.FromView {
					views++
				} else {
					scripts++
				}
				tk.last, tk.next = now, now.Add(gap())
			default:
				if !q.waitingNow(t, int64(u)) {
					tk.dropped = now
					left--
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
	for u := 2; u <= n+1; u++ {
		d := ts[u].dropped.Sub(ts[u].last)
		lo, hi = min(lo, d), max(hi, d)
	}
	t.Logf("%d polls from the views, %d by the script; dropped %s to %s after their last poll (abandon_after %s)", views, scripts, lo, hi, abandon)
	if lo < abandon*3/4 || hi > abandon+300*time.Millisecond {
		t.Fatalf("dropped %s to %s after their last poll, want between %s and %s", lo, hi, abandon*3/4, abandon+300*time.Millisecond)
	}
}

// TestQueueRecordEdgeDies: an edge dies with a recorded poll it had not
// told Redis yet (held until its next script run); the ticket polls
// another edge from then on. Polling every third of abandon_after (the
// longest poll_after) after an unrecorded poll, it survives (Redis's last
// poll of it is then at most 0.9 × abandon_after old); every half of
// abandon_after it does not (1.24 ×): the guarantee of polls half of
// abandon_after apart holds only while the edges run (docs/API.md).
func TestQueueRecordEdgeDies(t *testing.T) {
	const abandon = 3 * time.Second
	q, toks := recordEnv(t, abandon, 3)
	ctx := context.Background()
	x, y := q.edges(2, time.Hour)[0], q.edges(1, 20*time.Millisecond)[0] // x runs the script only when told; y: the head
	x.stale = time.Hour
	poll := func(w *waitingRoom, u int64) queueStatus {
		t.Helper()
		st, err := pollAt(ctx, w, q.it, toks[u])
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	for _, u := range []int64{2, 3} {
		if st := poll(x, u); st.State != qWaiting || !st.FromView {
			t.Fatalf("user %d at x: %+v", u, st)
		}
	}
	t0 := time.Now()
	if _, err := x.run(ctx, opPoll, q.it, 1, 1); err != nil { // tells both polls
		t.Fatal(err)
	}
	at := func(f float64) { q.keepHead(t, y, time.Until(t0.Add(time.Duration(f*float64(abandon))))) }
	held := func() int {
		v := x.view(q.it.ID)
		v.mu.Lock()
		defer v.mu.Unlock()
		return len(v.seen)
	}
	at(0.2)
	poll(x, 2)
	poll(x, 3)
	if h := held(); h != 0 {
		t.Fatalf("%d polls recorded 0.2 × abandon_after after the last", h)
	}
	at(0.53) // 2: a third of abandon_after later, recorded, held
	poll(x, 2)
	at(0.7) // 3: half of abandon_after later
	poll(x, 3)
	if h := held(); h != 2 {
		t.Fatalf("%d polls held at x, want 2", h)
	}
	x = newWaitingRoom(q.rdb, q.w.prefix, time.Second, 0) // x dies and starts again: nothing held, nothing recorded
	x.tick = 20 * time.Millisecond
	var waiting3 bool
	for _, f := range []float64{0.86, 1.19, 1.2, 1.52, 1.85, 2.18} {
		at(f)
		if f == 1.2 { // 3's next poll is due: Redis has dropped it
			waiting3 = q.waitingNow(t, 3)
			continue
		}
		if st := poll(x, 2); st.State != qWaiting || !q.waitingNow(t, 2) {
			t.Fatalf("user 2, polling every third of abandon_after, at %.2f × abandon_after: %+v", f, st)
		}
	}
	if waiting3 {
		t.Fatal("user 3, polling every half of abandon_after, one poll lost with its edge: still waiting 1.2 × abandon_after after its last recorded poll")
	}
}

// TestQueueRecordedBound: however many tickets poll an edge (a room past
// maxRecorded, or accounts farmed for tokens), the tickets it remembers
// having recorded stay under maxRecorded, the polls it holds under
// maxSeen; past the bound the tickets recorded longer ago than the
// interval are forgotten first (before the fix, one pass forgot any while
// over half the bound: 25,000 of 50,000 tickets recorded just before were
// forgotten, and recorded again at their next poll, while 150,000 were
// older than the interval).
func TestQueueRecordedBound(t *testing.T) {
	const every = time.Minute
	v := &roomView{gone: map[string]time.Time{}, recorded: map[string]time.Time{}}
	old := time.Now().Add(-2 * every)
	for i := range maxRecorded - 50_000 {
		v.recorded[strconv.Itoa(i)+" 1"] = old
	}
	fresh := make([]seenPoll, 0, 50_000)
	for i := range 50_000 {
		p := seenPoll{user: int64(i), ticket: "f" + strconv.Itoa(i), place: "1"}
		v.record(p, every)
		fresh = append(fresh, p)
	}
	v.seen = nil // told
	// the bound reached: sweep
	v.record(seenPoll{user: -1, ticket: "x", place: "1"}, every)
	kept := 0
	for _, p := range fresh {
		if _, ok := v.recorded[p.key()]; ok {
			kept++
		}
	}
	if kept != len(fresh) || len(v.recorded) != len(fresh)+1 {
		t.Fatalf("after the sweep: %d remembered, %d of the %d recorded within the interval", len(v.recorded), kept, len(fresh))
	}
	// A flood of new tickets, their polls told every 1,000: the bounds hold.
	for i := range 3 * maxRecorded {
		v.record(seenPoll{user: int64(i), ticket: "n" + strconv.Itoa(i), place: "2"}, every)
		if len(v.recorded) > maxRecorded || len(v.seen) > maxSeen {
			t.Fatalf("after %d tickets: %d remembered, %d held", i, len(v.recorded), len(v.seen))
		}
		if i%1000 == 0 {
			v.seen = nil
		}
	}
	// Not told (Redis away): held polls stop at maxSeen, and a ticket
	// not held is not marked recorded (its next poll tries again).
	v.seen = make([]seenPoll, maxSeen)
	p := seenPoll{user: 1, ticket: "late", place: "3"}
	v.record(p, every)
	if _, ok := v.recorded[p.key()]; ok || len(v.seen) != maxSeen {
		t.Fatalf("a poll past maxSeen: remembered %v, %d held", ok, len(v.seen))
	}
}

// TestQueueRecordReplyLostRedisAway: the script run that tells a recorded
// poll loses its reply after Redis ran it (go-redis sends it again), then
// Redis is unreachable for the next one (the poll is held and told after).
// Either way the poll is told (never lost while the edge runs); Redis
// counts it when it was made, not at the run after the outage (before the
// fix, 600 ms later: a ticket that stopped lived that much longer), and at
// worst at the retry after a lost reply (go-redis sends the same
// arguments, the same age, again).
func TestQueueRecordReplyLostRedisAway(t *testing.T) {
	const abandon = 2 * time.Second
	f := testenv.RedisBehindProxy(t)
	it := seckill.Item{ID: 7, Name: "q", Stock: 10, StartsAt: time.Now().Add(time.Hour), EndsAt: time.Now().Add(2 * time.Hour),
		SaleRules: seckill.SaleRules{Allocation: seckill.AllocationQueue, AbandonAfter: seckill.Duration(abandon)}}
	if err := stock.New(f.Direct, f.Prefix).LoadItem(context.Background(), it, nil, nil); err != nil {
		t.Fatal(err)
	}
	w := newWaitingRoom(f.Client, f.Prefix, time.Second, 0)
	w.tick, w.stale = 20*time.Millisecond, 10*time.Second // the view answers through the outage (a busy machine)
	var next float64
	w.place = func() float64 { next += 0.01; return next }
	q := &queueEnv{rdb: f.Direct, w: w, it: it}
	ctx := context.Background()
	toks := []pollToken{{}, q.token(t, 1, q.join(t, 1)), q.token(t, 2, q.join(t, 2)), q.token(t, 3, q.join(t, 3))}
	seen := func(ctx context.Context) time.Time {
		s, _ := f.Direct.ZScore(ctx, rkeys.Space(f.Prefix).Queue(it.ID).Seen, "2").Result()
		return time.UnixMilli(int64(s))
	}
	time.Sleep(10 * time.Millisecond) // the poll's score after the join's
	before := seen(ctx)
	polled := time.Now()
	if _, err := testenv.LoseReply(t, f, func(ctx context.Context) bool { return seen(ctx).After(before) }, func() (queueStatus, error) {
		st, _, err := w.fromView(ctx, it, toks[2], 1) // recorded (a new ticket for this edge), and refreshes
		return st, err
	}); err != nil {
		t.Fatal(err)
	}
	// go-redis sends the same age again: counted at the retry at worst
	if d, r := seen(ctx).Sub(polled), time.Since(polled); d < -5*time.Millisecond || d > r {
		t.Fatalf("after a lost reply and a retry within %s: Redis's last poll of user 2 is %s after the poll", r, d)
	}
	// Redis unreachable for the refresh that would tell the next recording.
	time.Sleep(abandon / 4)
	waitTick(t, w, it.ID)
	f.Proxy.Refuse(true)
	f.Proxy.CutAll()
	polled = time.Now()
	if _, _, err := w.fromView(ctx, it, toks[2], 1); err != nil { // the view is younger than stale: answered
		t.Fatal(err)
	}
	v := w.view(it.ID)
	v.mu.Lock()
	held := len(v.seen)
	v.mu.Unlock()
	if held != 1 {
		t.Fatalf("after a failed refresh: %d polls held, want user 2's", held)
	}
	time.Sleep(600 * time.Millisecond)
	f.Proxy.Refuse(false)
	if _, ok, err := w.fromView(ctx, it, toks[3], 1); !ok || err != nil { // refreshes, tells 2's poll
		t.Fatalf("user 3 after the outage: %v %v", ok, err)
	}
	if d := seen(ctx).Sub(polled); d < -5*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("told %s after the poll: Redis's last poll of user 2 is %s after the poll", time.Since(polled), d)
	}
}
