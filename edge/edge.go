// Package edge is the protective proxy in front of the purchase backend:
// sessions, human challenges, hidden per-user purchase paths, Bloom-filter
// dedup, token buckets, circuit breaking and load shedding, cheapest check
// first. It serves the public API (README "Public API") and the admin API
// on its own listener.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"seckill"
	"seckill/captcha"
	"seckill/clientip"
	"seckill/httpapi"
	"seckill/internal/rkeys"
	"seckill/limit"
	"seckill/limit/redislimit"
)

// Backend is what the edge asks of the purchase backend: over HTTP
// (backendclient.Client, discovery.Balancer) or in process. It speaks the
// contract of package seckill. A failure of the backend itself (no
// business answer) is a *seckill.UnavailableError; already_bought is a
// *seckill.HeldError naming the order held.
type Backend interface {
	// Reserve takes a unit for an account: its id, and the creation time
	// and network from its session, which the item's eligibility rules
	// check (409 not_eligible).
	Reserve(ctx context.Context, itemID int64, acct seckill.Account, requestID string) (seckill.Reservation, error)
	Status(ctx context.Context, itemID, userID int64) (seckill.OrderState, error)
	Items(ctx context.Context) ([]seckill.ItemView, error)
	CreateItem(ctx context.Context, it seckill.Item) (seckill.Item, error)
	Stats(ctx context.Context, id int64) (seckill.Stats, error)
	// Register creates an account; network is the /24 or /48 the client
	// registered from (clientip.Network), kept on the account.
	Register(ctx context.Context, username, password, network string) (int64, error)
	Login(ctx context.Context, username, password string) (seckill.Account, error)
	// EnsureUsers: the named accounts (created when missing) with their
	// creation time and network, for the sessions of the admin API.
	EnsureUsers(ctx context.Context, usernames []string) (map[string]seckill.Account, error)
	Ready(ctx context.Context) error
}

// BreakerOwner is a Backend that guards every backend it calls with
// breakers of its own (discovery.Balancer: one per backend and call
// class). The edge's guard then only sheds load: breakers in series double
// the time to recover, and the inner one's refusals count as failures in
// the outer one.
type BreakerOwner interface {
	OwnsBreakers() bool
	// PurchaseBreakerState is the worst state of its purchase breakers.
	PurchaseBreakerState() gobreaker.State
}

// Challenges issues and verifies human challenges (captcha.Store).
type Challenges interface {
	Issue(ctx context.Context, kind string, userID, itemID int64, difficulty int) (captcha.Challenge, error)
	Verify(ctx context.Context, id string, userID, itemID int64, answer string) error
	// IssueBound and VerifyBound: a challenge bound to a string (the
	// registration's network) instead of a user and an item.
	IssueBound(ctx context.Context, kind, binding string, difficulty int) (captcha.Challenge, error)
	VerifyBound(ctx context.Context, id, binding, answer string) error
}

// Limiter is the token-bucket limiter (limit.Limiter).
type Limiter interface {
	Allow(class string, k limit.Keys) limit.Decision
}

// DefaultMaxKeysPerRule caps the token buckets one limiter rule keeps; with
// about 120 bytes a bucket and the shipped rules it keeps the edge under
// 200 MB however many clients appear (see TestMemoryMillionUsers).
const DefaultMaxKeysPerRule = 1 << 17

// Config tunes the edge.
type Config struct {
	SessionSecret []byte
	SessionTTL    time.Duration
	// PreviousSessionSecret, when set, is the secret before a rotation:
	// its tokens stay valid for SessionKeyOverlap (default SessionTTL)
	// after the edge starts; new tokens are signed with SessionSecret.
	PreviousSessionSecret []byte
	SessionKeyOverlap     time.Duration
	// InsecureCookie leaves the session cookie without the Secure flag
	// (plain-HTTP development: `seckill dev`); by default it is Secure.
	InsecureCookie bool
	// TrustedOrigins are origins (scheme://host[:port]) besides the
	// edge's own whose browser pages may send state-changing requests.
	TrustedOrigins []string
	// RevocationSync is how often the edge checks Redis for revocations
	// its subscription may have missed (default 2 s).
	RevocationSync time.Duration
	// AccountsInFlight bounds register and login calls in flight to the
	// backend, apart from purchases (default 32; over it 503 overloaded).
	AccountsInFlight int
	// LoginFailures is how many failed logins one account may have per
	// LoginFailureWindow before its logins get 429 (default 10 per 15 min).
	LoginFailures      int
	LoginFailureWindow time.Duration
	// CaptchaRate and CaptchaBurst bound captcha images drawn per second
	// by this edge (default 100/s, burst 200): each costs about 5 ms of CPU.
	CaptchaRate  float64
	CaptchaBurst int
	AdminToken   string
	// Difficulty is the proof-of-work difficulty in leading zero bits;
	// DifficultyUnderLoad is added while the backend is busy (more than half
	// of MaxInFlight in use, or the breaker not closed).
	Difficulty          int
	DifficultyUnderLoad int
	MaxInFlight         int
	Breaker             BreakerConfig
	CatalogTTL          time.Duration
	PathTTL             time.Duration
	BodyLimit           int64
	// QueueGrace is how long an expired admission of a waiting room keeps
	// its slot (default 15 s: longer than a backend call), so a purchase let
	// in just before the pass expired is still counted; every edge must use
	// the same value. QueuePollRate is the polls per second the whole
	// waiting room of a sale is spread to (default 2000): poll_after grows
	// with the queue's length. QueueViewStale is how old an edge's view
	// of a waiting room may be and still answer polls while a refresh is
	// on its way or failed (default 1 s: Redis unreachable for longer
	// makes polls 503).
	QueueGrace     time.Duration
	QueuePollRate  int
	QueueViewStale time.Duration
	// Registration: the registration challenge and the per-network account
	// budgets (zero value: limit.DefaultRegistration).
	Registration limit.Registration
	// ClockOffset shifts the clock the catalogue judges sale windows by
	// (test only: the fault matrix's clock-skew row; 0 in production).
	ClockOffset time.Duration
}

// Deps are the parts the edge is wired to (in cmd/seckill).
type Deps struct {
	Backend Backend
	Redis   redis.UniversalClient
	Prefix  string // Redis key prefix shared with the backend
	Limiter Limiter
	// Budget keeps the account budgets shared by every edge; nil: in
	// Redis (limit/redislimit) under Prefix.
	Budget     limit.Budget
	Challenges Challenges
	Buyers     BuyerRecord
	IPs        *clientip.Resolver
	Log        *slog.Logger
	Registry   *prometheus.Registry
	// Storefront, when set, serves every public path outside /api/ (the
	// browser storefront, package web); Dashboard every admin path under
	// /dashboard/.
	Storefront http.Handler
	Dashboard  http.Handler
}

// Edge is one edge instance.
type Edge struct {
	cfg      Config
	be       Backend
	rdb      redis.UniversalClient
	prefix   string
	lim      Limiter
	budget   limit.Budget
	regP     atomic.Pointer[limit.Registration]
	ch       Challenges
	ipsP     atomic.Pointer[clientip.Resolver]
	log      *slog.Logger
	sessions *Sessions
	paths    *paths
	catalog  *Catalog
	dedup    *dedup
	guardP   atomic.Pointer[Guard]
	guardCfg atomic.Pointer[guardSettings]
	diffBase atomic.Int64
	diffLoad atomic.Int64
	defences *defenceSwitches
	m        *metrics
	// shadowLogged: rule -> *atomic.Int64, unix nanos of the last log line
	shadowLogged sync.Map
	draining     atomic.Bool
	instance     string
	readyC       *httpapi.ReadyCache
	public       *echo.Echo
	admin        *echo.Echo
	origins      *originGuard
	revoker      *revoker
	acctGuard    *Guard
	// acctBusyUntil (unix ns): the backend's password hashing is full;
	// logins and registrations are refused at the edge until then.
	acctBusyUntil atomic.Int64
	acctBackoff   time.Duration // accountsBackoff (tests lengthen it)
	loginFails    *loginFailures
	captchaLim    *rate.Limiter
	adminFails    *adminFailures
	audit         *auditLog
	queue         *waitingRoom
	passes        *admissionPasses
	pollTokens    pollTokens
}

// New builds an edge.
func New(cfg Config, d Deps) *Edge {
	if cfg.Difficulty <= 0 {
		cfg.Difficulty = 16
	}
	if cfg.DifficultyUnderLoad < 0 {
		cfg.DifficultyUnderLoad = 0
	}
	if cfg.BodyLimit <= 0 {
		cfg.BodyLimit = 4 << 10
	}
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	reg := d.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	e := &Edge{
		cfg: cfg, be: d.Backend, rdb: d.Redis, prefix: d.Prefix, lim: d.Limiter, ch: d.Challenges, log: log,
		sessions:   NewSessions(cfg.SessionSecret, cfg.SessionTTL, !cfg.InsecureCookie),
		paths:      newPaths(d.Redis, d.Prefix, cfg.PathTTL),
		catalog:    newCatalog(d.Backend, cfg.CatalogTTL),
		dedup:      newDedup(d.Buyers, 0),
		defences:   &defenceSwitches{rdb: d.Redis, prefix: d.Prefix},
		queue:      newWaitingRoom(d.Redis, d.Prefix, cfg.QueueGrace, cfg.QueueViewStale),
		passes:     newAdmissionPasses(cfg.SessionSecret, cfg.PreviousSessionSecret),
		pollTokens: newPollTokens(cfg.SessionSecret, cfg.PreviousSessionSecret),
		instance:   httpapi.NewInstanceID(),
	}
	e.setupSecurity(cfg, d)
	e.budget = d.Budget
	if e.budget == nil {
		e.budget = redislimit.New(d.Redis, d.Prefix)
	}
	if cfg.Registration == (limit.Registration{}) {
		cfg.Registration = limit.DefaultRegistration
	}
	e.setRegistration(cfg.Registration)
	e.readyC = httpapi.NewReadyCache(func(context.Context) bool { return e.isReady() })
	if off := cfg.ClockOffset; off != 0 {
		e.catalog.now = func() time.Time { return time.Now().Add(off) }
	}
	ips := d.IPs
	if ips == nil {
		ips, _ = clientip.New(nil)
	}
	e.ipsP.Store(ips)
	e.diffBase.Store(int64(cfg.Difficulty))
	e.diffLoad.Store(int64(cfg.DifficultyUnderLoad))
	e.setGuard(cfg.MaxInFlight, cfg.Breaker)
	e.m = newMetrics(reg, e)
	e.public = e.publicRoutes(reg)
	e.admin = e.adminRoutes(reg)
	if d.Storefront != nil {
		h := echo.WrapHandler(d.Storefront)
		e.public.GET("/", h)
		e.public.GET("/*", h)
		e.public.HEAD("/*", h)
	}
	if d.Dashboard != nil {
		h := echo.WrapHandler(d.Dashboard)
		e.admin.GET("/", func(c echo.Context) error { return c.Redirect(http.StatusFound, "/dashboard/") })
		e.admin.GET("/dashboard", func(c echo.Context) error { return c.Redirect(http.StatusFound, "/dashboard/") })
		e.admin.GET("/dashboard/*", h)
	}
	return e
}

// Public is the handler of the public listener.
func (e *Edge) Public() http.Handler { return e.public }

// Admin is the handler of the admin listener.
func (e *Edge) Admin() http.Handler { return e.admin }

// Sessions returns the session signer.
func (e *Edge) Sessions() *Sessions { return e.sessions }

// breakerState is the state of the purchases' breaker: the edge's own, or
// the worst of the balancer's when it keeps them.
func (e *Edge) breakerState() gobreaker.State {
	if bo, ok := e.be.(BreakerOwner); ok && !e.guard().isBreaking() {
		return bo.PurchaseBreakerState()
	}
	return e.guard().State()
}

// Backend returns the backend the edge calls.
func (e *Edge) Backend() Backend { return e.be }

// Catalog returns the catalogue cache.
func (e *Edge) Catalog() *Catalog { return e.catalog }

// Guard returns the backend guard in force.
func (e *Edge) Guard() *Guard { return e.guardP.Load() }

func (e *Edge) guard() *Guard { return e.guardP.Load() }

func (e *Edge) ips() *clientip.Resolver { return e.ipsP.Load() }

type guardSettings struct {
	maxInFlight int
	breaker     BreakerConfig
}

// setGuard installs a new guard when its settings changed. Calls in flight
// finish under the guard they started with.
func (e *Edge) setGuard(maxInFlight int, b BreakerConfig) {
	b = b.WithDefaults()
	if maxInFlight <= 0 {
		maxInFlight = 512
	}
	next := &guardSettings{maxInFlight: maxInFlight, breaker: b}
	if cur := e.guardCfg.Load(); cur != nil && *cur == *next {
		return
	}
	e.guardCfg.Store(next)
	breaking := true
	if bo, ok := e.be.(BreakerOwner); ok && bo.OwnsBreakers() {
		breaking = false // one breaker per backend, never two in series
	}
	e.guardP.Store(newGuard(maxInFlight, b, breaking, func(name string, from, to gobreaker.State) {
		e.log.Warn("backend circuit breaker", "breaker", name, "from", from.String(), "to", to.String())
	}))
}

// Dynamic is the part of the edge's configuration that may change while it
// runs (pushed through ZooKeeper: package dynconfig).
type Dynamic struct {
	Rules               []limit.Rule
	Difficulty          int
	DifficultyUnderLoad int
	MaxInFlight         int
	Breaker             BreakerConfig
	TrustedProxies      []string
	// Registration, when set, replaces the registration settings; nil
	// keeps those in force (a version pushed before they existed).
	Registration *limit.Registration
}

// RuleUpdater is a limiter whose rules can be swapped (limit.Limiter).
type RuleUpdater interface {
	Update(rules []limit.Rule) error
}

// Reconfigure swaps in a new dynamic configuration. Everything is checked
// before anything changes, so a refused configuration leaves the previous
// one wholly in force. Buckets of unchanged rules keep their tokens.
func (e *Edge) Reconfigure(d Dynamic) error {
	ips, err := clientip.New(d.TrustedProxies)
	if err != nil {
		return err
	}
	if d.Difficulty < 0 || d.Difficulty > 32 || d.DifficultyUnderLoad < 0 || d.Difficulty+d.DifficultyUnderLoad > 32 {
		return fmt.Errorf("difficulty %d (+%d under load) out of 0..32", d.Difficulty, d.DifficultyUnderLoad)
	}
	if err := limit.ValidateRules(d.Rules); err != nil {
		return err
	}
	if d.Registration != nil {
		if errs := d.Registration.Validate(); len(errs) > 0 {
			return fmt.Errorf("registration: %w", errors.Join(errs...))
		}
	}
	if u, ok := e.lim.(RuleUpdater); ok {
		if err := u.Update(d.Rules); err != nil {
			return err
		}
	} else {
		return fmt.Errorf("the limiter cannot change its rules")
	}
	e.ipsP.Store(ips)
	e.diffBase.Store(int64(d.Difficulty))
	e.diffLoad.Store(int64(d.DifficultyUnderLoad))
	e.setGuard(d.MaxInFlight, d.Breaker)
	if d.Registration != nil {
		e.setRegistration(*d.Registration)
	}
	e.log.Info("dynamic configuration in force", "rules", len(d.Rules), "difficulty", d.Difficulty,
		"max_in_flight", d.MaxInFlight, "trusted_proxies", len(d.TrustedProxies))
	return nil
}

// Drain makes /readyz fail so balancers stop sending new requests.
func (e *Edge) Drain() {
	e.draining.Store(true)
	e.readyC.Invalidate()
}

// Instance returns the random name of this process (told by /healthz).
func (e *Edge) Instance() string { return e.instance }

func newEcho(log *slog.Logger) *echo.Echo {
	ec := echo.New()
	ec.HideBanner, ec.HidePort = true, true
	ec.HTTPErrorHandler = httpapi.ErrorHandler(log)
	return ec
}

// events: every edge learns of sold-out items and catalogue changes
// through Redis pub/sub within a second.
func (e *Edge) channel() string { return rkeys.Space(e.prefix).EdgeEvents() }

func (e *Edge) publish(ctx context.Context, msg string) {
	if err := e.rdb.Publish(context.WithoutCancel(ctx), e.channel(), msg).Err(); err != nil {
		e.log.Warn("publishing edge event", "event", msg, "err", err)
	}
}

// Listen keeps the edge in step with the others until ctx ends: it
// refreshes the catalogue every TTL and follows the events of other edges.
// go-redis resubscribes after a reconnect; the catalogue refresh covers any
// event missed meanwhile.
func (e *Edge) Listen(ctx context.Context) {
	// Subscribed before the first catalogue load: an item created after
	// the load read the list is announced to this edge, never missed in
	// between (its id would look unknown for a whole TTL).
	sub := e.rdb.Subscribe(ctx, e.channel())
	defer sub.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := sub.Receive(wctx); err != nil {
		e.log.Warn("subscribing to edge events (the catalogue refresh covers what is missed)", "err", err)
	}
	cancel()
	go e.catalog.follow(ctx)
	if err := e.defences.load(ctx); err != nil {
		e.log.Warn("loading defence switches", "err", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() { e.revoker.run(rctx, e.cfg.RevocationSync) })
	wg.Go(func() { e.queue.flushPolls(rctx, e.admissionFactor) }) // polls a quiet edge answered from its views
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			e.apply(m.Payload)
		}
	}
}

func (e *Edge) apply(payload string) {
	kind, arg, _ := strings.Cut(payload, " ")
	switch kind {
	case "soldout":
		if id, err := strconv.ParseInt(arg, 10, 64); err == nil {
			e.catalog.markSoldOut(id)
		}
	case "defences":
		if err := e.defences.load(context.Background()); err != nil {
			e.log.Warn("loading defence switches", "err", err)
		}
	case "revoke", "notbefore":
		e.revoker.event(kind, arg)
	case "items":
		if id, err := strconv.ParseInt(arg, 10, 64); err == nil {
			e.catalog.Learn(id)
		}
		e.catalog.Invalidate()
	}
}

func (e *Edge) markSoldOut(ctx context.Context, id int64) {
	if !e.catalog.SoldOut(id) {
		e.catalog.markSoldOut(id)
		e.publish(ctx, "soldout "+strconv.FormatInt(id, 10))
	}
}

// difficulty is the proof-of-work difficulty right now: raised while the
// backend is under pressure (Edge.pressure, the signal the waiting room's
// admission rate follows too).
func (e *Edge) difficulty() int {
	base := int(e.diffBase.Load())
	if e.pressure() > 0 {
		return base + int(e.diffLoad.Load())
	}
	return base
}
