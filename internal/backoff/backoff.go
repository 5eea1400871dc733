// Package backoff is the capped exponential backoff every retry loop of
// seckill uses: Min, doubling up to Max, each wait spread by ±Jitter.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff hands out the waits between attempts. The zero value waits
// 100ms doubling to 5s without jitter. It is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	// Jitter spreads each wait uniformly by ±Jitter of it (0.2: ±20%).
	Jitter float64

	cur time.Duration
}

// Next returns the wait before the next attempt: Min after a Reset, then
// twice the previous one, at most Max (before jitter).
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 5 * time.Second
	}
	hi = max(hi, lo)
	if b.cur < lo {
		b.cur = lo
	} else {
		b.cur = min(b.cur*2, hi)
	}
	if b.Jitter <= 0 {
		return b.cur
	}
	j := min(b.Jitter, 1)
	return time.Duration(float64(b.cur) * (1 - j + 2*j*rand.Float64()))
}

// Reset makes the next wait Min again (after a success).
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits d or until ctx ends; it reports whether ctx is still live.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
