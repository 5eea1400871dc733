package edge

import (
	"context"
	"strconv"
	"testing"
	"time"

	"seckill"
	"seckill/internal/rkeys"
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
	st3 := poll(3)
	for _, f := range []float64{1.2, 1.7, 2.2, 2.7} {
		at(f)
		if st := poll(2); st.State != qWaiting {
			t.Fatalf("user 2, polling every half of abandon_after, at %.2f × abandon_after: %+v", f, st)
		}
	}
	if st3.State != qExpired {
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
