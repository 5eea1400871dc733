package edge

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
)

// BuyerRecord is the exact record of who holds a unit (Redis, package stock).
type BuyerRecord interface {
	Buyer(ctx context.Context, itemID, userID int64) (string, bool, error)
}

// dedup remembers (user, item) pairs already accepted in a Bloom filter, so
// a repeat buyer is answered 409 without reaching the backend. A Bloom
// positive is always confirmed against the exact record before refusing:
// a false positive costs one Redis read, never an honest buyer's purchase.
//
// When the exact record cannot be read (Redis down or stalled), an
// unconfirmed positive is let through: the backend's reservation script is
// the authority and refuses a repeat buyer itself, so the edge keeps
// answering from what it holds instead of failing the request. Such
// positives are counted (Unconfirmed).
//
// Confirmed holders are remembered for a few seconds (bounded), so a bot
// clicking "buy" again and again costs no Redis read at all. The memory is
// short so that a unit given back (a failed order) is buyable again soon.
type dedup struct {
	mu     sync.RWMutex
	filter *bloom.BloomFilter
	exact  BuyerRecord

	cmu  sync.Mutex
	held map[pairID]heldEntry
	now  func() time.Time

	unconfirmed atomic.Int64
}

type pairID struct{ user, item int64 }

type heldEntry struct {
	ref     string
	expires time.Time
}

// Bounds of the memory of confirmed holders.
const (
	heldTTL = 10 * time.Second
	heldMax = 100_000
)

// newDedup returns a filter sized for n pairs at a 0.1% false-positive rate.
func newDedup(exact BuyerRecord, n uint) *dedup {
	if n == 0 {
		n = 2_000_000
	}
	return &dedup{filter: bloom.NewWithEstimates(n, 0.001), exact: exact, held: map[pairID]heldEntry{}, now: time.Now}
}

func pairKey(userID, itemID int64) []byte {
	b := strconv.AppendInt(nil, userID, 10)
	b = append(b, ':')
	return strconv.AppendInt(b, itemID, 10)
}

// add records an accepted pair.
func (d *dedup) add(userID, itemID int64) {
	d.mu.Lock()
	d.filter.Add(pairKey(userID, itemID))
	d.mu.Unlock()
}

// holds reports whether the user surely holds a unit of the item, and its
// order ref. The filter answers "no" for most honest buyers without any I/O.
// It never fails: a positive the exact record cannot confirm (Redis down)
// answers "not held" and lets the backend decide. The error result is
// always nil; it stays for callers that check it.
func (d *dedup) holds(ctx context.Context, userID, itemID int64) (string, bool, error) {
	d.mu.RLock()
	maybe := d.filter.Test(pairKey(userID, itemID))
	d.mu.RUnlock()
	if !maybe {
		return "", false, nil
	}
	k := pairID{userID, itemID}
	now := d.now()
	d.cmu.Lock()
	e, ok := d.held[k]
	d.cmu.Unlock()
	if ok && now.Before(e.expires) {
		return e.ref, true, nil
	}
	ref, held, err := d.exact.Buyer(ctx, itemID, userID)
	if err != nil {
		d.unconfirmed.Add(1)
		return "", false, nil
	}
	if !held {
		return "", false, nil
	}
	d.cmu.Lock()
	if len(d.held) >= heldMax {
		for victim := range d.held { // evict one at random
			delete(d.held, victim)
			break
		}
	}
	d.held[k] = heldEntry{ref: ref, expires: now.Add(heldTTL)}
	d.cmu.Unlock()
	return ref, true, nil
}

// unconfirmedCount is how many Bloom positives were let through because the
// exact record could not be read.
func (d *dedup) unconfirmedCount() int64 { return d.unconfirmed.Load() }
