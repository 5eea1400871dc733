package edge

import (
	"context"
	"strconv"
	"sync"

	"github.com/bits-and-blooms/bloom/v3"
)

// BuyerRecord is the exact record of who holds a unit (Redis, package stock).
type BuyerRecord interface {
	Buyer(ctx context.Context, itemID, userID int64) (string, bool, error)
}

// Dedup remembers (user, item) pairs already accepted in a Bloom filter, so
// a repeat buyer is answered 409 without reaching the backend. A Bloom
// positive is always confirmed against the exact record before refusing:
// a false positive costs one Redis read, never an honest buyer's purchase.
type Dedup struct {
	mu     sync.RWMutex
	filter *bloom.BloomFilter
	exact  BuyerRecord
}

// NewDedup returns a filter sized for n pairs at a 0.1% false-positive rate.
func NewDedup(exact BuyerRecord, n uint) *Dedup {
	if n == 0 {
		n = 2_000_000
	}
	return &Dedup{filter: bloom.NewWithEstimates(n, 0.001), exact: exact}
}

func pairKey(userID, itemID int64) []byte {
	b := strconv.AppendInt(nil, userID, 10)
	b = append(b, ':')
	return strconv.AppendInt(b, itemID, 10)
}

// Add records an accepted pair.
func (d *Dedup) Add(userID, itemID int64) {
	d.mu.Lock()
	d.filter.Add(pairKey(userID, itemID))
	d.mu.Unlock()
}

// Held reports whether the user surely holds a unit of the item, and its
// order ref. The filter answers "no" for most honest buyers without any I/O.
func (d *Dedup) Held(ctx context.Context, userID, itemID int64) (string, bool, error) {
	d.mu.RLock()
	maybe := d.filter.Test(pairKey(userID, itemID))
	d.mu.RUnlock()
	if !maybe {
		return "", false, nil
	}
	return d.exact.Buyer(ctx, itemID, userID)
}
