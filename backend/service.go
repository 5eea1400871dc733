// Package backend is the thin purchase service behind the edge: it takes a
// unit in Redis (package stock), leaves the order in the Redis outbox for
// the relay, and answers catalogue, status and stats questions.
package backend

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"seckill"
	"seckill/httpapi"
	"seckill/stock"
)

// Catalog is the durable store of items and orders (package postgres).
type Catalog interface {
	CreateItem(ctx context.Context, it seckill.Item) (seckill.Item, error)
	Item(ctx context.Context, id int64) (seckill.Item, error)
	Items(ctx context.Context) ([]seckill.Item, error)
	OrderFor(ctx context.Context, userID, itemID int64) (seckill.Order, error)
	FailedFor(ctx context.Context, userID, itemID int64) (string, bool, error)
	CountOrders(ctx context.Context, itemID int64) (int64, error)
	CountFailed(ctx context.Context, itemID int64) (int64, error)
	OrderRefs(ctx context.Context, itemID int64) (map[int64]string, error)
	Ping(ctx context.Context) error
}

// Stock is the live counter store (package stock).
type Stock interface {
	LoadItem(ctx context.Context, it seckill.Item, sold map[int64]string) error
	Reserve(ctx context.Context, itemID, userID int64, requestID, orderRef string) (stock.Reservation, error)
	Buyer(ctx context.Context, itemID, userID int64) (string, bool, error)
	Counters(ctx context.Context, itemID int64) (stock.Counters, error)
}

// Service is the purchase backend.
type Service struct {
	db    Catalog
	users Users
	st    Stock
	log   *slog.Logger
	now   func() time.Time
	guard RedisGuard
	cat   catalogCache // Items: the last item list, ended items' views
	hash  hashGate     // bounds bcrypt work (users.go)
	draw  *draws       // allocation draw (draw.go)
}

// RedisGuard reports whether reservations are frozen while a restarted
// Redis is verified (stock.Guard).
type RedisGuard interface {
	Status() stock.GuardStatus
}

// SetRedisGuard makes the guard's state part of readiness details and
// admin stats.
func (s *Service) SetRedisGuard(g RedisGuard) { s.guard = g }

// RedisGuardStatus returns the guard's state, or nil when none is set.
func (s *Service) RedisGuardStatus() *stock.GuardStatus {
	if s.guard == nil {
		return nil
	}
	st := s.guard.Status()
	return &st
}

// New returns a Service. When db also stores users (package postgres
// does), the user endpoints work too. Every call to db is bounded by
// DBTimeout.
func New(db Catalog, st Stock, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	b := bounded{db: db, d: DBTimeout}
	var users Users
	if u, ok := db.(Users); ok {
		b.users = u
		users = b
	}
	return &Service{db: b, users: users, st: st, log: log, now: time.Now, draw: newDraws(db)}
}

// CreateItem stores a new item and makes it purchasable.
func (s *Service) CreateItem(ctx context.Context, it seckill.Item) (seckill.Item, error) {
	if err := seckill.ValidateItem(&it); err != nil {
		return seckill.Item{}, err
	}
	var err error
	if it.AllocationMode() == seckill.AllocationDraw {
		it, err = s.createDrawItem(ctx, it) // with its seed and commitment (draw.go)
	} else {
		it, err = s.db.CreateItem(ctx, it)
	}
	if err != nil {
		return seckill.Item{}, fmt.Errorf("creating item: %w", err)
	}
	if err := s.st.LoadItem(ctx, it, nil); err != nil {
		return seckill.Item{}, err
	}
	s.log.Info("item created", "item", it.ID, "stock", it.Stock, "starts_at", it.StartsAt, "ends_at", it.EndsAt)
	return it, nil
}

// LoadAll loads every item into Redis. Live counters are kept; an item
// Redis does not know (Redis lost its data) resumes from the orders stored
// in PostgreSQL.
func (s *Service) LoadAll(ctx context.Context) (int, error) {
	items, err := s.db.Items(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing items: %w", err)
	}
	s.draw.remember(items...)
	for _, it := range items {
		if err := s.load(ctx, it); err != nil {
			return 0, err
		}
	}
	return len(items), nil
}

func (s *Service) load(ctx context.Context, it seckill.Item) error {
	c, err := s.st.Counters(ctx, it.ID)
	if err != nil {
		return err
	}
	var sold map[int64]string
	if !c.Loaded {
		if sold, err = s.db.OrderRefs(ctx, it.ID); err != nil {
			return fmt.Errorf("reading orders of item %d: %w", it.ID, err)
		}
		if len(sold) > 0 {
			s.log.Warn("redis holds no counters for an item with stored orders; resuming from PostgreSQL",
				"item", it.ID, "orders", len(sold))
		}
	}
	return s.st.LoadItem(ctx, it, sold)
}

// Reserve takes one unit of an item for a user. The error codes are
// unknown_item, not_live, sold_out and already_bought (a
// *seckill.HeldError naming the order held). An empty requestID
// gets a fresh one (the call is then not idempotent across retries).
func (s *Service) Reserve(ctx context.Context, itemID, userID int64, requestID string) (seckill.Reservation, error) {
	if itemID <= 0 || userID <= 0 {
		return seckill.Reservation{}, seckill.Errorf(seckill.EInvalid, "item_id and user_id must be positive")
	}
	if len(requestID) > 64 || strings.ContainsRune(requestID, '|') {
		return seckill.Reservation{}, seckill.Errorf(seckill.EInvalid, "request_id must be at most 64 characters without '|'")
	}
	if err := s.drawGate(ctx, itemID, userID); err != nil { // a draw: winners in their claim window only (draw.go)
		return seckill.Reservation{}, err
	}
	ref := NewOrderRef()
	if requestID == "" {
		requestID = ref
	}
	r, err := s.st.Reserve(ctx, itemID, userID, requestID, ref)
	if err != nil {
		return seckill.Reservation{}, err
	}
	if r.Outcome == stock.UnknownItem {
		// Redis may have lost the item while PostgreSQL has it: load it once.
		it, err := s.db.Item(ctx, itemID)
		if err != nil {
			return seckill.Reservation{}, err
		}
		if err := s.load(ctx, it); err != nil {
			return seckill.Reservation{}, err
		}
		if r, err = s.st.Reserve(ctx, itemID, userID, requestID, ref); err != nil {
			return seckill.Reservation{}, err
		}
	}
	switch r.Outcome {
	case stock.Queued:
		return seckill.Reservation{Status: seckill.StatusQueued, OrderRef: r.OrderRef, StockLeft: r.StockLeft}, nil
	case stock.AlreadyBought:
		return seckill.Reservation{}, seckill.Held(r.OrderRef, "this user already holds a unit of item %d", itemID)
	case stock.SoldOut:
		return seckill.Reservation{}, seckill.Errorf(seckill.ESoldOut, "item %d is sold out", itemID)
	case stock.NotLive:
		return seckill.Reservation{}, seckill.Errorf(seckill.ENotLive, "the sale of item %d is not open", itemID)
	case stock.UnknownItem:
		return seckill.Reservation{}, seckill.Errorf(seckill.EUnknownItem, "no item %d", itemID)
	}
	return seckill.Reservation{}, fmt.Errorf("reserving: unknown outcome %q", r.Outcome)
}

// NewOrderRef returns a fresh order reference: 128 random bits.
func NewOrderRef() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "o" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Status tells a user where their order for an item stands. It needs
// PostgreSQL only to tell confirmed and failed orders apart: while
// PostgreSQL is away the answer is what Redis knows, with Degraded set.
func (s *Service) Status(ctx context.Context, itemID, userID int64) (seckill.OrderState, error) {
	// Status is polled: prove the item exists from Redis, and ask
	// PostgreSQL only for an item Redis does not hold.
	c, err := s.st.Counters(ctx, itemID)
	if err != nil {
		return seckill.OrderState{}, err
	}
	if !c.Loaded {
		if _, err := s.db.Item(ctx, itemID); err != nil {
			return seckill.OrderState{}, storeError(err, "postgres")
		}
	}
	ref, held, err := s.st.Buyer(ctx, itemID, userID)
	if err != nil {
		return seckill.OrderState{}, err
	}
	o, err := s.db.OrderFor(ctx, userID, itemID)
	if err == nil {
		return seckill.OrderState{Status: seckill.StatusConfirmed, OrderRef: o.OrderRef, OrderID: o.ID}, nil
	}
	if seckill.ErrorCode(err) != seckill.ENotFound {
		// PostgreSQL is away: answer what Redis knows. A held unit is
		// queued (maybe confirmed already); none held is none (maybe a
		// failed order, whose unit went back to stock).
		s.log.Debug("order status from redis alone", "item", itemID, "user", userID, "err", err)
		if held {
			return seckill.OrderState{Status: seckill.StatusQueued, OrderRef: ref, Degraded: true}, nil
		}
		return seckill.OrderState{Status: seckill.StatusNone, Degraded: true}, nil
	}
	if held {
		return seckill.OrderState{Status: seckill.StatusQueued, OrderRef: ref}, nil
	}
	if fref, ok, err := s.db.FailedFor(ctx, userID, itemID); err != nil {
		return seckill.OrderState{}, storeError(err, "postgres")
	} else if ok {
		return seckill.OrderState{Status: seckill.StatusFailed, OrderRef: fref}, nil
	}
	return seckill.OrderState{Status: seckill.StatusNone}, nil
}

// storeError passes business answers and bugs through, and turns an
// outage of a store (code dependency_unavailable, classified where the
// error is made: packages postgres and stock) into 503 backend_unavailable
// with Retry-After, the code these routes have always answered.
func storeError(err error, store string) error {
	if seckill.ErrorCode(err) != seckill.EDependency {
		return err
	}
	return &httpapi.RetryError{Err: fmt.Errorf("%w (%w)", seckill.Errorf(seckill.EUnavailable, "%s is unavailable; retry shortly", store), err), After: time.Second}
}

// Item returns one item with its live stock.
func (s *Service) Item(ctx context.Context, id int64) (seckill.ItemView, error) {
	it, err := s.db.Item(ctx, id)
	if err != nil && seckill.ErrorCode(err) == seckill.EDependency {
		// PostgreSQL away: the last list read knows the item, if anybody does.
		items, _ := s.cat.lastItems()
		for _, c := range items {
			if c.ID == id {
				return s.view(ctx, c)
			}
		}
	}
	if err != nil {
		return seckill.ItemView{}, storeError(err, "postgres")
	}
	return s.view(ctx, it)
}

// Items returns every item with its live stock: one PostgreSQL query for
// the list (the last list is used while PostgreSQL is away), then the
// stock of every live or upcoming item in one pipelined Redis round trip.
// Ended items (their answers do not change) come from a copy refreshed
// every EndedRefresh.
func (s *Service) Items(ctx context.Context) ([]seckill.ItemView, error) {
	items, err := s.db.Items(ctx)
	if err != nil {
		var ok bool
		if items, ok = s.cat.lastItems(); !ok {
			return nil, storeError(err, "postgres")
		}
		s.log.Warn("listing items: postgres unavailable, serving the last list", "err", err)
	} else {
		s.cat.setItems(items)
		s.draw.remember(items...)
	}
	now := s.now()
	ended, endedFresh := s.cat.endedViews(now)
	out := make([]seckill.ItemView, len(items))
	var ask []int
	for i, it := range items {
		if v, ok := ended[it.ID]; ok && endedFresh && !now.Before(it.EndsAt) {
			out[i] = v
			continue
		}
		ask = append(ask, i)
	}
	ids := make([]int64, len(ask))
	for j, i := range ask {
		ids[j] = items[i].ID
	}
	lefts, err := s.lefts(ctx, ids)
	if err != nil {
		return nil, err
	}
	for j, i := range ask {
		it := items[i]
		left := lefts[j].StockLeft
		if !lefts[j].Loaded {
			left = it.Stock
		}
		out[i] = seckill.ItemView{Item: it, StockLeft: left, State: seckill.StateAt(it, left, now)}
	}
	s.cat.setEnded(out, now, !endedFresh)
	return out, nil
}

func (s *Service) view(ctx context.Context, it seckill.Item) (seckill.ItemView, error) {
	c, err := s.st.Counters(ctx, it.ID)
	if err != nil {
		return seckill.ItemView{}, err
	}
	left := c.StockLeft
	if !c.Loaded {
		left = it.Stock
	}
	return seckill.ItemView{Item: it, StockLeft: left, State: seckill.StateAt(it, left, s.now())}, nil
}

// EndedRefresh is how often the stock of ended items is read again.
const EndedRefresh = 30 * time.Second

// manyLefts is a Stock that reads many items' stock in one round trip
// (package stock).
type manyLefts interface {
	Lefts(ctx context.Context, itemIDs []int64) ([]stock.Left, error)
}

func (s *Service) lefts(ctx context.Context, ids []int64) ([]stock.Left, error) {
	if m, ok := s.st.(manyLefts); ok {
		return m.Lefts(ctx, ids)
	}
	out := make([]stock.Left, len(ids))
	for i, id := range ids {
		c, err := s.st.Counters(ctx, id)
		if err != nil {
			return nil, err
		}
		out[i] = stock.Left{Loaded: c.Loaded, StockLeft: c.StockLeft}
	}
	return out, nil
}

// catalogCache is what Items keeps between calls.
type catalogCache struct {
	mu      sync.Mutex
	items   []seckill.Item
	have    bool
	ended   map[int64]seckill.ItemView
	endedAt time.Time
}

func (c *catalogCache) setItems(items []seckill.Item) {
	c.mu.Lock()
	c.items, c.have = items, true
	c.mu.Unlock()
}

func (c *catalogCache) lastItems() ([]seckill.Item, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.items, c.have
}

// endedViews returns the ended items' views and whether they are fresh
// enough to serve.
func (c *catalogCache) endedViews(now time.Time) (map[int64]seckill.ItemView, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended, c.ended != nil && now.Sub(c.endedAt) < EndedRefresh
}

// setEnded records the views of ended items; all of them when refreshed,
// else only items that ended since.
func (c *catalogCache) setEnded(views []seckill.ItemView, now time.Time, refreshed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if refreshed || c.ended == nil {
		c.ended, c.endedAt = map[int64]seckill.ItemView{}, now
	}
	for _, v := range views {
		if v.State == seckill.StateEnded {
			if _, ok := c.ended[v.ID]; !ok {
				c.ended[v.ID] = v
			}
		}
	}
}

// Stats returns the counters of an item from Redis and PostgreSQL.
func (s *Service) Stats(ctx context.Context, itemID int64) (seckill.Stats, error) {
	it, err := s.db.Item(ctx, itemID)
	if err != nil {
		return seckill.Stats{}, err
	}
	c, err := s.st.Counters(ctx, itemID)
	if err != nil {
		return seckill.Stats{}, err
	}
	orders, err := s.db.CountOrders(ctx, itemID)
	if err != nil {
		return seckill.Stats{}, err
	}
	failed, err := s.db.CountFailed(ctx, itemID)
	if err != nil {
		return seckill.Stats{}, err
	}
	st := seckill.Stats{ItemID: itemID, StockTotal: it.Stock, StockLeft: c.StockLeft, Reserved: c.Reserved,
		Orders: orders, OutboxPending: c.OutboxPending, Failed: failed}
	if !c.Loaded {
		st.StockLeft = it.Stock - orders
	}
	if a, ok := s.st.(interface {
		OutboxAges(ctx context.Context, itemID int64) (stock.OutboxAges, error)
	}); ok && c.OutboxPending > 0 {
		ages, err := a.OutboxAges(ctx, itemID)
		if err != nil {
			return seckill.Stats{}, err
		}
		st.OutboxOldestAgeMs = ages.Oldest().Milliseconds()
		st.OutboxOldestPendingMs = ages.OldestPending.Milliseconds()
		st.OutboxOldestUnreadMs = ages.OldestUnread.Milliseconds()
	}
	return st, nil
}

// Ready reports whether the backend can take purchases: Redis answers.
// PostgreSQL is not needed for a purchase; Checks reports it.
func (s *Service) Ready(ctx context.Context) error {
	if _, err := s.st.Counters(ctx, 0); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if g := s.RedisGuardStatus(); g != nil && g.Frozen {
		return fmt.Errorf("reservations frozen: %s", g.Reason)
	}
	return nil
}

// Checks asks every store, for the detailed readiness answer.
func (s *Service) Checks(ctx context.Context) []httpapi.Check {
	check := func(name string, needed bool, err error) httpapi.Check {
		c := httpapi.Check{Name: name, OK: err == nil, Needed: needed}
		if err != nil {
			c.Detail = err.Error()
		}
		return c
	}
	_, rerr := s.st.Counters(ctx, 0)
	checks := []httpapi.Check{check("redis", true, rerr), check("postgres", false, s.db.Ping(ctx))}
	if g := s.RedisGuardStatus(); g != nil {
		// Frozen reservations (a restarted Redis being verified): not
		// ready to sell.
		c := httpapi.Check{Name: "redis_guard", OK: !g.Frozen, Needed: true}
		if g.Frozen {
			c.Detail = "reservations frozen: " + g.Reason
		}
		checks = append(checks, c)
	}
	return checks
}
