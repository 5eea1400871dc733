package edge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"seckill"
)

// Polls answered without Redis. A waiting user's poll only needs to know
// that the ticket is still behind the head of the queue, about how far,
// and that the item is not sold out. Each edge keeps a view of each queue
// (queueView: the places of the first 128 tickets, the pre-queue's size,
// the range of arrival numbers, the units left), refreshed by a step of
// the waiting room's script, and a poll that shows its signed poll token (the ticket's place,
// pollTokens) behind the view's head is answered from it:
//
//   - at most one poll per tick and edge refreshes the view (it runs the
//     script: the admission step, exactly as before); the others read it
//     while it is younger than a tick, or than stale while a refresh is on
//     its way or failed (Redis unreachable for less than stale);
//   - a poll answered from the view is remembered (seen) and handed to
//     Redis by the next run of the script (within about a tick, whether
//     or not more polls come: flushPolls), so the ticket counts as polled
//     (abandon_after) at the time of that poll, unless this edge handed a
//     poll of the same ticket to Redis less than half of abandon_after ago,
//     or its token was signed that recently (roomView.record: most polls
//     then cost Redis nothing); a ticket this edge saw confirmed waiting
//     less than abandon_after before goes unchecked (one ZADD XX GT per
//     1,000: it cannot have been dropped since), the others are checked
//     against their place, and a ticket Redis no longer has waiting
//     (dropped, placed again) is told back (gone) and asked of Redis from
//     then on;
//   - a ticket at or before the head (perhaps admitted), without a token, a
//     view too old, or Redis unreachable for the refresh: the script
//     answers, exactly, as before.
//
// The view never admits anyone and never tells "admitted": the pass comes
// only from the script. Positions from the view are exact among the first
// 128 tickets and estimates past them: in the pre-queue the places are
// uniform between the 128th and 1, so the rank is interpolated (off by
// about the square root of the queue's size); after the start, between
// the 128th or the lowest arrival number and the highest (exact while no
// ticket between them was dropped).

// queueView is what an edge knows of one queue from its last step.
type queueView struct {
	Fetched time.Time // this edge's clock when the script was called
	Now     time.Time // Redis's clock in the script
	Run     string    // the Redis server's run_id
	Heads   []float64 // the places of the first waiting tickets (up to 128), in order
	Waiting int64
	Pre     int64   // waiting with a pre-queue place (in [0,1))
	SeqMin  float64 // lowest and highest arrival number waiting (after the start)
	SeqMax  float64
	Left    int64 // units left
}

// position estimates the rank (1 = next) of a waiting ticket at place:
// exact among the first tickets (Heads), interpolated past them.
func (v queueView) position(place float64) int64 {
	k := int64(len(v.Heads))
	if k == 0 {
		return 1
	}
	last := v.Heads[k-1]
	if place <= last || k >= v.Waiting {
		return int64(sort.SearchFloat64s(v.Heads, place)) + 1
	}
	if place < 1 { // pre-queue past the first k: uniform between last and 1
		rest := v.Pre - k
		if rest <= 1 {
			return k + 1
		}
		f := (place - last) / (1 - last)
		return min(v.Pre, k+max(1, int64(math.Round(f*float64(rest)))))
	}
	if last < 1 { // the first k all in the pre-queue: count from the first arrival
		k, last = v.Pre, v.SeqMin-1
	}
	// between last and the highest arrival number (exact without gaps)
	rest, span := v.Waiting-k, v.SeqMax-last
	if rest <= 0 || span <= 0 {
		return k + 1
	}
	return k + max(1, int64(math.Round((place-last)*float64(rest)/span)))
}

// seenPoll is a poll answered from the view, not yet told to Redis.
type seenPoll struct {
	user  int64
	place float64   // the ticket's place, as in its token
	at    time.Time // when it was made (Redis counts it then, told however late)
	// known: when the last poll of the ticket this edge saw Redis confirm
	// waiting at that place was made (zero: none; recState.known)
	known time.Time
	epoch uint64 // roomView.epoch when recorded (known is of that server)
}

// recKey names a ticket at a place: a user has one ticket per item, and a
// ticket placed again (dropped, then joined again) is another key.
type recKey struct {
	user  int64
	place float64
}

func (s seenPoll) key() recKey { return recKey{user: s.user, place: s.place} }

func seenOf(tok pollToken) seenPoll { return seenPoll{user: tok.User, place: tok.Place} }

// recState is what an edge remembers of a ticket whose polls it recorded.
type recState struct {
	at time.Time // when it last handed a poll of the ticket to Redis
	// known: the latest of those polls Redis confirmed the ticket still
	// waiting at its place for (its last poll in Redis is at least that
	// recent); zero: none yet. A poll recorded less than abandon_after
	// after it needs no check (queueScript: a plain ZADD XX GT).
	known time.Time
}

// roomView is an edge's view of one queue and the polls it answered.
type roomView struct {
	mu         sync.Mutex
	view       queueView
	valid      bool
	refreshing bool
	since      time.Time     // when the refresh on its way began (refreshing)
	done       chan struct{} // closed when it ends
	err        error         // of the last refresh
	seen       []seenPoll
	recorded   map[recKey]recState  // the tickets whose polls this edge handed to Redis
	gone       map[recKey]time.Time // tickets Redis no longer has waiting there, since when
	run        string               // the Redis server's run_id, as last told (observe)
	item       seckill.Item         // of the last run (flushPolls; ID 0: none yet)
	epoch      uint64               // how many times run changed (observe)

	// the queue's poll spread interval (queue_timing.go) and its inputs
	spread      float64
	spreadKey   spreadKey
	spreadValid bool
}

// maxSeen bounds the polls an edge holds for Redis per queue (while Redis
// is unreachable they pile up; past the bound they are not recorded, and
// a ticket not recorded for abandon_after is dropped).
const maxSeen = 100_000

// maxGone bounds the gone tickets an edge remembers per queue; past it the
// oldest half are forgotten (their next poll from the view is told gone
// again by the next run).
const maxGone = 100_000

func (w *waitingRoom) view(item int64) *roomView {
	w.mu.Lock()
	defer w.mu.Unlock()
	v := w.views[item]
	if v == nil {
		v = &roomView{gone: map[recKey]time.Time{}, recorded: map[recKey]recState{}}
		w.views[item] = v
	}
	return v
}

// maxRecorded bounds the tickets an edge remembers having recorded, per
// queue; past it those recorded longer ago than the interval are
// forgotten, then any (a forgotten ticket's next poll is recorded again).
const maxRecorded = 200_000

// record notes a poll answered from the view for Redis (abandon_after),
// unless this edge handed a poll of that ticket to Redis less than every
// (recordEvery: half of abandon_after) ago: a ticket polled every
// poll_after seconds is recorded about once every max(poll_after, every)
// seconds, not at each poll, so most polls cost Redis nothing. Redis
// counts a recorded poll when it was made (seenPoll.at), however late the
// edge's next script run tells it. Its last poll in Redis is then at most
// every older than its last poll, and the script drops a ticket only
// after abandon_after + every without one (dropAfter): never before
// abandon_after without a poll, never later than abandon_after + every
// (and a step). A recording lost with its edge (held, not told) lets the
// ticket go every + two of its gaps without one in Redis: polls every
// poll_after (at most a third of abandon_after) still keep it
// (TestQueueRecordEdgeDies). It reports whether the poll is handed over.
//
// A ticket this edge has not recorded yet starts from its token (issued,
// Redis's clock): the script that signed it had the ticket waiting at its
// place and counted a poll of it then, so when that is less than
// abandon_after ago the token stands for a recorded poll Redis confirmed
// (recState.known), and the ticket's first poll here is not handed over
// before every after it, unchecked. v.mu held.
func (v *roomView) record(p seenPoll, issued time.Time, run string, every, abandon time.Duration) bool {
	now := time.Now()
	k := p.key()
	r, ok := v.recorded[k]
	if !ok {
		r = v.fromToken(issued, run, now, abandon)
	}
	if !r.at.IsZero() && now.Sub(r.at) < every {
		if !ok {
			v.remember(k, r, now, every)
		}
		return false
	}
	if len(v.seen) >= maxSeen {
		return false
	}
	p.at, p.known, p.epoch = now, r.known, v.epoch
	v.seen = append(v.seen, p)
	r.at = now
	v.remember(k, r, now, every)
	return true
}

// fromToken is what a poll token issued at issued (Redis's clock) tells
// of its ticket at now: a poll Redis counted and confirmed waiting then,
// in this edge's clock (by its view: Redis's clock at a time between the
// call and the reply, so the token seems older than it is, never
// younger), when less than abandon_after ago and signed by an edge on the
// Redis server this edge has now (run: a token of another server may be
// of a ticket that server lost); else nothing. v.mu held.
func (v *roomView) fromToken(issued time.Time, run string, now time.Time, abandon time.Duration) recState {
	if issued.IsZero() || !v.valid {
		return recState{}
	}
	at := v.view.Fetched.Add(issued.Sub(v.view.Now))
	if now.Sub(at) >= abandon || at.After(now) || run == "" || run != v.run {
		return recState{}
	}
	return recState{at: at, known: at}
}

// remember keeps r as what this edge knows of ticket k, within
// maxRecorded: past it those recorded longer ago than every are forgotten
// first, then any, down to half the bound. v.mu held.
func (v *roomView) remember(k recKey, r recState, now time.Time, every time.Duration) {
	if _, ok := v.recorded[k]; !ok && len(v.recorded) >= maxRecorded {
		for id, r := range v.recorded { // those recorded longer ago than every first
			if now.Sub(r.at) >= every {
				delete(v.recorded, id)
			}
		}
		for id := range v.recorded { // then any, down to half the bound
			if len(v.recorded) <= maxRecorded/2 {
				break
			}
			delete(v.recorded, id)
		}
	}
	v.recorded[k] = r
}

// observe takes the Redis server's run_id a run of the script told (""
// when not told). Another server than the last (a restart, a failover)
// voids what the edge knew: a restarted server may have lost the last
// writes, tickets the edge saw waiting among them, whose unchecked polls
// (ZADD XX) would not tell. The edge forgets the tickets it recorded and
// those gone (each is recorded and checked at its next poll), and trusts
// only poll tokens of the new server (fromToken). The first told voids
// nothing: until then every run asks for it, so no run confirmed a poll
// without telling it. same: the run told the server of the last one. v.mu
// held.
func (v *roomView) observe(run string) (same bool) {
	switch {
	case run == "":
		return false
	case run == v.run:
		return true
	case v.run == "":
		v.run = run
		return false
	}
	v.run = run
	v.epoch++
	clear(v.recorded)
	clear(v.gone)
	return false
}

// runOf is the run_id of the Redis server this edge last saw run the
// waiting room of item ("" none yet).
func (w *waitingRoom) runOf(item int64) string {
	v := w.view(item)
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.run
}

// update takes a newer view (of a step) and the tickets a run found gone;
// v.mu held.
func (v *roomView) update(step bool, view queueView, gone []recKey) {
	if step && (!v.valid || !view.Fetched.Before(v.view.Fetched)) {
		v.view, v.valid = view, true
	}
	if len(v.gone)+len(gone) > maxGone {
		cut := time.Now().Add(-time.Minute)
		for id, at := range v.gone {
			if at.Before(cut) || len(v.gone) > maxGone/2 {
				delete(v.gone, id)
			}
		}
	}
	for _, id := range gone {
		v.gone[id] = time.Now()
		delete(v.recorded, id)
	}
}

// confirm notes the polls Redis confirmed their tickets waiting for
// (recState.known); v.mu held.
func (v *roomView) confirm(polls []seenPoll) {
	for _, p := range polls {
		k := p.key()
		if r, ok := v.recorded[k]; ok && p.at.After(r.known) {
			r.known = p.at
			v.recorded[k] = r
		}
	}
}

// fromView answers a poll of a waiting ticket from this edge's view of the
// queue; ok false: ask the script. It refreshes the view when it is a tick
// old and no other poll does (one script run, which also admits).
//
// Redis slow, stalled or unreachable: the view answers while it is younger
// than stale. Past that a poll waits for the refresh on its way, at most
// until that refresh is stale old, and answers from the new view, or 503
// (the refresh's error, or none yet): it does not send a script of its own
// to a Redis that has not answered the last one (one script per tick and
// edge however many polls come), and the poll that ran a failed refresh
// does not wait a second command budget for the script.
func (w *waitingRoom) fromView(ctx context.Context, it seckill.Item, tok pollToken, factor float64) (st queueStatus, ok bool, err error) {
	v := w.view(it.ID)
	me := seenOf(tok)
	v.mu.Lock()
	for {
		if _, g := v.gone[me.key()]; g {
			v.mu.Unlock()
			return st, false, nil
		}
		age := time.Since(v.view.Fetched)
		if !v.refreshing && (!v.valid || age >= w.tick) || v.valid && age <= w.stale {
			break // refresh it, or answer from it
		}
		if !v.valid {
			v.mu.Unlock()
			return st, false, nil // no view yet, its first refresh on its way: the script answers
		}
		done, wait := v.done, time.Until(v.since.Add(w.stale))
		v.mu.Unlock()
		if err := waitFor(ctx, done, wait); err != nil {
			return st, false, seckill.Unavailable(fmt.Errorf("waiting for the view of the waiting room of item %d: %w", it.ID, err),
				"the waiting room cannot be reached right now; retry shortly")
		}
		v.mu.Lock()
		if time.Since(v.view.Fetched) > w.stale { // that refresh failed
			err := v.err
			v.mu.Unlock()
			if err == nil {
				err = seckill.Unavailable(fmt.Errorf("refreshing the view of the waiting room of item %d", it.ID), "the waiting room cannot be reached right now; retry shortly")
			}
			return st, false, err
		}
	}
	refresh := !v.refreshing && (!v.valid || time.Since(v.view.Fetched) >= w.tick)
	if v.record(me, tok.Issued, tok.Run, recordEvery(it), it.QueueAbandon()) {
		w.recordedPolls.Add(1)
	}
	if refresh {
		v.refreshing, v.since, v.done = true, time.Now(), make(chan struct{})
	}
	view := v.view
	v.mu.Unlock()
	if refresh {
		err := w.refresh(ctx, v, it, factor)
		v.mu.Lock()
		view = v.view
		_, g := v.gone[me.key()]
		v.mu.Unlock()
		if err != nil && time.Since(view.Fetched) > w.stale {
			return st, false, err
		}
		if g {
			return st, false, nil
		}
	}
	if len(view.Heads) == 0 || tok.Place <= view.Heads[0] {
		return st, false, nil // at the head or past it: perhaps admitted
	}
	// A ticket that arrived after the view was taken is past everyone in
	// it: never told a position past the number waiting.
	pos := view.position(tok.Place)
	st = queueStatus{State: qWaiting, Ticket: tok.Ticket, Position: pos, Waiting: max(view.Waiting, pos),
		Left: view.Left, Now: view.Now.Add(time.Since(view.Fetched)), Place: tok.Place, HasPlace: true, FromView: true}
	if st.Left <= 0 {
		st.State = qSoldOut
	}
	w.viewPolls.Add(1)
	return st, true, nil
}

// refresh runs one step of the script for the view v (v.refreshing set by
// the caller, cleared here whatever happens, a panic included). The step
// serves every poll of the edge, not only the one that runs it: the
// client hanging up does not cancel it (the Redis client's own timeouts
// and command budget bound it).
func (w *waitingRoom) refresh(ctx context.Context, v *roomView, it seckill.Item, factor float64) error {
	var err error
	defer func() {
		v.mu.Lock()
		v.refreshing, v.err = false, err
		close(v.done)
		v.mu.Unlock()
	}()
	_, err = w.run(context.WithoutCancel(ctx), opStep, it, 0, factor)
	return err
}

// flushPolls hands Redis, until ctx ends, the polls an edge answered from
// its views and still holds when no poll came to refresh the view for a
// tick (a quiet edge): a poll recorded while the view was fresh waits for
// the edge's next script run, which only a later poll at this edge would
// run, and a ticket whose next polls go to other edges (that recorded it
// lately, so do not record it again) would be dropped although it polls
// (TestQueueRecordQuietEdge). One step per view and tick at most, the
// same as a poll's refresh (factor: the edge's admission factor).
func (w *waitingRoom) flushPolls(ctx context.Context, factor func() float64) {
	every := w.tick
	if every <= 0 {
		every = queueTick
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var views []*roomView
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		views = views[:0]
		for _, v := range w.views {
			views = append(views, v)
		}
		w.mu.Unlock()
		for _, v := range views {
			v.mu.Lock()
			due := v.item.ID != 0 && !v.refreshing && len(v.seen) > 0 && time.Since(v.view.Fetched) >= every
			if due {
				v.refreshing, v.since, v.done = true, time.Now(), make(chan struct{})
			}
			it := v.item
			v.mu.Unlock()
			if due {
				_ = w.refresh(ctx, v, it, factor()) // failed: the next tick tries again
			}
		}
	}
}

// waitFor waits for done at most wait: an error when it is not closed by
// then, or ctx ends first.
func waitFor(ctx context.Context, done <-chan struct{}, wait time.Duration) error {
	if wait <= 0 {
		select {
		case <-done:
			return nil
		default:
			return errors.New("no answer from Redis")
		}
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("no answer from Redis")
	}
}
