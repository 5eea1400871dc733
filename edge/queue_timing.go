package edge

import (
	"math"

	"seckill"
)

// queueTiming estimates the wait (seconds) and says when to poll again.
// The wait is the position over the admission rate, plus the time to the
// start. Polls are spread so the whole waiting room sends at most
// QueuePollRate polls a second, the head's included (pollSpread): a
// ticket polls after half its wait (sooner near the head, where the turn
// comes soon), but never later than the queue's spread interval, and
// between a second and a third of abandon_after (or the ticket would be
// dropped). The spread interval is the shortest that keeps the sum of
// every waiting ticket's polls a second under the budget.
func (e *Edge) queueTiming(it seckill.ItemView, st queueStatus) (eta, pollAfter int64) {
	rate := float64(it.QueueRate()) / 60 // per second
	switch st.State {
	case qAdmitted:
		return 0, max(1, min(30, int64(st.Until.Sub(st.Now).Seconds())))
	case qWaiting:
	default:
		return 0, 10
	}
	var toStart float64
	if st.Now.Before(it.StartsAt) {
		toStart = it.StartsAt.Sub(st.Now).Seconds()
	}
	wait := float64(st.Position)/rate + toStart
	// a third of abandon_after in whole seconds, rounded down: poll_after
	// is rounded up, and must not pass it
	ceiling := max(1, math.Floor(it.QueueAbandon().Seconds()/3))
	spread := e.queue.spreadOf(it.ID, spreadKey{
		waiting: st.Waiting, rate: rate, toStart: math.Round(toStart), budget: float64(e.pollBudget()), ceiling: ceiling,
	})
	pa := max(1, min(wait/2, spread, ceiling))
	return int64(math.Ceil(wait)), int64(math.Ceil(pa))
}

func (e *Edge) pollBudget() int {
	if e.cfg.QueuePollRate <= 0 {
		return DefaultQueuePollRate
	}
	return e.cfg.QueuePollRate
}

// spreadKey is what a queue's spread interval depends on.
type spreadKey struct {
	waiting                        int64
	rate, toStart, budget, ceiling float64
}

// spreadOf returns the spread interval of an item's queue (pollSpread),
// computed again only when its inputs change (at most once per answer
// that changes them, usually once per tick).
func (w *waitingRoom) spreadOf(item int64, k spreadKey) float64 {
	v := w.view(item)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.spreadValid && v.spreadKey == k {
		return v.spread
	}
	v.spread, v.spreadKey, v.spreadValid = pollSpread(k.waiting, k.rate, k.toStart, k.budget, k.ceiling), k, true
	return v.spread
}

// pollSpread is the spread interval T of a queue of n waiting tickets,
// admitted at rate a second, toStart seconds before the start: ticket p (1
// = next) waits w(p) = p/rate + toStart and polls every
// clamp(min(w(p)/2, T), 1, ceiling) seconds, and T is the least interval
// in [1, ceiling] for which the polls of all n tickets add up to at most
// budget a second (pollsPerSecond). When even T = ceiling leaves more than
// the budget (the head alone polls more: a budget under about
// 2 × rate × (1 + ln(n/(2 rate))) a second), it is the ceiling: a ticket
// polling less often than that would be dropped as abandoned.
func pollSpread(n int64, rate, toStart, budget, ceiling float64) float64 {
	if !(ceiling >= 1) { // under a second, or NaN
		ceiling = 1
	}
	if n <= 0 || !(budget > 0) || !(rate > 0) { // NaN too
		return ceiling
	}
	if !(toStart > 0) {
		toStart = 0
	}
	lo, hi := 1.0, ceiling
	if pollsPerSecond(n, rate, toStart, hi) > budget {
		return hi
	}
	if pollsPerSecond(n, rate, toStart, lo) <= budget {
		return lo
	}
	for range 40 { // to about ceiling / 2^40
		mid := (lo + hi) / 2
		if pollsPerSecond(n, rate, toStart, mid) > budget {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// pollsPerSecond is the polls a second of n waiting tickets when ticket p
// polls every max(1, min(w(p)/2, t)) seconds (t ≥ 1), w(p) = p/rate +
// toStart: the first tickets, whose half wait is at most a second, once a
// second each; the next, whose half wait is under t, 2/w(p) each (summed
// as an integral, within a poll a second of the exact sum); the rest 1/t
// each.
func pollsPerSecond(n int64, rate, toStart, t float64) float64 {
	N := float64(n)
	// tickets with w(p)/2 ≤ 1: p ≤ rate (2 - toStart)
	ones := min(N, max(0, math.Floor(rate*(2-toStart))))
	// tickets with w(p)/2 < t: p < rate (2t - toStart)
	head := min(N, max(ones, math.Ceil(rate*(2*t-toStart))-1))
	sum := ones
	if head > ones {
		// Σ_{p=ones+1}^{head} 2 rate / (p + rate toStart)
		c := rate * toStart
		sum += 2 * rate * math.Log((head+c+0.5)/(ones+c+0.5))
	}
	return sum + (N-head)/t
}
