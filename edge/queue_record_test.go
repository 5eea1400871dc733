package edge

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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

// TestQueueRecordIrregularPolls: a ticket that polls at least every
// abandon_after is never dropped, whatever its rhythm (docs/API.md); one
// that stops is dropped between abandon_after and 1.5 × abandon_after
// after its last poll. The worst rhythm: a poll recorded, one just under
// half of abandon_after later (not recorded: this edge recorded the
// ticket less than recordEvery ago), the next 0.9 × abandon_after after
// that: Redis's last poll of the ticket is then 1.35 × abandon_after
// old. With a quarter of abandon_after and no more time to drop (12cdc20)
// the ticket was dropped at 1.15 × (0.2 then 0.95 × abandon_after).
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
	held := func() int {
		v := q.w.view(q.it.ID)
		v.mu.Lock()
		defer v.mu.Unlock()
		return len(v.seen)
	}
	// 2 and 3: recorded, then 0.45 × abandon_after later not; then 2 polls
	// every 0.9 × abandon_after, 3 stops.
	for _, u := range []int64{2, 3} {
		if st := poll(u); st.State != qWaiting || !st.FromView {
			t.Fatalf("user %d's first poll: %+v", u, st)
		}
	}
	t0 := time.Now()
	q.poll(t, 1) // hands both polls to Redis
	at := func(f float64) { q.keepHead(t, q.w, time.Until(t0.Add(time.Duration(f*float64(abandon))))) }
	at(0.45)
	for _, u := range []int64{2, 3} {
		before := held()
		if st := poll(u); st.State != qWaiting || !st.FromView {
			t.Fatalf("user %d's second poll: %+v", u, st)
		}
		if after := held(); after != before {
			t.Fatalf("user %d's poll 0.45 × abandon_after after its recorded one was recorded (%d polls held, were %d)", u, after, before)
		}
	}
	var waiting3 [2]bool
	for _, f := range []float64{1.35, 1.4, 1.6, 2.25, 3.15} {
		at(f)
		switch f {
		case 1.4: // 0.95 × abandon_after after 3's last poll
			waiting3[0] = q.waitingNow(t, 3)
		case 1.6: // 1.15 ×
			waiting3[1] = q.waitingNow(t, 3)
		default:
			if st := poll(2); st.State != qWaiting || !q.waitingNow(t, 2) {
				t.Fatalf("user 2, polling every 0.9 × abandon_after, at %.2f × abandon_after: %+v", f, st)
			}
		}
	}
	if !waiting3[0] || waiting3[1] {
		t.Fatalf("user 3, stopped: waiting 0.95 × abandon_after after its last poll %v (want true), 1.15 × %v (want false)", waiting3[0], waiting3[1])
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
// is dropped at most 1.5 × abandon_after (and a step) after its last poll
// (docs/API.md). Before the fix Redis counted it as polled at the late
// run: the ticket stayed 2.25 × abandon_after after its last poll.
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
	for gone == 0 && time.Since(last) < 3*abandon {
		q.keepHead(t, other, 10*time.Millisecond)
		if !q.waitingNow(t, 2) {
			gone = time.Since(last)
		}
	}
	t.Logf("user 2 dropped %s after its last poll (abandon_after %s)", gone, abandon)
	if gone < abandon || gone == 0 || gone > abandon*3/2+300*time.Millisecond {
		t.Fatalf("user 2 dropped %s after its last poll, want between %s and %s", gone, abandon, abandon*3/2+300*time.Millisecond)
	}
}

// TestQueueRecordThreeEdgesStopWindow: 30 tickets poll with their tokens,
// each poll at a random one of three edges, the gaps between a ticket's
// polls random up to 0.9 × abandon_after; each stops after a random time.
// No ticket is dropped while it polls, and each is dropped between
// abandon_after and 1.5 × abandon_after (and a step) after its last poll
// (docs/API.md), though most polls never reach Redis.
func TestQueueRecordThreeEdgesStopWindow(t *testing.T) {
	const abandon = 2 * time.Second
	const n = 30
	q, toks := recordEnv(t, abandon, n+1)
	ws := q.edges(3, 50*time.Millisecond)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(16, 4))
	gap := func() time.Duration { return time.Duration(rng.Int64N(int64(abandon * 9 / 10))) }
	start := time.Now()
	type ticket struct {
		next, stop, last, dropped time.Time
	}
	ts := make([]ticket, n+2)
	for u := 2; u <= n+1; u++ {
		ts[u] = ticket{next: start.Add(gap()), stop: start.Add(abandon + time.Duration(rng.Int64N(int64(abandon*2))))}
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
					t.Fatalf("user %d, %s after its last poll (gaps at most %s): %+v %v", u, now.Sub(tk.last), abandon*9/10, st, err)
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
	if lo < abandon || hi > abandon*3/2+300*time.Millisecond {
		t.Fatalf("dropped %s to %s after their last poll, want between %s and %s", lo, hi, abandon, abandon*3/2+300*time.Millisecond)
	}
}

// TestQueueRecordEdgeDies: an edge dies with a recorded poll it had not
// told Redis yet (held until its next script run); the ticket polls
// another edge from then on. Polling every third of abandon_after (the
// longest poll_after) after an unrecorded poll, it survives (Redis's last
// poll of it is then 1.11 × abandon_after old, under the 1.5 × that drops
// it); every 0.95 × abandon_after it does not: the guarantee of polls at
// least every abandon_after holds only while the edges run (docs/API.md).
func TestQueueRecordEdgeDies(t *testing.T) {
	const abandon = 2 * time.Second
	q, toks := recordEnv(t, abandon, 3)
	ctx := context.Background()
	// x[2], x[3]: the edges 2 and 3 poll first, running the script only
	// when told (their views never too old); y polls the head
	var x [4]*waitingRoom
	x[2], x[3] = q.edges(1, time.Hour)[0], q.edges(1, time.Hour)[0]
	x[2].stale, x[3].stale = time.Hour, time.Hour
	y := q.edges(1, 20*time.Millisecond)[0]
	poll := func(w *waitingRoom, u int64) queueStatus {
		t.Helper()
		st, err := pollAt(ctx, w, q.it, toks[u])
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	held := func(u int64) int {
		v := x[u].view(q.it.ID)
		v.mu.Lock()
		defer v.mu.Unlock()
		return len(v.seen)
	}
	for _, u := range []int64{2, 3} {
		if st := poll(x[u], u); st.State != qWaiting || !st.FromView {
			t.Fatalf("user %d: %+v", u, st)
		}
	}
	t0 := time.Now()
	for _, u := range []int64{2, 3} {
		if _, err := x[u].run(ctx, opPoll, q.it, 1, 1); err != nil { // tells the poll
			t.Fatal(err)
		}
	}
	at := func(f float64) { q.keepHead(t, y, time.Until(t0.Add(time.Duration(f*float64(abandon))))) }
	at(0.45) // not recorded (recordEvery: half of abandon_after)
	for _, u := range []int64{2, 3} {
		poll(x[u], u)
		if h := held(u); h != 0 {
			t.Fatalf("user %d: %d polls recorded 0.45 × abandon_after after the last", u, h)
		}
	}
	restart := func(u int64) {
		if h := held(u); h != 1 {
			t.Fatalf("user %d: %d polls held, want 1", u, h)
		}
		x[u] = newWaitingRoom(q.rdb, q.w.prefix, time.Second, 0) // dies and starts again: nothing held, nothing recorded
		x[u].tick = 20 * time.Millisecond
	}
	at(0.78) // 2: a third of abandon_after later, recorded, held, lost
	poll(x[2], 2)
	restart(2)
	var waiting3 bool
	for _, f := range []float64{1.11, 1.4, 1.44, 1.6, 1.77, 2.1} {
		at(f)
		switch f {
		case 1.4: // 3: 0.95 × abandon_after later, recorded, held, lost
			poll(x[3], 3)
			restart(3)
		case 1.6: // Redis's last poll of 3 is 1.6 × abandon_after old
			waiting3 = q.waitingNow(t, 3)
		default:
			if st := poll(x[2], 2); st.State != qWaiting || !q.waitingNow(t, 2) {
				t.Fatalf("user 2, polling every third of abandon_after, at %.2f × abandon_after: %+v", f, st)
			}
		}
	}
	if waiting3 {
		t.Fatal("user 3, polling every 0.95 × abandon_after, one poll lost with its edge: still waiting 1.6 × abandon_after after its last recorded poll")
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
	v := &roomView{gone: map[recKey]time.Time{}, recorded: map[recKey]recState{}}
	old := time.Now().Add(-2 * every)
	for i := range maxRecorded - 50_000 {
		v.recorded[recKey{user: int64(i), place: 0.5}] = recState{at: old}
	}
	fresh := make([]seenPoll, 0, 50_000)
	for i := range 50_000 {
		p := seenPoll{user: int64(i), place: 1}
		v.record(p, time.Time{}, "", every, 2*every)
		fresh = append(fresh, p)
	}
	v.seen = nil // told
	// the bound reached: sweep
	v.record(seenPoll{user: -1, place: 1}, time.Time{}, "", every, 2*every)
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
		v.record(seenPoll{user: int64(i), place: 2}, time.Time{}, "", every, 2*every)
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
	p := seenPoll{user: 1, place: 3}
	v.record(p, time.Time{}, "", every, 2*every)
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
	it := abandonItem(t, f.Direct, f.Prefix, abandon)
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
	time.Sleep(recordEvery(it))
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

// seenScore is Redis's last poll of user u (zero: none).
func (q *queueEnv) seenScore(t *testing.T, rdb interface {
	ZScore(ctx context.Context, key, member string) *redis.FloatCmd
}, u int64) time.Time {
	t.Helper()
	s, err := rdb.ZScore(context.Background(), rkeys.Space(q.w.prefix).Queue(q.it.ID).Seen, strconv.FormatInt(u, 10)).Result()
	if err == redis.Nil {
		return time.Time{}
	}
	if err != nil {
		t.Fatal(err)
	}
	return time.UnixMilli(int64(s))
}

// TestQueueRecordKnownUnchecked: a ticket's first poll an edge records is
// checked against the queue (its place); once Redis confirmed it waiting,
// the edge's next record of it, less than abandon_after later, goes
// unchecked (a plain ZADD XX GT) and still counts when it was made.
func TestQueueRecordKnownUnchecked(t *testing.T) {
	const abandon = 2 * time.Second
	q, toks := recordEnv(t, abandon, 3)
	ctx := context.Background()
	first := time.Now()
	if st, err := pollAt(ctx, q.w, q.it, toks[2]); err != nil || st.State != qWaiting || !st.FromView {
		t.Fatalf("user 2's first poll: %+v %v", st, err)
	}
	q.poll(t, 1) // tells it
	if c := q.w.checkedPolls.Load(); c != 1 {
		t.Fatalf("%d polls checked, want user 2's first", c)
	}
	v := q.w.view(q.it.ID)
	v.mu.Lock()
	r := v.recorded[seenOf(toks[2]).key()]
	v.mu.Unlock()
	if r.known.Before(first) {
		t.Fatalf("user 2's first poll told and not known waiting: %+v", r)
	}
	q.keepHead(t, q.w, recordEvery(q.it)+50*time.Millisecond)
	polled := time.Now()
	if st, err := pollAt(ctx, q.w, q.it, toks[2]); err != nil || st.State != qWaiting || !st.FromView {
		t.Fatalf("user 2's second poll: %+v %v", st, err)
	}
	time.Sleep(100 * time.Millisecond) // told later: counted when made
	q.poll(t, 1)
	if c := q.w.checkedPolls.Load(); c != 1 {
		t.Fatalf("%d polls checked, want 1: the second of a ticket known waiting goes unchecked", c)
	}
	if rec := q.w.recordedPolls.Load(); rec != 2 {
		t.Fatalf("%d polls recorded, want 2", rec)
	}
	if d := q.seenScore(t, q.rdb, 2).Sub(polled); d < -5*time.Millisecond || d > 20*time.Millisecond {
		t.Fatalf("Redis's last poll of user 2 is %s after the unchecked poll, want within [-5 ms, 20 ms]", d)
	}
}

// TestQueueRecordKnownAdmittedNotPutBack: a ticket known waiting is
// admitted (taken out of the queue) by another edge; this edge's next
// record of it, unchecked, must not put it back among the waiting
// tickets' polls (XX), nor make it wait again.
func TestQueueRecordKnownAdmittedNotPutBack(t *testing.T) {
	const abandon = 2 * time.Second
	q, toks := recordEnv(t, abandon, 3)
	ctx := context.Background()
	if _, err := pollAt(ctx, q.w, q.it, toks[2]); err != nil {
		t.Fatal(err)
	}
	q.poll(t, 1)
	// taken out as the admission step does (ZPOPMIN waiting, ZREM seen)
	qk := rkeys.Space(q.w.prefix).Queue(q.it.ID)
	if err := q.rdb.ZRem(ctx, qk.Waiting, "2").Err(); err != nil {
		t.Fatal(err)
	}
	if err := q.rdb.ZRem(ctx, qk.Seen, "2").Err(); err != nil {
		t.Fatal(err)
	}
	q.keepHead(t, q.w, recordEvery(q.it)+50*time.Millisecond)
	held := q.w.recordedPolls.Load()
	pollAt(ctx, q.w, q.it, toks[2]) // from the view or not: whichever, not put back
	q.poll(t, 1)
	if q.w.recordedPolls.Load() != held+1 || q.w.checkedPolls.Load() != 1 {
		t.Fatalf("recorded %d (want %d), checked %d (want 1): the poll did not go unchecked", q.w.recordedPolls.Load(), held+1, q.w.checkedPolls.Load())
	}
	if s := q.seenScore(t, q.rdb, 2); !s.IsZero() || q.waitingNow(t, 2) {
		t.Fatalf("an admitted ticket's unchecked poll put it back: last poll %v, waiting %v", s, q.waitingNow(t, 2))
	}
}

// TestQueueRecordKnownExpires: an edge loses Redis after it saw a ticket
// confirmed waiting; the ticket's polls it answers from its view through
// the outage are held. Meanwhile another edge drops the ticket (Redis had
// no poll of it for 1.5 × abandon_after). When Redis is back the held
// poll, made more than abandon_after after the last confirmed one, is
// checked, so the edge learns the ticket is gone and its next poll is
// told "expired" by the script; sent unchecked it would have been a no-op
// (XX) and the view would have answered "waiting" for good.
func TestQueueRecordKnownExpires(t *testing.T) {
	const abandon = 2 * time.Second
	f := testenv.RedisBehindProxy(t)
	it := abandonItem(t, f.Direct, f.Prefix, abandon)
	a := newWaitingRoom(f.Client, f.Prefix, time.Second, 0) // behind the proxy
	a.tick, a.stale = 20*time.Millisecond, time.Hour        // its view answers through the outage
	var next float64
	a.place = func() float64 { next += 0.01; return next }
	q := &queueEnv{rdb: f.Direct, w: a, it: it}
	b := q.edges(1, 20*time.Millisecond)[0] // straight to Redis: the head's polls and the steps
	ctx := context.Background()
	toks := []pollToken{{}, q.token(t, 1, q.join(t, 1)), q.token(t, 2, q.join(t, 2))}
	t0 := time.Now()
	if st, err := pollAt(ctx, a, it, toks[2]); err != nil || st.State != qWaiting || !st.FromView {
		t.Fatalf("user 2's first poll: %+v %v", st, err)
	}
	if _, err := a.run(ctx, opPoll, it, 1, 1); err != nil { // tells it: confirmed
		t.Fatal(err)
	}
	f.Proxy.Refuse(true)
	f.Proxy.CutAll()
	q.keepHead(t, b, time.Until(t0.Add(abandon*11/20)))
	if st, err := pollAt(ctx, a, it, toks[2]); err != nil || st.State != qWaiting || !st.FromView {
		t.Fatalf("user 2's poll during the outage: %+v %v", st, err)
	}
	v := a.view(it.ID)
	v.mu.Lock()
	held := len(v.seen)
	v.mu.Unlock()
	if held != 1 {
		t.Fatalf("%d polls held through the outage, want user 2's", held)
	}
	q.keepHead(t, b, time.Until(t0.Add(abandon*17/10)))
	if q.waitingNow(t, 2) {
		t.Fatal("user 2 still waiting 1.7 × abandon_after after its last poll Redis heard of")
	}
	f.Proxy.Refuse(false)
	checked := a.checkedPolls.Load()
	if _, err := a.run(ctx, opPoll, it, 1, 1); err != nil { // tells the held poll
		t.Fatal(err)
	}
	if c := a.checkedPolls.Load() - checked; c != 1 {
		t.Fatalf("%d polls checked after the outage, want user 2's held one", c)
	}
	st, err := pollAt(ctx, a, it, toks[2])
	if err != nil || st.FromView || st.State != qExpired {
		t.Fatalf("user 2, dropped: %+v %v (want expired, by the script)", st, err)
	}
}

// TestQueueRecordTell: the checked polls not told back gone and the known
// ones the script surely ran for before their ticket could be dropped are
// confirmed; a known poll whose reply came dropAfter or more after the
// poll that made it known is not (the script may have run after a drop:
// its XX was then a no-op), so the ticket's next poll is checked.
func TestQueueRecordTell(t *testing.T) {
	now := time.Now()
	const drop = 3 * time.Second
	check := []seenPoll{{user: 1, place: 0.1}, {user: 2, place: 0.2}, {user: 3, place: 0.3}}
	known := []seenPoll{
		{user: 4, place: 0.4, known: now.Add(-drop + time.Millisecond)},
		{user: 5, place: 0.5, known: now.Add(-drop)},
	}
	told := tell(check, known, []int64{2, 2, 0, 9}, now, drop)
	if len(told.gone) != 1 || told.gone[0] != (recKey{user: 2, place: 0.2}) {
		t.Fatalf("gone %v, want user 2's", told.gone)
	}
	var users, knownUsers []int64
	for _, c := range told.confirmed {
		users = append(users, c.user)
	}
	for _, c := range told.known {
		knownUsers = append(knownUsers, c.user)
	}
	if !slices.Equal(users, []int64{1, 3}) || !slices.Equal(knownUsers, []int64{4}) {
		t.Fatalf("confirmed checked %v (want [1 3]), known %v (want [4])", users, knownUsers)
	}
}

// TestQueueAgeStep: ages of unchecked polls go in 10 ms steps, rounded
// down (a poll counts at most 10 ms later than made, never sooner).
func TestQueueAgeStep(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		ago  time.Duration
		want int64
	}{{0, 0}, {9 * time.Millisecond, 0}, {10 * time.Millisecond, 10}, {1999 * time.Millisecond, 1990}, {-time.Second, 0}} {
		if got := ageStep(now, now.Add(-c.ago)); got != c.want {
			t.Errorf("ageStep(%s ago) = %d, want %d", c.ago, got, c.want)
		}
	}
}

// TestQueueRecordFromToken: a poll token carries when the script that
// signed it counted a poll of its ticket (Redis's clock). An edge that
// has not recorded the ticket yet takes that as a recorded poll Redis
// confirmed: the ticket's polls are not handed over before recordEvery
// after it, and then unchecked. A token older than abandon_after, from
// the future, or of another Redis server (or none told) stands for
// nothing: the poll is recorded and checked.
func TestQueueRecordFromToken(t *testing.T) {
	const abandon = 2 * time.Second
	q, _ := recordEnv(t, abandon, 0)
	ctx := context.Background()
	tok := func(u int64, issued time.Time) pollToken {
		st := q.join(t, u)
		tk := q.token(t, u, st)
		tk.Issued, tk.Run = issued, q.w.runOf(q.it.ID)
		if issued.IsZero() {
			tk.Issued = st.Now // as answerQueue signs it
		}
		return tk
	}
	q.join(t, 1) // the head
	two := tok(2, time.Time{})
	if len(two.Run) != runLen {
		t.Fatalf("the server's run_id not known after a join: %q", two.Run)
	}
	old := tok(3, time.Now().Add(-abandon-time.Second))
	future := tok(4, time.Now().Add(time.Hour))
	restarted := tok(5, time.Time{})
	restarted.Run = "0123456789ab" // another Redis server (one that lost the ticket, say)
	untold := tok(6, time.Time{})
	untold.Run = ""
	if _, err := q.w.run(ctx, opStep, q.it, 0, 1); err != nil { // the edge's view
		t.Fatal(err)
	}
	poll := func(tk pollToken) {
		t.Helper()
		if st, err := pollAt(ctx, q.w, q.it, tk); err != nil || st.State != qWaiting || !st.FromView {
			t.Fatalf("user %d: %+v %v", tk.User, st, err)
		}
	}
	poll(two)
	if r := q.w.recordedPolls.Load(); r != 0 {
		t.Fatalf("%d polls recorded, want none: user 2's token was just issued", r)
	}
	poll(old)
	poll(future)
	poll(restarted)
	poll(untold)
	q.poll(t, 1)
	if r, c := q.w.recordedPolls.Load(), q.w.checkedPolls.Load(); r != 4 || c != 4 {
		t.Fatalf("recorded %d, checked %d; want users 3 to 6 (their tokens stand for nothing) all", r, c)
	}
	q.keepHead(t, q.w, time.Until(two.Issued.Add(recordEvery(q.it)+50*time.Millisecond)))
	polled := time.Now()
	poll(two)
	q.poll(t, 1)
	if r, c := q.w.recordedPolls.Load(), q.w.checkedPolls.Load(); r != 5 || c != 4 {
		t.Fatalf("recorded %d (want 5), checked %d (want 4): user 2's poll recordEvery after its token goes unchecked", r, c)
	}
	if d := q.seenScore(t, q.rdb, 2).Sub(polled); d < -5*time.Millisecond || d > 20*time.Millisecond {
		t.Fatalf("Redis's last poll of user 2 is %s after its unchecked poll", d)
	}
}

// TestQueueRecordServerChanged: an edge that is told another Redis
// server's run_id (a restart, a failover) forgets every ticket it knew
// waiting and those gone (a restarted server may have lost the last
// writes: unchecked polls, ZADD XX, would not tell), and a token of the
// old server stands for nothing.
func TestQueueRecordServerChanged(t *testing.T) {
	v := &roomView{gone: map[recKey]time.Time{}, recorded: map[recKey]recState{}}
	if v.observe("") || v.observe("aaaaaaaaaaaa") {
		t.Fatal("the first run_id told: same server")
	}
	now := time.Now()
	v.recorded[recKey{user: 1, place: 0.5}] = recState{at: now, known: now}
	v.gone[recKey{user: 2, place: 0.25}] = now
	if !v.observe("aaaaaaaaaaaa") || v.observe("") || len(v.recorded) != 1 || len(v.gone) != 1 {
		t.Fatalf("the same server again: %d recorded, %d gone", len(v.recorded), len(v.gone))
	}
	if v.observe("bbbbbbbbbbbb") || len(v.recorded) != 0 || len(v.gone) != 0 || v.run != "bbbbbbbbbbbb" {
		t.Fatalf("another server: still %d recorded, %d gone, run %q", len(v.recorded), len(v.gone), v.run)
	}
	v.valid, v.view = true, queueView{Fetched: now, Now: now}
	if r := v.fromToken(now, "aaaaaaaaaaaa", now, time.Minute); r != (recState{}) {
		t.Fatalf("a token of the old server: %+v", r)
	}
	if r := v.fromToken(now, "bbbbbbbbbbbb", now, time.Minute); r.known.IsZero() {
		t.Fatal("a token of this server stands for nothing")
	}
}

// abandonItem loads item 7 of a waiting room (10 units, the sale an hour
// away) with abandon_after as given, on rdb under prefix.
func abandonItem(t *testing.T, rdb redis.UniversalClient, prefix string, abandon time.Duration) seckill.Item {
	t.Helper()
	it := seckill.Item{ID: 7, Name: "q", Stock: 10, StartsAt: time.Now().Add(time.Hour), EndsAt: time.Now().Add(2 * time.Hour),
		SaleRules: seckill.SaleRules{Allocation: seckill.AllocationQueue, AbandonAfter: seckill.Duration(abandon)}}
	if err := stock.New(rdb, prefix).LoadItem(context.Background(), it, nil, nil); err != nil {
		t.Fatal(err)
	}
	return it
}
