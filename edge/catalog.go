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
	"seckill/httpapi"
)

// catalogSource is where the catalogue comes from (the backend).
type catalogSource interface {
	Items(ctx context.Context) ([]seckill.ItemView, error)
}

// Catalog is the edge's copy of the item list. Reads never wait for a
// refresh while a copy exists (stale-while-revalidate): a copy older than
// the TTL is served as it is while one refresh runs in the background (in
// follow); a failed refresh leaves the last copy in service. The bounds:
// one refresh at a time, each cut after refreshTimeout; a copy older than
// maxStale is reported stale on the admin /readyz. Only the very first load
// is waited for (a request before it would see every item as unknown), and
// a request for an id the Bloom filter knows but the copy lacks (an item
// created since) waits for one refresh when the copy is due for one.
//
// It also keeps a Bloom filter of every item id seen, so a request for an id
// that never existed is answered 404 without touching Redis or the backend,
// and the sold-out markers.
type Catalog struct {
	src  catalogSource
	ttl  time.Duration
	sf   singleflight.Group
	now  func() time.Time
	kick chan struct{}

	snap    atomic.Pointer[catalogSnap]
	knownMu sync.RWMutex
	known   *bloom.BloomFilter
	soldOut sync.Map // item id -> true
	refresh atomic.Int64
	// changes counts Learn and Invalidate calls: a copy fetched while one
	// happened may predate the change, so it is installed due again.
	changes atomic.Int64
}

// refreshTimeout bounds one catalogue refresh.
const refreshTimeout = 5 * time.Second

// maxStale is the age past which the copy is reported stale.
const maxStale = time.Minute

type catalogSnap struct {
	at    time.Time
	list  []seckill.ItemView
	byID  map[int64]seckill.ItemView
	stale bool
}

// newCatalog returns a catalogue that refreshes after ttl.
func newCatalog(src catalogSource, ttl time.Duration) *Catalog {
	if ttl <= 0 {
		ttl = time.Second
	}
	return &Catalog{src: src, ttl: ttl, now: time.Now, kick: make(chan struct{}, 1),
		known: bloom.NewWithEstimates(1_000_000, 0.001)}
}

// Refreshes returns how many times the catalogue was fetched from the backend.
func (c *Catalog) Refreshes() int64 { return c.refresh.Load() }

// loaded reports whether a first copy is in service.
func (c *Catalog) loaded() bool { return c.snap.Load() != nil }

// Age returns the age of the copy in service (0 before the first).
func (c *Catalog) Age() time.Duration {
	if s := c.snap.Load(); s != nil {
		return c.now().Sub(s.at)
	}
	return 0
}

func (c *Catalog) due(s *catalogSnap) bool {
	return s == nil || s.stale || c.now().Sub(s.at) >= c.ttl
}

// get returns the copy in service, asking Follow for a refresh when it is
// due. Only the first load is waited for.
func (c *Catalog) get(ctx context.Context) (*catalogSnap, error) {
	s := c.snap.Load()
	if s != nil {
		if c.due(s) {
			c.requestRefresh()
		}
		return s, nil
	}
	return c.load(ctx)
}

// requestRefresh asks follow for a refresh now (never waits).
func (c *Catalog) requestRefresh() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// load refreshes now (one refresh shared by every caller) and waits for it,
// at most until ctx ends.
func (c *Catalog) load(ctx context.Context) (*catalogSnap, error) {
	ch := c.sf.DoChan("items", func() (any, error) {
		// The refresh must not die with the first caller's request.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
		defer cancel()
		changes := c.changes.Load()
		list, err := c.src.Items(rctx)
		if err != nil {
			return nil, err
		}
		c.refresh.Add(1)
		return c.install(list, c.changes.Load() != changes), nil
	})
	var r singleflight.Result
	select {
	case r = <-ch:
	case <-ctx.Done():
		r.Err = ctx.Err()
	}
	if r.Err != nil {
		if s := c.snap.Load(); s != nil {
			return s, nil // serve the last copy rather than fail
		}
		return nil, &httpapi.RetryError{Err: seckill.Errorf(seckill.EUnavailable, "the catalogue is not loaded yet; retry shortly"), After: time.Second}
	}
	return r.Val.(*catalogSnap), nil
}

func (c *Catalog) install(list []seckill.ItemView, stale bool) *catalogSnap {
	ns := &catalogSnap{at: c.now(), list: list, byID: make(map[int64]seckill.ItemView, len(list)), stale: stale}
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

// knows reports whether an item id may exist (Bloom filter: no false negatives).
func (c *Catalog) knows(id int64) bool {
	c.knownMu.RLock()
	defer c.knownMu.RUnlock()
	return c.known.Test(idKey(id))
}

// Learn adds an item id to the known set (an item just created).
func (c *Catalog) Learn(id int64) {
	c.changes.Add(1)
	c.knownMu.Lock()
	c.known.Add(idKey(id))
	c.knownMu.Unlock()
}

// follow keeps the catalogue fresh in the background until ctx ends: one
// refresh now, then one every TTL, and one whenever a reader found the
// copy due (requestRefresh). Items created anywhere (another edge, the backend
// directly) become known within a TTL, while requests for unknown ids are
// still answered from the Bloom filter without any I/O.
func (c *Catalog) follow(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	retry := 50 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		if c.due(c.snap.Load()) {
			_, _ = c.load(ctx)
		}
		next := c.ttl
		if !c.loaded() {
			// No copy yet: the edge is not ready; try again soon.
			next, retry = min(retry, c.ttl), min(2*retry, c.ttl)
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// Invalidate makes the copy due for a refresh and asks for one.
func (c *Catalog) Invalidate() {
	c.changes.Add(1)
	if s := c.snap.Load(); s != nil && !s.stale {
		cp := *s
		cp.stale = true
		c.snap.Store(&cp)
	}
	c.requestRefresh()
}

// Items returns every item, with the live state recomputed for now.
func (c *Catalog) Items(ctx context.Context) ([]seckill.ItemView, error) {
	s, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]seckill.ItemView, len(s.list))
	for i, it := range s.list {
		out[i] = c.fresh(it)
	}
	return out, nil
}

// Item returns one item. An id outside the Bloom filter is unknown at once.
func (c *Catalog) Item(ctx context.Context, id int64) (seckill.ItemView, error) {
	if id <= 0 {
		return seckill.ItemView{}, seckill.Errorf(seckill.EUnknownItem, "no item %d", id)
	}
	// Before the first copy the filter is empty: wait for the copy rather
	// than call a live item unknown.
	s, err := c.get(ctx)
	if err != nil {
		return seckill.ItemView{}, err
	}
	if !c.knows(id) {
		return seckill.ItemView{}, seckill.Errorf(seckill.EUnknownItem, "no item %d", id)
	}
	it, ok := s.byID[id]
	if !ok {
		// Known to the filter but not in this copy: an item created since
		// the copy was made, or a false positive. When the copy is due, one
		// refresh (shared by every caller) decides; a fresh copy decides
		// alone, so false positives cannot make every request wait.
		// A refresh already running may have started before the item was
		// made: its copy comes back due again, and one more refresh decides.
		for range 2 {
			if !c.due(s) {
				break
			}
			if s, err = c.load(ctx); err != nil {
				return seckill.ItemView{}, err
			}
			if it, ok = s.byID[id]; ok {
				break
			}
		}
		if !ok {
			return seckill.ItemView{}, seckill.Errorf(seckill.EUnknownItem, "no item %d", id)
		}
	}
	return c.fresh(it), nil
}

// fresh recomputes the state of a cached item for the current time and
// the sold-out markers.
func (c *Catalog) fresh(it seckill.ItemView) seckill.ItemView {
	if c.SoldOut(it.ID) {
		it.StockLeft = 0
	}
	it.State = seckill.StateAt(it.Item, it.StockLeft, c.now())
	return it
}

// markSoldOut records that an item has no unit left.
func (c *Catalog) markSoldOut(id int64) { c.soldOut.Store(id, true) }

// SoldOut reports whether an item is marked sold out.
func (c *Catalog) SoldOut(id int64) bool {
	_, ok := c.soldOut.Load(id)
	return ok
}
