package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"seckill"
)

// roomPollRate is the polls a second the whole room sends when every
// waiting ticket polls exactly poll_after seconds after each answer, as
// told by queueTiming for its position.
func roomPollRate(e *Edge, it seckill.ItemView, n int64, now time.Time) (rate float64, head, tail int64) {
	for p := int64(1); p <= n; p++ {
		_, pa := e.queueTiming(it, queueStatus{State: qWaiting, Position: p, Waiting: n, Now: now})
		rate += 1 / float64(pa)
		if p == 1 {
			head = pa
		}
		tail = pa
	}
	return rate, head, tail
}

// The whole room stays within --queue-poll-rate, the head's faster polls
// included, while the budget can be met at all; and it uses the budget
// (the tail does not poll needlessly rarely).
func TestQueuePollRateWithinBudget(t *testing.T) {
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		n        int64
		perMin   int64
		budget   int
		abandon  time.Duration
		toStart  time.Duration
		feasible bool
	}{
		{100_000, 6000, 2000, 5 * time.Minute, 0, true}, // the lab's 100,000 (configs/lab/queue-100k.yaml)
		{100_000, 6000, 2000, 5 * time.Minute, 30 * time.Second, true},
		{100_000, 6000, 2000, 5 * time.Minute, 3 * time.Minute, true},
		{1_000, 6000, 2000, 5 * time.Minute, 0, true},
		{10_000, 60, 200, 5 * time.Minute, 0, true},
		{10_000, 60, 50, 5 * time.Minute, 0, false}, // 10,000 polling every 100 s (a third of abandon_after) are 100 a second
		{50_000, 600, 1000, 5 * time.Minute, 0, true},
		{200_000, 12000, 4000, 10 * time.Minute, 0, true},
		{1_000, 60, 2000, 5 * time.Minute, 0, true},       // a small queue: everyone at the 1 s floor or half its wait
		{100_000, 6000, 500, time.Minute, 0, false},       // the head alone, or the ceiling (20 s), needs more
		{300_000, 60000, 2000, 5 * time.Minute, 0, false}, // 1,000 admitted a second: the 1 s floor alone is 2,000
	} {
		t.Run(fmt.Sprintf("n=%d,%d/min,budget=%d,abandon=%s,toStart=%s", c.n, c.perMin, c.budget, c.abandon, c.toStart), func(t *testing.T) {
			e := &Edge{cfg: Config{QueuePollRate: c.budget}, queue: newWaitingRoom(nil, "", 0, 0)}
			it := seckill.ItemView{Item: seckill.Item{ID: 1, StartsAt: start, SaleRules: seckill.SaleRules{
				Allocation: seckill.AllocationQueue, NewUsersPerMinute: c.perMin, AbandonAfter: seckill.Duration(c.abandon)}}}
			rate, head, tail := roomPollRate(e, it, c.n, start.Add(-c.toStart))
			old := oldRoomPollRate(it, c.n, c.budget, start.Add(-c.toStart))
			t.Logf("%.0f polls/s (the old rule: %.0f), head every %d s, tail every %d s", rate, old, head, tail)
			if !c.feasible {
				if ceiling := int64(math.Ceil(c.abandon.Seconds() / 3)); tail > ceiling {
					t.Fatalf("tail polls every %d s, past a third of abandon_after (%d s): dropped", tail, ceiling)
				}
				return
			}
			if rate > float64(c.budget) {
				t.Fatalf("%.1f polls/s, budget %d", rate, c.budget)
			}
			if rate < 0.9*float64(c.budget) && rate < float64(c.n) && tail > 1 {
				t.Fatalf("%.1f polls/s: under 90%% of the budget %d while the tail waits %d s", rate, c.budget, tail)
			}
		})
	}
}

// oldRoomPollRate is the rule before the head counted in the budget
// (min(n/budget, wait/2)), for the log: 1.19 to 1.24 times the budget in
// the lab's 100,000-entrant runs.
func oldRoomPollRate(it seckill.ItemView, n int64, budget int, now time.Time) float64 {
	rate := float64(it.QueueRate()) / 60
	sum := 0.0
	for p := int64(1); p <= n; p++ {
		wait := float64(p) / rate
		if now.Before(it.StartsAt) {
			wait += it.StartsAt.Sub(now).Seconds()
		}
		pa := min(float64(n)/float64(budget), wait/2)
		pa = max(1, min(pa, it.QueueAbandon().Seconds()/3))
		sum += 1 / math.Ceil(pa)
	}
	return sum
}

func TestPollSpreadMonotone(t *testing.T) {
	prev := 0.0
	for n := int64(1000); n <= 1_000_000; n *= 2 {
		s := pollSpread(n, 100, 0, 2000, 1000)
		if s < prev {
			t.Fatalf("n=%d: spread %.2f s under %.2f s of a shorter queue", n, s, prev)
		}
		prev = s
	}
}

// appendJSON writes what encoding/json writes, or declines.
func TestQueueAnswerJSON(t *testing.T) {
	until := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	answers := []queueAnswer{
		{},
		{Ticket: "0123abcdef", State: qWaiting, Position: 12, Waiting: 100000, EtaSeconds: 3, PollAfter: 92, PollToken: "eyJ1Ijo.x-Y_z"},
		{Ticket: "ab", State: qAdmitted, AdmittedUntil: &until, Pass: "p.q"},
		{Ticket: "ab", State: qSoldOut, Position: -1, Waiting: math.MaxInt64, EtaSeconds: math.MinInt64},
		{Ticket: "a\"b", State: qWaiting},
		{Ticket: "<script>", State: qWaiting},
		{Ticket: "é", State: qWaiting},
		{Ticket: "t", State: qWaiting, Pass: "a b"},
		{Ticket: "t", State: qExpired, PollToken: "x\u2028"},
	}
	for i, a := range answers {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(a); err != nil {
			t.Fatal(err)
		}
		got, ok := a.appendJSON(nil)
		if !ok {
			if a.AdmittedUntil == nil && tokenChars(a.Ticket) && tokenChars(a.State) && tokenChars(a.Pass) && tokenChars(a.PollToken) {
				t.Fatalf("answer %d declined: %+v", i, a)
			}
			continue
		}
		if string(got) != want.String() {
			t.Fatalf("answer %d:\n got %s\nwant %s", i, got, want.String())
		}
	}
}

// TestQueuePollAfterCeiling: poll_after is never more than a third of
// abandon_after (docs/API.md), whole seconds rounded down, at least 1 s:
// with abandon_after at its minimum, 10 s, a ticket far back was told 4 s
// before the fix (a third rounded up): a lost recording and a poll between
// (2.5 s + 2 × 4 s, past the quarter of roomView.record) was dropped.
func TestQueuePollAfterCeiling(t *testing.T) {
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		abandon time.Duration
		want    int64
	}{
		{seckill.MinAbandonAfter, 3}, {11 * time.Second, 3}, {12 * time.Second, 4}, {2 * time.Second, 1},
		{5 * time.Minute, 100}, {seckill.MaxAbandonAfter, 1200},
	} {
		e := &Edge{cfg: Config{QueuePollRate: 1}, queue: newWaitingRoom(nil, "", 0, 0)}
		it := seckill.ItemView{Item: seckill.Item{ID: 1, StartsAt: start, SaleRules: seckill.SaleRules{
			Allocation: seckill.AllocationQueue, NewUsersPerMinute: 60, AbandonAfter: seckill.Duration(c.abandon)}}}
		_, pa := e.queueTiming(it, queueStatus{State: qWaiting, Position: 1_000_000, Waiting: 1_000_000, Now: start})
		if pa != c.want {
			t.Errorf("abandon_after %s: poll_after %d s, want %d", c.abandon, pa, c.want)
		}
	}
}

// TestPollSpreadExtremes: whatever its inputs (huge or empty queues, tiny
// or huge rates and budgets, a start far away, a ceiling under a second,
// NaN, ±Inf) pollSpread returns at once a finite interval of at least a
// second and at most the ceiling (when that is at least a second; finite
// when it is), and
// queueTiming a poll_after of at least a second.
func TestPollSpreadExtremes(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	bad := 0
	ns := []int64{math.MinInt64, -1, 0, 1, 2, 1 << 20, 1 << 40, math.MaxInt64}
	fs := []float64{-inf, -1, 0, 1e-300, 1.0 / 60, 0.5, 1, 100, 1e5, 1e300, inf, nan}
	for _, n := range ns {
		for _, rate := range fs {
			for _, toStart := range fs {
				for _, budget := range fs {
					for _, ceiling := range fs {
						s := pollSpread(n, rate, toStart, budget, ceiling)
						if math.IsNaN(s) || s < 1 || ceiling >= 1 && s > ceiling || !math.IsInf(ceiling, 1) && math.IsInf(s, 0) {
							if bad++; bad <= 5 {
								t.Errorf("pollSpread(%d, %g, %g, %g, %g) = %g", n, rate, toStart, budget, ceiling, s)
							}
						}
					}
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d calls out of bounds", bad, len(ns)*len(fs)*len(fs)*len(fs)*len(fs))
	}
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	e := &Edge{cfg: Config{QueuePollRate: 1}, queue: newWaitingRoom(nil, "", 0, 0)}
	for _, perMin := range []int64{0, 1, seckill.MaxNewUsersPerMinute} {
		for _, toStart := range []time.Duration{0, time.Second, 100 * 365 * 24 * time.Hour} {
			for _, pos := range []int64{0, 1, 1 << 40} {
				it := seckill.ItemView{Item: seckill.Item{ID: 1, StartsAt: start, SaleRules: seckill.SaleRules{
					Allocation: seckill.AllocationQueue, NewUsersPerMinute: perMin}}}
				for _, waiting := range []int64{0, pos} { // a view's count may be stale, or 0
					eta, pa := e.queueTiming(it, queueStatus{State: qWaiting, Position: pos, Waiting: waiting, Now: start.Add(-toStart)})
					if pa < 1 || pa > 100 || eta < 0 {
						t.Errorf("%d/min, %s to the start, position %d of %d: eta %d s, poll_after %d s", perMin, toStart, pos, waiting, eta, pa)
					}
				}
			}
		}
	}
	// the other states: admitted (its end past, near, far: Redis's clock
	// and the edge's), sold out, expired, bought, none
	it := seckill.ItemView{Item: seckill.Item{ID: 1, StartsAt: start, SaleRules: seckill.SaleRules{Allocation: seckill.AllocationQueue}}}
	for _, st := range []queueStatus{
		{State: qAdmitted, Now: start, Until: start.Add(-time.Hour)}, {State: qAdmitted, Now: start, Until: start.Add(time.Millisecond)},
		{State: qAdmitted, Now: start, Until: start.Add(24 * time.Hour)}, {State: qAdmitted, Now: start},
		{State: qSoldOut, Position: 5}, {State: qExpired}, {State: qBought}, {State: qNone},
	} {
		if eta, pa := e.queueTiming(it, st); eta != 0 || pa < 1 || pa > 30 {
			t.Errorf("%+v: eta %d s, poll_after %d s", st, eta, pa)
		}
	}
}
