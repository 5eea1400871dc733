package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill/captcha"
	"seckill/clientip"
	"seckill/configs"
	"seckill/discovery"
	"seckill/dynconfig"
	"seckill/edge"
	"seckill/httpapi"
	"seckill/limit"
	"seckill/stock"
	"seckill/web"
)

// EdgeConfig is the edge role: the public API and storefront, and the
// admin API, in front of the backends.
type EdgeConfig struct {
	Stores                    // Redis only
	PublicListen, AdminListen string
	AddrFile, InstanceFile    string
	// BackendURLs are the backends (with ZK and BackendsFromZK: also used
	// until ZooKeeper answers, when BackendURLsSet).
	BackendURLs    []string
	BackendURLsSet bool
	ZK             []string // zk: ZooKeeper servers (none: no ZooKeeper)
	ZKRoot         string
	BackendsFromZK bool
	ZKAuth         string // zk-auth: the edges' ZooKeeper credential, user:password ("" = an open tree)
	// ConfigPublicKeys (config-public-keys): the Ed25519 public keys a
	// pushed configuration must be signed with, comma-separated base64.
	ConfigPublicKeys string
	EdgeID           string
	ConfigCache      string // "" = in the temp folder, named by EdgeID
	BackendsCache    string // "" = in the temp folder, named by EdgeID
	BackendToken     string // the backend's internal credential
	AdminToken       string // required
	SessionSecret    string // "" = random per process
	// LimitsFile holds the token-bucket rules; "" = the built-in ones
	// (configs/limits.yaml, embedded).
	LimitsFile          string
	TrustedProxies      []string
	Difficulty          int
	DifficultyUnderLoad int
	MaxInFlight         int
	BreakerFailures     int
	BreakerOpen         time.Duration
	SessionTTL          time.Duration
	ChallengeTTL        time.Duration
	PathTTL             time.Duration
	CatalogTTL          time.Duration
	DrainWait           time.Duration
	LimitMaxKeys        int
	LimitSweep          time.Duration
	ClockOffset         time.Duration // test only (the fault matrix's clock-skew row)
	SecureCookie        bool
	// Issue 13 controls (edge.Config documents each).
	TrustedOrigins        []string
	PreviousSessionSecret string
	SessionKeyOverlap     time.Duration // 0 = SessionTTL
	RevocationSync        time.Duration
	AccountsInFlight      int
	CaptchaRate           int
	// Waiting room (issue 16; edge.Config documents each).
	QueueGrace     time.Duration
	QueuePollRate  int
	QueueViewStale time.Duration
	Log            *slog.Logger

	// Backend, when set, replaces the backends above (tests, and `seckill
	// dev`'s in-process backend).
	Backend edge.Backend
	// Hooks reach into the edge the role builds: tests only (nil in every
	// subcommand).
	Hooks *EdgeHooks
}

// EdgeHooks let a test change what the edge role builds. What Tune sets
// is not validated.
type EdgeHooks struct {
	// Tune is called with the edge's configuration and dependencies just
	// before the edge is built.
	Tune func(*edge.Config, *edge.Deps)
	// WrapPublic wraps the public listener's handler.
	WrapPublic func(http.Handler) http.Handler
}

// DefaultEdge holds the built-in defaults of the edge's own settings.
var DefaultEdge = EdgeConfig{
	PublicListen: "127.0.0.1:8080", AdminListen: "127.0.0.1:8081",
	BackendURLs: []string{"http://127.0.0.1:8090"}, ZKRoot: "/seckill", BackendsFromZK: true,
	Difficulty: 16, DifficultyUnderLoad: 4, MaxInFlight: 512, BreakerFailures: 5, BreakerOpen: time.Second,
	SessionTTL: 24 * time.Hour, ChallengeTTL: 120 * time.Second, PathTTL: 60 * time.Second, CatalogTTL: time.Second,
	LimitMaxKeys: edge.DefaultMaxKeysPerRule, LimitSweep: 10 * time.Second,
	SecureCookie: true, RevocationSync: edge.DefaultRevocationSync, AccountsInFlight: edge.DefaultAccountsInFlight,
	CaptchaRate: edge.DefaultCaptchaRate,
	QueueGrace:  edge.DefaultQueueGrace, QueuePollRate: edge.DefaultQueuePollRate, QueueViewStale: edge.DefaultQueueViewStale,
}

const builtInLimits = "the built-in limits"

// rules reads the token-bucket rules: the file, or the built-in ones.
func (c EdgeConfig) rules() ([]limit.Rule, string, error) {
	r, _, from, err := c.limits()
	return r, from, err
}

// limits reads the limits file (or the built-in one): the token-bucket
// rules and the registration settings (limit.DefaultRegistration when the
// file has no registration section).
func (c EdgeConfig) limits() ([]limit.Rule, limit.Registration, string, error) {
	from, raw := builtInLimits, configs.Limits
	if c.LimitsFile != "" {
		from = c.LimitsFile
		var err error
		if raw, err = os.ReadFile(c.LimitsFile); err != nil {
			return nil, limit.Registration{}, from, fmt.Errorf("reading %s: %w", c.LimitsFile, err)
		}
	}
	r, reg, err := limit.ParseLimits(raw)
	if err != nil {
		if c.LimitsFile == "" {
			return nil, limit.Registration{}, from, err
		}
		return nil, limit.Registration{}, from, fmt.Errorf("%s: %w", c.LimitsFile, err)
	}
	if reg == nil {
		return r, limit.DefaultRegistration, from, nil
	}
	return r, *reg, from, nil
}

// dynamicPlaces names the setting of each place dynconfig reports.
var dynamicPlaces = map[string]string{
	"difficulty":                   "difficulty",
	"difficulty_under_load":        "difficulty-under-load",
	"max_in_flight":                "max-in-flight",
	"breaker.consecutive_failures": "breaker-failures",
	"breaker.open_for":             "breaker-open",
}

// validateProtection checks the settings a pushed configuration also
// carries with the same rules as `seckill config push` (dynconfig's
// Validate): a value a push would reject is rejected at start.
func validateProtection(ps *Problems, rules []limit.Rule, rulesFrom string, difficulty, underLoad, maxInFlight, breakerFailures int, breakerOpen time.Duration, trusted []string) {
	dc := dynconfig.Config{
		Rules: rules, Difficulty: difficulty, DifficultyUnderLoad: underLoad, MaxInFlight: maxInFlight,
		Breaker:        dynconfig.Breaker{ConsecutiveFailures: uint32(max(breakerFailures, 0)), OpenFor: dynconfig.Duration(breakerOpen), HalfOpenProbes: 1},
		TrustedProxies: trusted,
	}
	if breakerFailures < 0 {
		ps.add("breaker-failures", "%d must be between 1 and 10000", breakerFailures)
	}
	if rules == nil {
		dc.Rules = []limit.Rule{{Name: "placeholder", Class: "*", Key: "global", Rate: 1, Burst: 1}}
	}
	for _, p := range dynconfig.ProblemsOf(dc.Validate()) {
		switch {
		case strings.HasPrefix(p.Place, "rules"):
			if rulesFrom == builtInLimits {
				ps.add("limits", "%s: %s: %s", rulesFrom, p.Place, p.Msg)
			} else {
				ps.add("limits", "%s: %s", p.Place, p.Msg) // the value names the file
			}
		case strings.HasPrefix(p.Place, "trusted_proxies"):
			ps.add("trusted-proxies", "%s", p.Msg)
		default:
			s, ok := dynamicPlaces[p.Place]
			if !ok {
				s = p.Place
			}
			ps.add(s, "%s", p.Msg)
		}
	}
}

// Validate returns every problem of the configuration.
func (c EdgeConfig) Validate() error {
	var ps Problems
	c.validate(&ps, false)
	return ps.err()
}

func (c EdgeConfig) validate(ps *Problems, dev bool) {
	if !dev {
		c.Stores.validate(ps, true, false, false)
	}
	ps.listen("public-listen", c.PublicListen, false)
	ps.listen("admin-listen", c.AdminListen, false)
	if c.Backend == nil && !(len(c.ZK) > 0 && c.BackendsFromZK) && len(c.BackendURLs) == 0 {
		ps.add("backend-url", "at least one backend URL is needed (or --zk to find them in ZooKeeper)")
	}
	for _, u := range c.BackendURLs {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			ps.add("backend-url", "%q must start with http:// or https://", u)
		}
	}
	if len(c.ZK) > 0 && !strings.HasPrefix(c.ZKRoot, "/") {
		ps.add("zk-root", "%q must start with /", c.ZKRoot)
	}
	ps.zkAuth(c.ZKAuth)
	if _, err := dynconfig.ParsePublicKeys(c.ConfigPublicKeys); err != nil {
		ps.add("config-public-keys", "%v", err)
	}
	if c.AdminToken == "" {
		ps.add("admin-token", "an admin token is required (%s)", HowToMakeSecret)
	} else if !dev {
		ps.secret("admin-token", c.AdminToken)
	}
	if !dev {
		ps.secret("session-secret", c.SessionSecret)
		if c.BackendToken == "" && c.Backend == nil {
			ps.add("backend-token", "the backends' internal credential is required: the one they were started with (%s)", HowToMakeSecret)
		}
		ps.secret("backend-token", c.BackendToken)
	}
	rules, from, err := c.rules()
	if err != nil {
		ps.add("limits", "%v", err)
	}
	validateProtection(ps, rules, from, c.Difficulty, c.DifficultyUnderLoad, c.MaxInFlight, c.BreakerFailures, c.BreakerOpen, c.TrustedProxies)
	ps.atLeast("session-ttl", c.SessionTTL, time.Minute)
	ps.atLeast("challenge-ttl", c.ChallengeTTL, time.Second)
	ps.atLeast("path-ttl", c.PathTTL, time.Second)
	ps.nonNegative("catalog-ttl", c.CatalogTTL)
	ps.nonNegative("drain-wait", c.DrainWait)
	ps.positive("limit-max-keys", c.LimitMaxKeys)
	ps.atLeast("limit-sweep", c.LimitSweep, 10*time.Millisecond)
	if err := edge.ValidateTrustedOrigins(c.TrustedOrigins); err != nil {
		ps.add("trusted-origins", "%v", err)
	}
	if !dev {
		ps.secret("session-secret-previous", c.PreviousSessionSecret)
	}
	ps.nonNegative("session-key-overlap", c.SessionKeyOverlap)
	ps.atLeast("revocation-sync", c.RevocationSync, 10*time.Millisecond)
	ps.positive("accounts-in-flight", c.AccountsInFlight)
	ps.positive("captcha-rate", c.CaptchaRate)
	ps.atLeast("queue-grace", c.QueueGrace, time.Second)
	ps.positive("queue-poll-rate", c.QueuePollRate)
	ps.atLeast("queue-view-stale", c.QueueViewStale, 100*time.Millisecond)
}

// Edge is a running edge role.
type Edge struct {
	gr     *group
	edge   *edge.Edge
	public string
	admin  string
	log    *slog.Logger
}

// StartEdge builds the edge role and starts serving.
func StartEdge(ctx context.Context, cfg EdgeConfig) (*Edge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := orDefault(cfg.Log)
	rdb, err := RedisClient(cfg.RedisURL)
	if err != nil {
		return nil, err
	}
	gr := newGroup(ctx)
	gr.onClose(func() { _ = rdb.Close() })
	e, err := startEdge(gr, cfg, rdb, log)
	if err != nil {
		return nil, gr.fail(err)
	}
	return e, nil
}

// startEdge builds an edge on rdb (the dev role passes its own) and serves.
func startEdge(gr *group, cfg EdgeConfig, rdb redis.UniversalClient, log *slog.Logger) (*Edge, error) {
	if !isLoopback(cfg.AdminListen) {
		log.Warn("the admin listener is not on loopback: anyone who reaches it may try admin tokens; keep it on a private network or behind a firewall",
			"admin_listen", cfg.AdminListen)
	}
	secret := []byte(cfg.SessionSecret)
	if len(secret) == 0 {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		secret = []byte(hex.EncodeToString(b))
		log.Warn("no --session-secret: using a random one; sessions end with this process and other edges reject them")
	}
	rules, registration, _, err := cfg.limits()
	if err != nil {
		return nil, err
	}
	lim, err := limit.New(rules, limit.Options{MaxKeysPerRule: cfg.LimitMaxKeys, IdleAfter: cfg.LimitSweep})
	if err != nil {
		return nil, fmt.Errorf("building the limiter: %w", err)
	}
	gr.onClose(func() { _ = lim.Close() })
	ips, err := clientip.New(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("--trusted-proxies: %w", err)
	}
	reg := newRegistry()
	be := cfg.Backend
	var bal *discovery.Balancer
	if be == nil {
		// One balancer, one breaker per backend and call class: the edge's
		// guard adds none in series.
		balOpts := []discovery.Option{discovery.WithAdminToken(cfg.BackendToken), discovery.WithLogger(log),
			discovery.WithBreaker(discovery.BreakerConfig{ConsecutiveFailures: uint32(cfg.BreakerFailures), OpenFor: cfg.BreakerOpen})}
		if len(cfg.ZK) > 0 {
			if cred := zkCredential(cfg.ZKAuth, "SECKILL_ZK_EDGE", log); cred != nil {
				balOpts = append(balOpts, discovery.WithCredential(cred))
			}
		}
		if len(cfg.ZK) > 0 && cfg.BackendsFromZK {
			// Backends found in ZooKeeper. The edge never waits for
			// ZooKeeper: until it answers, the last list seen (kept on
			// disk) and an explicit --backend-url serve.
			var initial []string
			if cfg.BackendURLsSet {
				initial = cfg.BackendURLs
			}
			cache := cfg.BackendsCache
			if cache == "" {
				cache = filepath.Join(os.TempDir(), "seckill-edge-"+cfg.EdgeID+"-backends.json")
			}
			bal, err = discovery.Follow(cfg.ZK, cfg.ZKRoot, append(balOpts, discovery.WithInitial(initial), discovery.WithCache(cache))...)
			if err != nil {
				return nil, fmt.Errorf("finding backends in zookeeper: %w", err)
			}
			gr.onClose(bal.Close)
		} else {
			bal = discovery.NewStatic(cfg.BackendURLs, balOpts...)
		}
		reg.MustRegister(bal.Collector())
		be = bal
	}
	ec := edge.Config{
		SessionSecret: secret, SessionTTL: cfg.SessionTTL, InsecureCookie: !cfg.SecureCookie, AdminToken: cfg.AdminToken,
		PreviousSessionSecret: []byte(cfg.PreviousSessionSecret), SessionKeyOverlap: cfg.SessionKeyOverlap,
		TrustedOrigins: cfg.TrustedOrigins, RevocationSync: cfg.RevocationSync, AccountsInFlight: cfg.AccountsInFlight,
		CaptchaRate: float64(cfg.CaptchaRate), QueueGrace: cfg.QueueGrace, QueuePollRate: cfg.QueuePollRate,
		QueueViewStale: cfg.QueueViewStale,
		Difficulty:     cfg.Difficulty, DifficultyUnderLoad: cfg.DifficultyUnderLoad, MaxInFlight: cfg.MaxInFlight,
		Breaker:    edge.BreakerConfig{ConsecutiveFailures: uint32(cfg.BreakerFailures), OpenFor: cfg.BreakerOpen},
		CatalogTTL: cfg.CatalogTTL, PathTTL: cfg.PathTTL, ClockOffset: cfg.ClockOffset,
		Registration: registration,
	}
	deps := edge.Deps{
		Backend:    be,
		Redis:      rdb,
		Prefix:     cfg.RedisPrefix,
		Limiter:    lim,
		Challenges: captcha.NewStore(rdb, cfg.RedisPrefix, captcha.Options{TTL: cfg.ChallengeTTL}),
		Buyers:     stock.New(rdb, cfg.RedisPrefix),
		IPs:        ips,
		Log:        log,
		Registry:   reg,
		Storefront: web.Storefront(),
		Dashboard:  web.Dashboard(),
	}
	if cfg.Hooks != nil && cfg.Hooks.Tune != nil {
		cfg.Hooks.Tune(&ec, &deps)
	}
	e := edge.New(ec, deps)
	// Background work of the edge (pub/sub, configuration watcher) runs on
	// bg: until the listeners closed.
	if len(cfg.ZK) > 0 {
		// Limits, difficulty, in-flight bound, breaker and trusted proxies
		// pushed with `seckill config push`, hot-reloaded; the file and
		// flags stay in force until the first push (or the last good copy
		// on disk, when ZooKeeper is away).
		cache := cfg.ConfigCache
		if cache == "" {
			cache = filepath.Join(os.TempDir(), "seckill-edge-"+cfg.EdgeID+"-limits.json")
		}
		keys, _ := dynconfig.ParsePublicKeys(cfg.ConfigPublicKeys) // validated
		if len(keys) == 0 {
			log.Error("no --config-public-keys: every pushed configuration will be refused (only signed versions are applied); the file and flags stay in force")
		}
		var wopts []dynconfig.WatcherOption
		if cred := zkCredential(cfg.ZKAuth, "SECKILL_ZK_EDGE", nil); cred != nil {
			wopts = append(wopts, dynconfig.WithCredential(cred))
		}
		wopts = append(wopts, dynconfig.WithRegisterer(reg), dynconfig.WithPublicKeys(keys...))
		w, err := dynconfig.NewWatcher(strings.Join(cfg.ZK, ","), cfg.ZKRoot, cache, cfg.EdgeID, func(c dynconfig.Config) error {
			if bal != nil {
				bal.SetBreaker(c.Breaker.Config())
			}
			return e.Reconfigure(edge.Dynamic{
				Rules: c.Rules, Difficulty: c.Difficulty, DifficultyUnderLoad: c.DifficultyUnderLoad,
				MaxInFlight: c.MaxInFlight, TrustedProxies: c.TrustedProxies,
				Breaker: c.Breaker.Config(), Registration: c.Registration,
			})
		}, log.With("component", "dynconfig"), wopts...)
		if err != nil {
			return nil, err
		}
		gr.Go("configuration watcher", func() error {
			if err := w.Run(gr.bg); err != nil {
				log.Error("configuration watcher stopped", "err", err)
			}
			return nil
		})
	}
	return serveEdge(gr, e, cfg, log)
}

// serveEdge opens the edge's two listeners and serves them in the group;
// the group's shutdown drains them.
func serveEdge(gr *group, e *edge.Edge, cfg EdgeConfig, log *slog.Logger) (*Edge, error) {
	pl, err := listen("public-listen", cfg.PublicListen)
	if err != nil {
		return nil, err
	}
	al, err := listen("admin-listen", cfg.AdminListen)
	if err != nil {
		pl.Close()
		return nil, err
	}
	ed := &Edge{gr: gr, edge: e, public: pl.Addr().String(), admin: al.Addr().String(), log: log}
	if err := WriteAddrFile(cfg.AddrFile, "public="+ed.public+" admin="+ed.admin); err != nil {
		pl.Close()
		al.Close()
		return nil, err
	}
	if err := WriteAddrFile(cfg.InstanceFile, e.Instance()); err != nil {
		pl.Close()
		al.Close()
		return nil, err
	}
	log.Info("listening", "public", "http://"+ed.public+"/", "admin", "http://"+ed.admin+"/admin/", "instance", e.Instance())
	gr.Go("edge listen", func() error { e.Listen(gr.bg); return nil })
	public := e.Public()
	if cfg.Hooks != nil && cfg.Hooks.WrapPublic != nil {
		public = cfg.Hooks.WrapPublic(public)
	}
	pub, adm := httpapi.NewServer(public), httpapi.NewServer(e.Admin())
	pub.ReadTimeout = 30 * time.Second
	gr.onShutdown(func() {
		log.Info("shutting down: readiness off, draining")
		e.Drain()
		sleep(cfg.DrainWait)
		shutdownServers(log, pub, adm)
	})
	gr.serve("public listener", pub, pl)
	gr.serve("admin listener", adm, al)
	return ed, nil
}

// PublicAddr is the public listener's address.
func (e *Edge) PublicAddr() string { return e.public }

// AdminAddr is the admin listener's address.
func (e *Edge) AdminAddr() string { return e.admin }

// Edge is the edge itself (for tests that look inside).
func (e *Edge) Edge() *edge.Edge { return e.edge }

// Wait waits for the role to stop and for every goroutine and client.
func (e *Edge) Wait() error {
	err := e.gr.wait()
	e.log.Info("stopped")
	return err
}

// RunEdge starts the edge role and waits for it.
func RunEdge(ctx context.Context, cfg EdgeConfig) error {
	e, err := StartEdge(ctx, cfg)
	if err != nil {
		return err
	}
	return e.Wait()
}
