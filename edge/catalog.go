package edge

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
	"golang.org/x/sync/singleflight"

	"seckill"
	"seckill/backend"
)

// CatalogSource is where the catalogue comes from (the backend).
type CatalogSource interface {
	Items(ctx context.Context) ([]backend.ItemView, error)
}

// Catalog is the edge's short-lived copy of the item list. Reads never wait
// for the backend while a fresh enough copy exists; when it is stale, one
// request refreshes it (singleflight) and the others wait for that one. On a
// failed refresh the stale copy keeps being served.
//
// It also keeps a Bloom filter of every item id seen, so a request for an id
// that never existed is answered 404 without touching Redis or the backend,
// and the sold-out markers.
type Catalog struct {
	src CatalogSource
	ttl time.Duration
	sf  singleflight.Group
	now func() time.Time

	snap    atomic.Pointer[catalogSnap]
	knownMu sync.RWMutex
	known   *bloom.BloomFilter
	soldOut sync.Map // item id -> true
	refresh atomic.Int64
}

type catalogSnap struct {
	at    time.Time
	list  []backend.ItemView
	byID  map[int64]backend.ItemView
	stale bool
}

// NewCatalog returns a catalogue that refreshes after ttl.
func NewCatalog(src CatalogSource, ttl time.Duration) *Catalog {
	if ttl <= 0 {
		ttl = time.Second
	}
	return &Catalog{src: src, ttl: ttl, now: time.Now, known: bloom.NewWithEstimates(1_000_000, 0.001)}
}

// Refreshes returns how many times the catalogue was fetched from the backend.
func (c *Catalog) Refreshes() int64 { return c.refresh.Load() }

func (c *Catalog) get(ctx context.Context) (*catalogSnap, error) {
	s := c.snap.Load()
	if s != nil && !s.stale && c.now().Sub(s.at) < c.ttl {
		return s, nil
	}
	v, err, _ := c.sf.Do("items", func() (any, error) {
		if s2 := c.snap.Load(); s2 != nil && !s2.stale && c.now().Sub(s2.at) < c.ttl {
			return s2, nil
		}
		// The refresh must not die with the first caller's request.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		list, err := c.src.Items(ctx)
		if err != nil {
			return nil, err
		}
		c.refresh.Add(1)
		return c.install(list), nil
	})
	if err != nil {
		if s != nil {
			return s, nil // serve stale rather than fail
		}
		return nil, err
	}
	return v.(*catalogSnap), nil
}

func (c *Catalog) install(list []backend.ItemView) *catalogSnap {
	ns := &catalogSnap{at: c.now(), list: list, byID: make(map[int64]backend.ItemView, len(list))}
	c.knownMu.Lock()
	for _, it := range list {
		ns.byID[it.ID] = it
		c.known.Add(idKey(it.ID))
		if it.StockLeft > 0 {
			c.soldOut.Delete(it.ID) // a released unit makes it buyable again
		}
	}
	c.knownMu.Unlock()
	c.snap.Store(ns)
	return ns
}

func idKey(id int64) []byte { return strconv.AppendInt(nil, id, 10) }

// Known reports whether an item id may exist (Bloom filter: no false negatives).
func (c *Catalog) Known(id int64) bool {
	c.knownMu.RLock()
	defer c.knownMu.RUnlock()
	return c.known.Test(idKey(id))
}

// Learn adds an item id to the known set (an item just created).
func (c *Catalog) Learn(id int64) {
	c.knownMu.Lock()
	c.known.Add(idKey(id))
	c.knownMu.Unlock()
}

// Follow keeps the catalogue fresh in the background until ctx ends: one
// refresh now, then one every TTL. Items created anywhere (another edge,
// the backend directly) become known within a TTL, while requests for
// unknown ids are still answered from the Bloom filter without any I/O.
func (c *Catalog) Follow(ctx context.Context) {
	t := time.NewTicker(c.ttl)
	defer t.Stop()
	for {
		c.Invalidate()
		_, _ = c.get(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Invalidate makes the next read refresh.
func (c *Catalog) Invalidate() {
	if s := c.snap.Load(); s != nil && !s.stale {
		cp := *s
		cp.stale = true
		c.snap.Store(&cp)
	}
}

// Items returns every item, with the live state recomputed for now.
func (c *Catalog) Items(ctx context.Context) ([]backend.ItemView, error) {
	s, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]backend.ItemView, len(s.list))
	for i, it := range s.list {
		out[i] = c.fresh(it)
	}
	return out, nil
}

// Item returns one item. An id outside the Bloom filter is unknown at once.
func (c *Catalog) Item(ctx context.Context, id int64) (backend.ItemView, error) {
	if id <= 0 || !c.Known(id) {
		return backend.ItemView{}, seckill.Errorf(seckill.EUnknownItem, "no item %d", id)
	}
	s, err := c.get(ctx)
	if err != nil {
		return backend.ItemView{}, err
	}
	it, ok := s.byID[id]
	if !ok {
		// Known to the filter but not in this copy: an item created since
		// the last refresh, or a false positive. One refresh decides.
		c.Invalidate()
		if s, err = c.get(ctx); err != nil {
			return backend.ItemView{}, err
		}
		if it, ok = s.byID[id]; !ok {
			return backend.ItemView{}, seckill.Errorf(seckill.EUnknownItem, "no item %d", id)
		}
	}
	return c.fresh(it), nil
}

// fresh recomputes the state of a cached item for the current time and
// the sold-out markers.
func (c *Catalog) fresh(it backend.ItemView) backend.ItemView {
	if c.SoldOut(it.ID) {
		it.StockLeft = 0
	}
	it.State = backend.State(it.Item, it.StockLeft, c.now())
	return it
}

// MarkSoldOut records that an item has no unit left.
func (c *Catalog) MarkSoldOut(id int64) { c.soldOut.Store(id, true) }

// SoldOut reports whether an item is marked sold out.
func (c *Catalog) SoldOut(id int64) bool {
	_, ok := c.soldOut.Load(id)
	return ok
}
