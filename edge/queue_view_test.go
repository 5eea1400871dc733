package edge

import (
	"context"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/rkeys"
)

// scriptCounter counts the commands a Redis client sends (each script run
// is one EVALSHA).
type scriptCounter struct{ n atomic.Int64 }

func (c *scriptCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (q *queueEnv) token(t *testing.T, user int64, s queueStatus) pollToken {
	t.Helper()
	if !s.HasPlace || s.State != qWaiting {
		t.Fatalf("user %d: %+v has no place", user, s)
	}
	return pollToken{User: user, Item: q.it.ID, Ticket: s.Ticket, Place: s.Place}
}

// TestPollTokens: a poll token opens only for its user and item, and a
// changed byte, another purpose's key (an admission pass) or another
// secret is refused, and so are v1 and v2 tokens (without issue time or run: their
// polls go to the script, which answers a v3 token).
func TestPollTokens(t *testing.T) {
	p := newPollTokens([]byte("secret-1"), nil)
	tok := pollToken{User: 7, Item: 3, Ticket: "ab12", Place: 0.123456789012345678, Issued: time.UnixMilli(1_764_567_890_123), Run: "0123456789ab"}
	s := p.sign(tok)
	if got, ok := p.open(s, 7, 3); !ok || got != tok {
		t.Fatalf("open: %+v %v, want %+v", got, ok, tok)
	}
	for _, c := range []struct {
		name       string
		tok        string
		user, item int64
	}{
		{"other user", s, 8, 3},
		{"other item", s, 7, 4},
		{"changed", s[:3] + string(s[3]^1) + s[4:], 7, 3},
		{"another secret", newPollTokens([]byte("secret-2"), nil).sign(tok), 7, 3},
		{"an admission pass", newAdmissionPasses([]byte("secret-1"), nil).sign(7, 3, time.Now().Add(time.Hour)), 7, 3},
		{"empty", "", 7, 3},
		{"too long", s + strings.Repeat("A", 300), 7, 3},
		{"v1", newSigner("seckill waiting room poll token v1", []byte("secret-1"), nil).sign("7.3.ab12.0.5"), 7, 3},
		{"v2", newSigner("seckill waiting room poll token v2", []byte("secret-1"), nil).sign("7.3.ab12.1764567890123.0.5"), 7, 3},
		{"a run too long", p.s.sign("7.3.ab12.1764567890123.0123456789abc.0.5"), 7, 3},
	} {
		if _, ok := p.open(c.tok, c.user, c.item); ok {
			t.Errorf("%s: opened", c.name)
		}
	}
	// The longest: within maxTokenLen.
	long := p.sign(pollToken{User: math.MaxInt64, Item: math.MaxInt64, Ticket: strings.Repeat("f", 32), Place: 1.2345678901234567e-05,
		Issued: time.UnixMilli(9_999_999_999_999), Run: "0123456789ab"})
	if _, ok := p.open(long, math.MaxInt64, math.MaxInt64); !ok || len(long) > maxTokenLen {
		t.Fatalf("the longest token (%d bytes) does not open", len(long))
	}
	// Without an issue time: opens with none.
	untimed := pollToken{User: 7, Item: 3, Ticket: "ab12", Place: 2}
	if got, ok := p.open(p.sign(untimed), 7, 3); !ok || got != untimed {
		t.Fatalf("open untimed: %+v %v", got, ok)
	}
	// Rotation: a token of the previous secret still opens.
	if _, ok := newPollTokens([]byte("secret-3"), []byte("secret-1")).open(s, 7, 3); !ok {
		t.Error("a token of the previous secret refused")
	}
}

// TestQueueViewPosition: exact among the first tickets the view lists,
// exact for arrival numbers without gaps past them, interpolated in the
// pre-queue, never past the pre-queue for a pre-queue place.
func TestQueueViewPosition(t *testing.T) {
	for _, c := range []struct {
		v     queueView
		place float64
		want  int64
	}{
		{queueView{Heads: []float64{0.2, 0.3}, Waiting: 1005, Pre: 5, SeqMin: 11, SeqMax: 1010}, 0.2, 1},
		{queueView{Heads: []float64{0.2, 0.3}, Waiting: 1005, Pre: 5, SeqMin: 11, SeqMax: 1010}, 0.25, 2},
		{queueView{Heads: []float64{0.2, 0.3}, Waiting: 1005, Pre: 5, SeqMin: 11, SeqMax: 1010}, 0.3, 2},
		{queueView{Heads: []float64{0.2, 0.3}, Waiting: 1005, Pre: 5, SeqMin: 11, SeqMax: 1010}, 0.30001, 3},
		{queueView{Heads: []float64{0.2, 0.3}, Waiting: 1005, Pre: 5, SeqMin: 11, SeqMax: 1010}, 0.65, 4},
		{queueView{Heads: []float64{0.2, 0.3}, Waiting: 1005, Pre: 5, SeqMin: 11, SeqMax: 1010}, 0.99999, 5},
		{queueView{Heads: []float64{0.2, 0.3}, Waiting: 1005, Pre: 5, SeqMin: 11, SeqMax: 1010}, 11, 6},
		{queueView{Heads: []float64{0.2, 0.3}, Waiting: 1005, Pre: 5, SeqMin: 11, SeqMax: 1010}, 12, 7},
		{queueView{Heads: []float64{0.2, 0.3}, Waiting: 1005, Pre: 5, SeqMin: 11, SeqMax: 1010}, 1010, 1005},
		{queueView{Heads: []float64{0.2, 0.3}, Waiting: 1005, Pre: 5, SeqMin: 11, SeqMax: 1010}, 1012, 1007},
		{queueView{Heads: []float64{3, 4, 5}, Waiting: 10, SeqMin: 3, SeqMax: 12}, 5, 3},
		{queueView{Heads: []float64{3, 4, 5}, Waiting: 10, SeqMin: 3, SeqMax: 12}, 6, 4},
		{queueView{Heads: []float64{3, 4, 5}, Waiting: 10, SeqMin: 3, SeqMax: 12}, 12, 10},
		{queueView{Heads: []float64{0.1, 0.2, 0.3}, Waiting: 3, Pre: 3}, 0.3, 3},
		{queueView{Heads: []float64{0.1, 0.2, 0.3}, Waiting: 3, Pre: 3}, 0.9, 4},
	} {
		if got := c.v.position(c.place); got != c.want {
			t.Errorf("%+v: position(%v) = %d, want %d", c.v, c.place, got, c.want)
		}
	}
}

// TestQueuePollFromView: 2,000 tickets wait (1,000 in the pre-queue, 1,000
// arrived after the start); polls with their tokens are answered from the
// edge's view, with the script run at most once per tick. After the start
// every position is exact; in the pre-queue the estimate is within a few
// square roots of the queue's size of the exact rank. A ticket at the head
// is asked of Redis, which admits it and tells the pass. Joins and polls
// run with load factor 0 (no admission) until that last poll, so the ranks
// read from Redis stay exact however slowly the machine runs (with factor
// 1 an admission during the joins took the one slot, and the head never
// got in).
func TestQueuePollFromView(t *testing.T) {
	starts := time.Now().Add(1500 * time.Millisecond)
	q := newQueueEnv(t, 10, starts, seckill.SaleRules{NewUsersPerMinute: 60, TotalActiveUsers: 1})
	q.w.tick = 50 * time.Millisecond
	ctx := context.Background()
	toks := map[int64]pollToken{}
	join := func(u int64) pollToken {
		s, err := q.w.run(ctx, opJoin, q.it, u, 0)
		if err != nil {
			t.Fatal(err)
		}
		return q.token(t, u, s)
	}
	for u := int64(1); u <= 1000; u++ {
		toks[u] = join(u)
	}
	time.Sleep(time.Until(starts) + 100*time.Millisecond)
	for u := int64(1001); u <= 2000; u++ {
		toks[u] = join(u)
	}
	// The exact ranks, from Redis.
	exact := map[int64]int64{}
	ids, err := q.rdb.ZRange(ctx, rkeys.Space(q.w.prefix).Queue(q.it.ID).Waiting, 0, -1).Result()
	if err != nil || len(ids) != 2000 {
		t.Fatalf("waiting: %d %v", len(ids), err)
	}
	for i, id := range ids {
		u, err := strconv.ParseInt(id, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		exact[u] = int64(i + 1)
	}
	cnt := &scriptCounter{}
	q.rdb.AddHook(cnt)
	began := time.Now()
	var fromView, worst int64
	var devs []float64
	for u := int64(1); u <= 2000; u++ {
		st, ok, _ := q.w.fromView(ctx, q.it, toks[u], 0)
		if !ok {
			if exact[u] <= 1 {
				continue // the head: Redis answers
			}
			t.Fatalf("user %d (rank %d) not answered from the view", u, exact[u])
		}
		fromView++
		if st.State != qWaiting || st.Waiting != 2000 {
			t.Fatalf("user %d: %+v", u, st)
		}
		d := st.Position - exact[u]
		if u > 1000 && d != 0 {
			t.Fatalf("user %d arrived after the start: position %d, exact %d", u, st.Position, exact[u])
		}
		devs = append(devs, math.Abs(float64(d)))
		worst = max(worst, d, -d)
	}
	elapsed := time.Since(began)
	runs := cnt.n.Load()
	if limit := int64(elapsed/q.w.tick) + 2; runs > limit {
		t.Fatalf("%d script runs for %d polls in %v, want at most %d (one per tick)", runs, fromView, elapsed, limit)
	}
	sort.Float64s(devs)
	t.Logf("%d polls from the view in %v with %d script runs; pre-queue estimate: median error %.0f, worst %d (sqrt(1000) = 32)",
		fromView, elapsed, runs, devs[len(devs)/2], worst)
	if worst > 5*32 {
		t.Fatalf("pre-queue estimate off by %d places", worst)
	}

	// The head: admitted by Redis (the step runs when a poll needs it).
	var head int64
	for u, r := range exact {
		if r == 1 {
			head = u
		}
	}
	var st queueStatus
	if _, ok, _ := q.w.fromView(ctx, q.it, toks[head], 0); ok {
		t.Fatal("the head answered from the view")
	}
	testenvEventuallyState(t, func() bool { st = q.poll(t, head); return st.State == qAdmitted })
}

func testenvEventuallyState(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("state not reached in 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQueueViewSeenAndGone: tickets polled only from the view count as
// polled (each script run, a refresh or another user's poll, tells Redis)
// and are not dropped as abandoned, while one never polled is; the dropped
// ticket's token, shown again, is answered from the view at most once
// before Redis tells the edge it is gone, and from then on Redis answers:
// expired. Joining again gives a new place and a token the view answers.
func TestQueueViewSeenAndGone(t *testing.T) {
	starts := time.Now().Add(time.Hour)
	q := newQueueEnv(t, 10, starts, seckill.SaleRules{AbandonAfter: seckill.Duration(800 * time.Millisecond)})
	q.w.tick = 20 * time.Millisecond
	var next float64
	q.w.place = func() float64 { next += 0.1; return next } // 1 first, then 2, 3, 4
	ctx := context.Background()
	var toks [5]pollToken
	for u := int64(1); u <= 4; u++ {
		toks[u] = q.token(t, u, q.join(t, u))
	}
	// 1 (the head) polls Redis every 300 ms; 2 and 3 poll from the view
	// every 100 ms, for 2 s; 4 does not poll.
	polls := 0
	for i := 0; i < 20; i++ {
		if i%3 == 0 {
			q.poll(t, 1)
		}
		for _, u := range []int64{2, 3} {
			st, ok, _ := q.w.fromView(ctx, q.it, toks[u], 1)
			if !ok || st.State != qWaiting || st.Position != u-1 && st.Position != u {
				t.Fatalf("poll %d of user %d: %+v %v", i, u, st, ok)
			}
			polls++
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Redis's own answer: 1, 2 and 3 wait, 4 was dropped.
	a, b, c, d := q.poll(t, 1), q.poll(t, 2), q.poll(t, 3), q.poll(t, 4)
	if a.State != qWaiting || b.State != qWaiting || c.State != qWaiting || d.State != qExpired || a.Waiting != 3 {
		t.Fatalf("after %d polls from the view: %+v %+v %+v %+v", polls, a, b, c, d)
	}
	// 4 shows its old token: answered from the view at most once, then
	// told gone by the script run that handed the poll to Redis.
	var views int
	for range 5 {
		if _, ok, _ := q.w.fromView(ctx, q.it, toks[4], 1); ok {
			views++
		}
		time.Sleep(30 * time.Millisecond)
	}
	if views > 1 {
		t.Fatalf("a dropped ticket answered from the view %d times", views)
	}
	// 4 joins again: a new place, a new token the view answers; the old
	// token stays gone.
	nt := q.token(t, 4, q.join(t, 4))
	if nt.Place == toks[4].Place || nt.Ticket != toks[4].Ticket {
		t.Fatalf("joined again: %+v, was %+v", nt, toks[4])
	}
	if st, ok, _ := q.w.fromView(ctx, q.it, nt, 1); !ok || st.Position != 4 {
		t.Fatalf("the new token: %+v %v", st, ok)
	}
	if _, ok, _ := q.w.fromView(ctx, q.it, toks[4], 1); ok {
		t.Fatal("the old token answered from the view after it was gone")
	}
}

// TestQueueViewRedisDown: with Redis unreachable a view older than stale
// answers nothing (the script's 503 answers instead).
func TestQueueViewRedisDown(t *testing.T) {
	q := newQueueEnv(t, 10, time.Now().Add(time.Hour), seckill.SaleRules{})
	q.w.tick, q.w.stale = 10*time.Millisecond, 100*time.Millisecond
	tok, tok2 := q.token(t, 1, q.join(t, 1)), q.token(t, 2, q.join(t, 2))
	if tok2.Place > tok.Place {
		tok = tok2 // the one behind the head
	}
	if _, ok, _ := q.w.fromView(context.Background(), q.it, tok, 1); !ok {
		t.Fatal("not answered from a fresh view")
	}
	if err := q.rdb.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	if st, ok, _ := q.w.fromView(context.Background(), q.it, tok, 1); ok {
		t.Fatalf("answered from a view %v old with Redis gone: %+v", 150*time.Millisecond, st)
	}
}

// TestQueueViewRecordsOncePerInterval: a ticket polled from the view every
// 50 ms is handed to Redis about once per half of abandon_after
// (recordEvery), not at every poll (its last-poll score in Redis moves
// that seldom), yet the score is never further behind its latest poll
// than that, so a ticket that keeps polling is never dropped (the script
// drops after abandon_after + recordEvery).
func TestQueueViewRecordsOncePerInterval(t *testing.T) {
	const abandon = time.Second
	every := abandon / 2
	starts := time.Now().Add(time.Hour)
	q := newQueueEnv(t, 10, starts, seckill.SaleRules{AbandonAfter: seckill.Duration(abandon)})
	q.w.tick = 20 * time.Millisecond
	ctx := context.Background()
	seenKey := rkeys.Space(q.w.prefix).Queue(q.it.ID).Seen
	var next float64
	q.w.place = func() float64 { next += 0.1; return next } // 1 is the head, 2 behind it
	q.join(t, 1)
	tok := q.token(t, 2, q.join(t, 2))
	scores := map[float64]bool{}
	var last time.Time
	for i := 0; i < 60; i++ { // 3 s
		q.poll(t, 1) // the head, by Redis: a script run each time (the view's refreshes)
		st, ok, err := q.w.fromView(ctx, q.it, tok, 1)
		if err != nil || !ok || st.State != qWaiting {
			t.Fatalf("poll %d: %+v %v %v", i, st, ok, err)
		}
		last = time.Now()
		q.poll(t, 1) // hands the poll (if recorded) to Redis
		s, err := q.rdb.ZScore(ctx, seenKey, "2").Result()
		if err != nil {
			t.Fatalf("poll %d: the ticket's last poll in Redis: %v", i, err)
		}
		if behind := last.Sub(time.UnixMilli(int64(s))); behind > every+5*time.Millisecond {
			t.Fatalf("poll %d: Redis's last poll of the ticket %s behind its latest poll (at most %s)", i, behind, every)
		}
		scores[s] = true
		time.Sleep(50 * time.Millisecond)
	}
	// 3 s of polls (60, plus the join) at one recording per 500 ms: at
	// most 8 distinct scores; every poll recorded would give about 60.
	if len(scores) > 8 || len(scores) < 3 {
		t.Fatalf("the ticket's last poll was recorded %d times in 60 polls over 3 s (want one per %s)", len(scores), every)
	}
	// The ticket stops polling (at last): it is dropped no sooner than
	// abandon_after after that (its score is at most every behind, the
	// script drops after abandon_after + every), and not much later.
	waitingKey := rkeys.Space(q.w.prefix).Queue(q.it.ID).Waiting
	for {
		q.poll(t, 1) // the head keeps the steps running
		_, err := q.rdb.ZScore(ctx, waitingKey, "2").Result()
		if err == redis.Nil {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(last) > abandon+every+2*time.Second {
			t.Fatalf("still waiting %s after its last poll (abandon_after %s)", time.Since(last), abandon)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if after := time.Since(last); after < abandon {
		t.Fatalf("dropped %s after its last poll, before abandon_after (%s)", after, abandon)
	} else {
		t.Logf("dropped %s after its last poll (abandon_after %s, at most %s later)", after, abandon, every)
	}
}

// TestTokenChars: exactly letters, digits, '-', '_' and '.' pass (the
// poll answer writes such strings without escaping).
func TestTokenChars(t *testing.T) {
	for c := range 256 {
		want := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
		if got := tokenChars("ab" + string([]byte{byte(c)}) + "yz"); got != want {
			t.Errorf("byte %#x: %v, want %v", c, got, want)
		}
	}
	if !tokenChars("") || tokenChars("a\\nb") || tokenChars(`a"b`) || tokenChars("a<b") {
		t.Error("tokenChars of the edge cases")
	}
}

// TestPollTokensRemembered: an edge remembers the tokens it opened (no
// HMAC at their next poll), at most maxOpened, and still refuses a
// remembered token's MAC with another payload, user or item.
func TestPollTokensRemembered(t *testing.T) {
	p := newPollTokens([]byte("secret-1"), nil)
	tok := pollToken{User: 7, Item: 3, Ticket: "ab12", Place: 0.5, Issued: time.UnixMilli(1_764_567_890_123), Run: "0123456789ab"}
	s := p.sign(tok)
	if got, ok := p.open(s, 7, 3); !ok || got != tok {
		t.Fatalf("open: %+v %v", got, ok)
	}
	payload, mac, _ := strings.Cut(s, ".")
	if got, ok := p.seen.get(payload, mac); !ok || got != tok {
		t.Fatalf("not remembered: %+v %v", got, ok)
	}
	other := p.sign(pollToken{User: 8, Item: 3, Ticket: "cd34", Place: 0.25})
	otherPayload, _, _ := strings.Cut(other, ".")
	for _, c := range []struct {
		name       string
		tok        string
		user, item int64
	}{
		{"another payload with its MAC", otherPayload + "." + mac, 8, 3},
		{"another user", s, 8, 3},
		{"another item", s, 7, 4},
	} {
		if got, ok := p.open(c.tok, c.user, c.item); ok {
			t.Errorf("%s: opened as %+v", c.name, got)
		}
	}
	// Bounded: two generations of maxOpened/2; a token of the older one is
	// found and moved to the newer.
	o := newOpenedTokens()
	o.put("p0", "m0", tok)
	for i := range maxOpened/2 - 1 {
		o.put("p", "x"+strconv.Itoa(i), pollToken{})
	}
	o.put("p", "y", pollToken{}) // the first generation full: a second one
	if _, ok := o.get("p0", "m0"); !ok {
		t.Fatal("a token of the older generation forgotten")
	}
	for i := range 3 * maxOpened {
		o.put("p", "z"+strconv.Itoa(i), pollToken{})
		if n := len(o.cur) + len(o.old); n > maxOpened {
			t.Fatalf("%d tokens remembered", n)
		}
	}
}
