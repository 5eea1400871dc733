package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sony/gobreaker/v2"

	"seckill"
	"seckill/backendclient"
	"seckill/internal/atomicfile"
	"seckill/internal/backoff"
	"seckill/internal/breaker"
)

// ErrNoBackend is wrapped in the *seckill.UnavailableError returned when
// no backend is registered or every one's breaker is open.
var ErrNoBackend = errors.New("no backend available")

// Class names a kind of backend call. Every backend has one breaker per
// class, so calls that fail on a store purchases do not need (status polls
// and catalogue refreshes on PostgreSQL) never take a backend out of the
// purchases' rotation.
type Class int

const (
	// ClassReserve: purchases (Redis only, in the backend).
	ClassReserve Class = iota
	// ClassRead: order status, accounts, stats, item creation.
	ClassRead
	// ClassCatalog: the item list.
	ClassCatalog
	classes
)

var classNames = [classes]string{"reserve", "read", "catalog"}

func (c Class) String() string { return classNames[c] }

// BackendState describes one backend for metrics and the admin API.
type BackendState struct {
	URL string `json:"url"`
	// State is the state of its purchases' breaker: "closed", "half-open"
	// or "open".
	State string `json:"state"`
	// InRotation: new purchases may go to it (that breaker not open).
	InRotation bool `json:"in_rotation"`
	// Breakers is the state of each class's breaker (reserve, read, catalog).
	Breakers map[string]string `json:"breakers"`
}

// member is one backend: its client and its own breakers, one per class.
type member struct {
	url    string
	client *backendclient.Client
	cbs    [classes]*gobreaker.CircuitBreaker[any]
	gone   atomic.Bool
}

// Balancer spreads calls over a changing set of backends. It has every
// method of edge.Backend.
type Balancer struct {
	o   options
	log *slog.Logger

	mu      sync.RWMutex
	members []*member // sorted by URL
	byURL   map[string]*member
	rr      atomic.Uint64

	// ZooKeeper (nil for NewStatic).
	conn     *zk.Conn
	dir      string
	nodes    map[string]cachedNode // node name -> its content, read once per node
	saved    string                // the list last written to the cache
	zkFull   bool                  // ZooKeeper has listed at least one backend
	poke     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	key      []byte // RegistrationKey of the internal token
	rejected atomic.Int64
	reads    atomic.Int64
	updates  atomic.Int64
	expired  atomic.Int64
}

// NewStatic returns a balancer over a fixed list of backend URLs.
func NewStatic(urls []string, opts ...Option) *Balancer {
	b := newBalancer(newOptions(opts))
	b.set(urls)
	return b
}

// NewBalancer connects to ZooKeeper and follows the backends registered
// under root (DefaultRoot when empty) until Close. It returns once the
// first list is read, or fails when ctx ends first.
func NewBalancer(ctx context.Context, zkAddrs []string, root string, opts ...Option) (*Balancer, error) {
	first := make(chan error, 1)
	b, err := startFollowing(zkAddrs, root, newOptions(opts), first)
	if err != nil {
		return nil, err
	}
	select {
	case err = <-first:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("reading the backends from zookeeper: %w", err)
	}
	return b, nil
}

// Follow is NewBalancer without the wait: it returns at once, serving the
// list cached on disk (WithCache) and the operator's list (WithInitial)
// until ZooKeeper answers, then ZooKeeper's list. An edge so starts and
// sells while ZooKeeper is down.
func Follow(zkAddrs []string, root string, opts ...Option) (*Balancer, error) {
	return startFollowing(zkAddrs, root, newOptions(opts), nil)
}

func startFollowing(zkAddrs []string, root string, o options, first chan<- error) (*Balancer, error) {
	b := newBalancer(o)
	start := slices.Clone(o.initial)
	if o.cachePath != "" {
		cached, err := loadCache(o.cachePath, b.key)
		switch {
		case err == nil:
			start = append(start, cached...)
			b.log.Info("backends from the cached list", "path", o.cachePath, "backends", len(cached))
		case !errors.Is(err, os.ErrNotExist):
			b.log.Warn("ignoring the cached backend list", "path", o.cachePath, "err", err)
		}
	}
	if len(start) > 0 {
		b.set(start)
	}
	conn, events, err := connect(zkAddrs, b.o, b.log)
	if err != nil {
		return nil, err
	}
	b.conn, b.dir, b.nodes = conn, backendsPath(root), map[string]cachedNode{}
	b.poke, b.stop, b.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go b.follow(events)
	go b.watch(first)
	return b, nil
}

func newBalancer(o options) *Balancer {
	return &Balancer{o: o, log: o.log.With("component", "discovery"), byURL: map[string]*member{}, key: RegistrationKey(o.token)}
}

// Close stops following ZooKeeper (the last list stays in use).
func (b *Balancer) Close() {
	if b.conn == nil {
		return
	}
	b.once.Do(func() {
		close(b.stop)
		b.conn.Close()
		<-b.done
	})
}

// Backends returns the backends known now, sorted by URL.
func (b *Balancer) Backends() []BackendState {
	b.mu.RLock()
	ms := b.members
	b.mu.RUnlock()
	out := make([]BackendState, len(ms))
	for i, m := range ms {
		st := m.cbs[ClassReserve].State()
		out[i] = BackendState{URL: m.url, State: st.String(), InRotation: st != gobreaker.StateOpen, Breakers: map[string]string{}}
		for c, cb := range m.cbs {
			out[i].Breakers[Class(c).String()] = cb.State().String()
		}
	}
	return out
}

// SetBreaker changes the breaker settings (a pushed configuration): every
// backend gets fresh breakers with them, closed.
func (b *Balancer) SetBreaker(cfg BreakerConfig) {
	cfg = cfg.WithDefaults()
	b.mu.Lock()
	defer b.mu.Unlock()
	if cfg == b.o.breaker {
		return
	}
	b.o.breaker = cfg
	ms := make([]*member, len(b.members))
	for i, old := range b.members {
		m := b.newMember(old.url)
		m.client = old.client
		ms[i] = m
		b.byURL[m.url] = m
		old.gone.Store(true)
	}
	b.members = ms
}

// Updates returns how many times the list was applied (tests, metrics).
func (b *Balancer) Updates() int64 { return b.updates.Load() }

// set makes urls the list of backends: new ones get a client and a fresh
// breaker, the ones still listed keep theirs, the others are dropped.
func (b *Balancer) set(urls []string) {
	want := map[string]bool{}
	for _, u := range urls {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			want[u] = true
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var ms []*member
	byURL := map[string]*member{}
	for u := range want {
		m := b.byURL[u]
		if m == nil {
			m = b.newMember(u)
			b.log.Info("backend added", "url", u)
		}
		ms = append(ms, m)
		byURL[u] = m
	}
	for u, m := range b.byURL {
		if !want[u] {
			m.gone.Store(true)
			b.log.Warn("backend removed", "url", u)
		}
	}
	slices.SortFunc(ms, func(x, y *member) int { return strings.Compare(x.url, y.url) })
	b.members, b.byURL = ms, byURL
	b.updates.Add(1)
}

func (b *Balancer) newMember(url string) *member {
	cfg := b.o.breaker
	m := &member{url: url, client: backendclient.New(url, b.o.token, b.o.hc)}
	onState := b.o.onState
	log := b.log
	for c := range classes {
		m.cbs[c] = breaker.New(url, cfg, seckill.BackendFailure, func(name string, from, to gobreaker.State) {
			log.Warn("backend circuit breaker", "url", name, "class", c.String(), "from", from.String(), "to", to.String())
			if onState != nil && c == ClassReserve {
				onState(name, from, to)
			}
		})
	}
	return m
}

// call runs f on one backend picked round-robin among those whose breaker
// lets it through. When retry is set (the call is safe to repeat) and the
// backend fails, f runs once more on another backend.
func call[T any](ctx context.Context, b *Balancer, class Class, retry bool, f func(c *backendclient.Client) (T, error)) (T, error) {
	var zero T
	b.mu.RLock()
	ms := b.members
	b.mu.RUnlock()
	n := len(ms)
	if n == 0 {
		return zero, &seckill.UnavailableError{Err: ErrNoBackend}
	}
	start := int(b.rr.Add(1) % uint64(n))
	sent := 0
	var lastErr error
	for i := 0; i < n; i++ {
		m := ms[(start+i)%n]
		cb := m.cbs[class]
		var v any
		var err error
		if seckill.BreakerOff(ctx) {
			// A sale whose breaker defence is off: straight to the backend.
			if m.gone.Load() {
				continue
			}
			v, err = f(m.client)
		} else {
			if m.gone.Load() || cb.State() == gobreaker.StateOpen {
				continue
			}
			v, err = cb.Execute(func() (any, error) { return f(m.client) })
		}
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			continue // nothing was sent: try the next one
		}
		t, _ := v.(T)
		if err == nil || !seckill.BackendFailure(err) {
			return t, err
		}
		sent++
		lastErr = err
		if !retry || sent >= 2 || ctx.Err() != nil {
			return t, err
		}
	}
	if lastErr != nil {
		return zero, lastErr
	}
	return zero, &seckill.UnavailableError{Err: ErrNoBackend}
}

// Reserve calls POST /v1/reservations. Reservations are idempotent per
// request id (every backend shares the stock in Redis), so a reservation
// whose backend failed is tried once more on another.
func (b *Balancer) Reserve(ctx context.Context, itemID int64, acct seckill.Account, requestID string) (seckill.Reservation, error) {
	return call(ctx, b, ClassReserve, requestID != "", func(c *backendclient.Client) (seckill.Reservation, error) {
		return c.Reserve(ctx, itemID, acct, requestID)
	})
}

// Status reads an order's state.
func (b *Balancer) Status(ctx context.Context, itemID, userID int64) (seckill.OrderState, error) {
	return call(ctx, b, ClassRead, true, func(c *backendclient.Client) (seckill.OrderState, error) { return c.Status(ctx, itemID, userID) })
}

// Items lists the items.
func (b *Balancer) Items(ctx context.Context) ([]seckill.ItemView, error) {
	return call(ctx, b, ClassCatalog, true, func(c *backendclient.Client) ([]seckill.ItemView, error) { return c.Items(ctx) })
}

// CreateItem creates an item (not repeated: it is not idempotent).
func (b *Balancer) CreateItem(ctx context.Context, it seckill.Item) (seckill.Item, error) {
	return call(ctx, b, ClassRead, false, func(c *backendclient.Client) (seckill.Item, error) { return c.CreateItem(ctx, it) })
}

// Stats reads an item's figures.
func (b *Balancer) Stats(ctx context.Context, id int64) (seckill.Stats, error) {
	return call(ctx, b, ClassRead, true, func(c *backendclient.Client) (seckill.Stats, error) { return c.Stats(ctx, id) })
}

// Register creates a user (not repeated: a repeat of one that went through
// would answer that the name is taken).
func (b *Balancer) Register(ctx context.Context, username, password, network string) (int64, error) {
	return call(ctx, b, ClassRead, false, func(c *backendclient.Client) (int64, error) { return c.Register(ctx, username, password, network) })
}

// Login checks a user's password.
func (b *Balancer) Login(ctx context.Context, username, password string) (seckill.Account, error) {
	return call(ctx, b, ClassRead, true, func(c *backendclient.Client) (seckill.Account, error) { return c.Login(ctx, username, password) })
}

// EnsureUsers creates the users missing (idempotent).
func (b *Balancer) EnsureUsers(ctx context.Context, usernames []string) (map[string]seckill.Account, error) {
	return call(ctx, b, ClassRead, true, func(c *backendclient.Client) (map[string]seckill.Account, error) {
		return c.EnsureUsers(ctx, usernames)
	})
}

// Ready succeeds when one backend is ready. Readiness probes go around the
// breakers: they neither count nor are refused.
func (b *Balancer) Ready(ctx context.Context) error {
	b.mu.RLock()
	ms := b.members
	b.mu.RUnlock()
	err := error(&seckill.UnavailableError{Err: ErrNoBackend})
	for _, m := range ms {
		if m.gone.Load() {
			continue
		}
		if err = m.client.Ready(ctx); err == nil {
			return nil
		}
	}
	return err
}

// PurchaseBreakerState is the worst state of the backends' purchase
// breakers (open when no backend is known): the edge's breaker state when
// the balancer keeps the breakers.
func (b *Balancer) PurchaseBreakerState() gobreaker.State {
	b.mu.RLock()
	ms := b.members
	b.mu.RUnlock()
	if len(ms) == 0 {
		return gobreaker.StateOpen
	}
	worst := gobreaker.StateClosed
	for _, m := range ms {
		worst = max(worst, m.cbs[ClassReserve].State())
	}
	return worst
}

// OwnsBreakers says that the balancer guards every backend with breakers
// of its own (edge.BreakerOwner): the edge adds none in series.
func (b *Balancer) OwnsBreakers() bool { return true }

// follow turns every new session (reconnect or expiry) into a re-read:
// changes made while disconnected are not always told by a watch.
func (b *Balancer) follow(events <-chan zk.Event) {
	for ev := range events {
		if ev.Type == zk.EventSession && ev.State == zk.StateExpired {
			b.expired.Add(1)
			b.log.Warn("zookeeper session expired: reading the backends again")
		}
		if ev.Type == zk.EventSession && (ev.State == zk.StateHasSession || ev.State == zk.StateExpired) {
			select {
			case b.poke <- struct{}{}:
			default:
			}
		}
	}
}

// watch reads the list, sets a one-shot watch, applies the list, waits for
// the watch (or a new session) and starts again. While ZooKeeper is away
// the last list stays in use.
func (b *Balancer) watch(first chan<- error) {
	defer close(b.done)
	bo := backoff.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for {
		ch, err := b.read()
		if err == nil {
			bo.Reset()
			if first != nil {
				first <- nil
				first = nil
			}
			select {
			case <-ch:
			case <-b.poke:
			case <-b.stop:
				return
			}
			continue
		}
		select {
		case <-b.stop:
			return
		default:
		}
		b.log.Warn("reading the backends from zookeeper", "err", err)
		select {
		case <-time.After(bo.Next()):
		case <-b.poke:
		case <-b.stop:
			return
		}
	}
}

func (b *Balancer) read() (<-chan zk.Event, error) {
	b.reads.Add(1)
	children, _, ch, err := b.conn.ChildrenW(b.dir)
	if errors.Is(err, zk.ErrNoNode) {
		// No backend ever registered: watch for the folder.
		ok, _, ech, err := b.conn.ExistsW(b.dir)
		if err != nil {
			return nil, err
		}
		if ok {
			return nil, errors.New("the backends folder appeared: read again")
		}
		b.setFromZK(nil)
		return ech, nil
	}
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var urls []string
	var list []cachedNode
	for _, name := range children {
		seen[name] = true
		cn, ok := b.nodes[name]
		if !ok {
			raw, _, err := b.conn.Get(b.dir + "/" + name)
			if errors.Is(err, zk.ErrNoNode) {
				continue // gone already; the watch tells
			}
			if err != nil {
				return nil, err
			}
			cn = cachedNode{Name: name, Data: json.RawMessage(raw)}
			if u, err := nodeURL(raw, b.key); err != nil {
				b.rejected.Add(1)
				b.log.Warn("ignoring a backend registration", "node", name, "err", err)
				cn.Data = nil
			} else {
				cn.url = u
			}
			b.nodes[name] = cn
		}
		if cn.url != "" {
			urls = append(urls, cn.url)
			list = append(list, cn)
		}
	}
	for name := range b.nodes {
		if !seen[name] {
			delete(b.nodes, name)
		}
	}
	b.setFromZK(urls)
	b.saveCache(list)
	return ch, nil
}

// setFromZK applies a list read from ZooKeeper. Until ZooKeeper has listed
// a backend, an empty list does not replace the operator's or the cached
// one: after an outage of ZooKeeper the backends register again in the
// background, and an edge must not drop every backend meanwhile. Once
// ZooKeeper has listed one, it decides alone.
func (b *Balancer) setFromZK(urls []string) {
	if len(urls) == 0 && !b.zkFull {
		b.mu.RLock()
		n := len(b.members)
		b.mu.RUnlock()
		if n > 0 {
			b.log.Warn("zookeeper lists no backend yet: keeping the initial list", "backends", n)
			return
		}
	}
	if len(urls) > 0 {
		b.zkFull = true
	}
	b.set(urls)
}

// nodeURL returns the URL of a registration whose MAC is valid under key.
func nodeURL(raw []byte, key []byte) (string, error) {
	var n Node
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", err
	}
	if n.URL == "" {
		return "", errors.New("no url")
	}
	if err := n.Verify(key); err != nil {
		return "", err
	}
	return n.URL, nil
}

// Rejected returns how many registrations were ignored (no URL, or no
// valid MAC) since the start.
func (b *Balancer) Rejected() int64 { return b.rejected.Load() }

// cachedNode is one backend in the cached list: its node's name and its
// content exactly as registered, so that a registration signed later (a
// MAC in the node) can be checked again when the list is read back.
type cachedNode struct {
	Name string          `json:"name"`
	Data json.RawMessage `json:"data"`
	url  string
}

// backendCache is the file of the last list read from ZooKeeper.
type backendCache struct {
	Format   int          `json:"format"` // 1
	SavedAt  time.Time    `json:"saved_at"`
	Backends []cachedNode `json:"backends"`
}

func (b *Balancer) saveCache(list []cachedNode) {
	if b.o.cachePath == "" {
		return
	}
	slices.SortFunc(list, func(x, y cachedNode) int { return strings.Compare(x.Name, y.Name) })
	key, _ := json.Marshal(list)
	if string(key) == b.saved {
		return
	}
	raw, err := json.MarshalIndent(backendCache{Format: 1, SavedAt: time.Now().UTC(), Backends: list}, "", "  ")
	if err == nil {
		err = atomicfile.Write(b.o.cachePath, raw)
	}
	if err != nil {
		b.log.Warn("writing the cached backend list", "path", b.o.cachePath, "err", err)
		return
	}
	b.saved = string(key)
}

// loadCache reads the URLs of the cached list. Each entry's MAC is checked
// again (the file is no more trusted than ZooKeeper); there is no expiry:
// liveness comes from ZooKeeper and the breakers.
func loadCache(path string, key []byte) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c backendCache
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	if c.Format != 1 {
		return nil, fmt.Errorf("%s: format %d, want 1", path, c.Format)
	}
	var urls []string
	for _, n := range c.Backends {
		u, err := nodeURL(n.Data, key)
		if err != nil {
			return nil, fmt.Errorf("%s: node %s: %w", path, n.Name, err)
		}
		urls = append(urls, u)
	}
	return urls, nil
}
