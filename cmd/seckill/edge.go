package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"seckill/captcha"
	"seckill/clientip"
	"seckill/discovery"
	"seckill/dynconfig"
	"seckill/edge"
	"seckill/httpapi"
	"seckill/internal/zkconn"
	"seckill/stock"
	"seckill/web"
)

func edgeCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c                                                 common
		publicListen, adminListen, addrFile, instanceFile string
		backendURL, backendToken                          string
		adminToken, sessionSecret                         string
		limitsFile, trusted                               string
		difficulty, underLoad, maxInFlight                int
		breakerFailures                                   int
		breakerOpen                                       time.Duration
		sessionTTL, challengeTTL, pathTTL                 time.Duration
		catalogTTL, drainWait                             time.Duration
		secureCookie                                      bool
		zkAddr, zkRoot, edgeID, configCache               string
		zkAuth, configKeys                                string
		backendsCache                                     string
		backendsFromZK                                    bool
		maxKeys                                           int
		sweep                                             time.Duration
		clockOffset                                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run the protective edge: the public API and storefront, and the admin API",
		Long: `Run the edge. Shoppers and every client talk only to it; it talks to the
backend. Cheapest check first: client identity, token buckets, session, known
item, sold-out marker, hidden path, Bloom dedup, load shedding, circuit
breaker; then the backend.

The public API listens on --public-listen, the admin API (/admin/*, /metrics,
/healthz, /readyz) on --admin-listen. Limits come from --limits (YAML).`,
		Example: `  SECKILL_ADMIN_TOKEN=s3cret SECKILL_SESSION_SECRET=$(openssl rand -hex 32) \
    seckill edge --backend-url http://127.0.0.1:8090 --limits configs/limits.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(stderr, c.LogLevel).With("component", "edge")
			printConfig(stderr, "edge", cmd.Flags())
			ctx := cmd.Context()
			if adminToken == "" {
				return errors.New("an admin token is required: --admin-token or $SECKILL_ADMIN_TOKEN")
			}
			secret := []byte(sessionSecret)
			if sessionSecret == "" {
				b := make([]byte, 32)
				_, _ = rand.Read(b)
				secret = []byte(hex.EncodeToString(b))
				log.Warn("no --session-secret: using a random one; sessions end with this process and other edges reject them")
			}
			lim, err := loadLimiter(limitsFile, maxKeys, sweep)
			if err != nil {
				return err
			}
			defer func() { _ = lim.Close() }()
			ips, err := clientip.New(splitList(trusted))
			if err != nil {
				return err
			}
			rdb, err := c.redisClient()
			if err != nil {
				return err
			}
			defer rdb.Close()
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			// One balancer, one breaker per backend and call class: the
			// edge's guard adds none in series.
			balOpts := []discovery.Option{discovery.WithAdminToken(backendToken), discovery.WithLogger(log),
				discovery.WithBreaker(discovery.BreakerConfig{ConsecutiveFailures: uint32(breakerFailures), OpenFor: breakerOpen})}
			var bal *discovery.Balancer
			var zkCred *zkconn.Credential
			if zkAddr != "" {
				if zkCred, err = zkCredential(zkAuth, "SECKILL_ZK_EDGE", log); err != nil {
					return err
				}
				if zkCred != nil {
					balOpts = append(balOpts, discovery.WithCredential(zkCred))
				}
			}
			if zkAddr != "" && backendsFromZK {
				// Backends found in ZooKeeper. The edge never waits for
				// ZooKeeper: until it answers, the last list seen (kept on
				// disk) and an explicit --backend-url serve.
				var initial []string
				if cmd.Flags().Changed("backend-url") || getenv("SECKILL_BACKEND_URL") != "" {
					initial = splitList(backendURL)
				}
				if backendsCache == "" {
					backendsCache = filepath.Join(os.TempDir(), "seckill-edge-"+edgeID+"-backends.json")
				}
				bal, err = discovery.Follow(strings.Split(zkAddr, ","), zkRoot,
					append(balOpts, discovery.WithInitial(initial), discovery.WithCache(backendsCache))...)
				if err != nil {
					return fmt.Errorf("finding backends in zookeeper: %w", err)
				}
				defer bal.Close()
			} else {
				bal = discovery.NewStatic(splitList(backendURL), balOpts...)
			}
			reg.MustRegister(bal.Collector())
			var be edge.Backend = bal
			e := edge.New(edge.Config{
				SessionSecret: secret, SessionTTL: sessionTTL, SecureCookie: secureCookie, AdminToken: adminToken,
				Difficulty: difficulty, DifficultyUnderLoad: underLoad, MaxInFlight: maxInFlight,
				Breaker:    edge.BreakerConfig{ConsecutiveFailures: uint32(breakerFailures), OpenFor: breakerOpen},
				CatalogTTL: catalogTTL, PathTTL: pathTTL, ClockOffset: clockOffset,
			}, edge.Deps{
				Backend:    be,
				Redis:      rdb,
				Prefix:     c.RedisPrefix,
				Limiter:    lim,
				Challenges: captcha.NewStore(rdb, c.RedisPrefix, captcha.Options{TTL: challengeTTL}),
				Buyers:     stock.New(rdb, c.RedisPrefix),
				IPs:        ips,
				Log:        log,
				Registry:   reg,
				Storefront: web.Storefront(),
				Dashboard:  web.Dashboard(),
			})
			if zkAddr != "" {
				// Limits, difficulty, in-flight bound, breaker and trusted
				// proxies pushed with `seckill config push`, hot-reloaded; the
				// file and flags above stay in force until the first push
				// (or the last good copy on disk, when ZooKeeper is away).
				if configCache == "" {
					configCache = filepath.Join(os.TempDir(), "seckill-edge-"+edgeID+"-limits.json")
				}
				keys, err := dynconfig.ParsePublicKeys(configKeys)
				if err != nil {
					return fmt.Errorf("--config-public-keys ($SECKILL_CONFIG_PUBLIC_KEYS): %w", err)
				}
				if len(keys) == 0 {
					log.Error("no --config-public-keys: every pushed configuration will be refused (only signed versions are applied); the file and flags stay in force")
				}
				w, err := dynconfig.NewWatcher(zkAddr, zkRoot, configCache, edgeID, func(c dynconfig.Config) error {
					if bal != nil {
						bal.SetBreaker(c.Breaker.Config())
					}
					return e.Reconfigure(edge.Dynamic{
						Rules: c.Rules, Difficulty: c.Difficulty, DifficultyUnderLoad: c.DifficultyUnderLoad,
						MaxInFlight: c.MaxInFlight, TrustedProxies: c.TrustedProxies,
						Breaker: c.Breaker.Config(),
					})
				}, log.With("component", "dynconfig"), dynconfig.WithRegisterer(reg),
					dynconfig.WithCredential(zkCred), dynconfig.WithPublicKeys(keys...))
				if err != nil {
					return err
				}
				wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
				defer stopWatch()
				go func() {
					if err := w.Run(wctx); err != nil {
						log.Error("configuration watcher stopped", "err", err)
					}
				}()
			}
			return serveEdge(ctx, e, publicListen, adminListen, addrFile, instanceFile, drainWait, log)
		},
	}
	fs := cmd.Flags()
	c.register(fs, getenv, "redis")
	envFlag(fs, getenv, &publicListen, "public-listen", "SECKILL_PUBLIC_LISTEN", "127.0.0.1:8080", "address of the public API and storefront")
	envFlag(fs, getenv, &adminListen, "admin-listen", "SECKILL_ADMIN_LISTEN", "127.0.0.1:8081", "address of the admin API, /metrics, /healthz, /readyz")
	envFlag(fs, getenv, &addrFile, "addr-file", "SECKILL_EDGE_ADDR_FILE", "", "write 'public=ADDR admin=ADDR' to this file once listening (for port 0)")
	envFlag(fs, getenv, &instanceFile, "instance-file", "SECKILL_EDGE_INSTANCE_FILE", "", "write this process's instance (the one /healthz names) to this file once listening")
	envFlag(fs, getenv, &backendURL, "backend-url", "SECKILL_BACKEND_URL", "http://127.0.0.1:8090", "base URL(s) of the backend API, comma-separated (with --zk: also used until ZooKeeper answers, when set)")
	envFlag(fs, getenv, &zkAddr, "zk", "SECKILL_ZK", "", "ZooKeeper servers (comma-separated): find the backends there instead of --backend-url")
	envFlag(fs, getenv, &zkRoot, "zk-root", "SECKILL_ZK_ROOT", "/seckill", "root of seckill's nodes in ZooKeeper")
	envFlag(fs, getenv, &zkAuth, "zk-auth", "SECKILL_ZK_EDGE", "", "the edges' ZooKeeper digest credential, user:password (docs/security-zookeeper.md)")
	envFlag(fs, getenv, &configKeys, "config-public-keys", "SECKILL_CONFIG_PUBLIC_KEYS", "", "Ed25519 public keys (base64, comma-separated: old,new while rotating) that pushed configurations must be signed with (seckill config keygen)")
	envBool(fs, getenv, &backendsFromZK, "backends-from-zk", "SECKILL_BACKENDS_FROM_ZK", true, "with --zk: find the backends in ZooKeeper (else use --backend-url)")
	host, _ := os.Hostname()
	envFlag(fs, getenv, &edgeID, "edge-id", "SECKILL_EDGE_ID", fmt.Sprintf("%s-%d", host, os.Getpid()), "name of this edge in ZooKeeper (/seckill/edges/ID)")
	envFlag(fs, getenv, &configCache, "config-cache", "SECKILL_CONFIG_CACHE", "", "last good pushed configuration, used when ZooKeeper is away at start (default: in the temp folder)")
	envFlag(fs, getenv, &backendsCache, "backends-cache", "SECKILL_BACKENDS_CACHE", "", "last backend list read from ZooKeeper, used when ZooKeeper is away at start (default: in the temp folder, named by --edge-id)")
	envFlag(fs, getenv, &backendToken, "backend-token", "SECKILL_BACKEND_TOKEN", "", "Bearer token of the backend's admin routes")
	envFlag(fs, getenv, &adminToken, "admin-token", "SECKILL_ADMIN_TOKEN", "", "Bearer token of the admin API (required)")
	envFlag(fs, getenv, &sessionSecret, "session-secret", "SECKILL_SESSION_SECRET", "", "HMAC key of session tokens; the same on every edge (random when empty)")
	envFlag(fs, getenv, &limitsFile, "limits", "SECKILL_LIMITS", "configs/limits.yaml", "token bucket rules (YAML)")
	envFlag(fs, getenv, &trusted, "trusted-proxies", "SECKILL_TRUSTED_PROXIES", "", "comma-separated CIDRs whose X-Forwarded-For is believed")
	envInt(fs, getenv, &difficulty, "difficulty", "SECKILL_DIFFICULTY", 16, "proof-of-work difficulty in leading zero bits")
	envInt(fs, getenv, &underLoad, "difficulty-under-load", "SECKILL_DIFFICULTY_UNDER_LOAD", 4, "bits added while the backend is busy")
	envInt(fs, getenv, &maxInFlight, "max-in-flight", "SECKILL_MAX_IN_FLIGHT", 512, "bound on backend calls in flight; over it 503 overloaded")
	envInt(fs, getenv, &breakerFailures, "breaker-failures", "SECKILL_BREAKER_FAILURES", 5, "consecutive backend failures that open the breaker")
	envDuration(fs, getenv, &breakerOpen, "breaker-open", "SECKILL_BREAKER_OPEN", time.Second, "how long the breaker stays open before probing")
	envDuration(fs, getenv, &sessionTTL, "session-ttl", "SECKILL_SESSION_TTL", 24*time.Hour, "session lifetime")
	envDuration(fs, getenv, &challengeTTL, "challenge-ttl", "SECKILL_CHALLENGE_TTL", 120*time.Second, "challenge lifetime")
	envDuration(fs, getenv, &pathTTL, "path-ttl", "SECKILL_PATH_TTL", 60*time.Second, "hidden path lifetime")
	envDuration(fs, getenv, &catalogTTL, "catalog-ttl", "SECKILL_CATALOG_TTL", time.Second, "how long a catalogue copy is fresh; an older one is served while one refresh runs in the background")
	envDuration(fs, getenv, &drainWait, "drain-wait", "SECKILL_DRAIN_WAIT", 0, "on shutdown, how long /readyz fails before the listeners close")
	envInt(fs, getenv, &maxKeys, "limit-max-keys", "SECKILL_LIMIT_MAX_KEYS", edge.DefaultMaxKeysPerRule, "most token buckets one rule keeps (bounds memory: about 120 bytes each)")
	envDuration(fs, getenv, &sweep, "limit-sweep", "SECKILL_LIMIT_SWEEP", 10*time.Second, "how often buckets that refilled are evicted")
	fs.DurationVar(&clockOffset, "clock-offset", 0, "test only: shift the clock the edge judges sale windows by (make chaos's clock-skew row)")
	_ = fs.MarkHidden("clock-offset")
	envBool(fs, getenv, &secureCookie, "secure-cookie", "SECKILL_SECURE_COOKIE", false, "mark the session cookie Secure (behind TLS)")
	return cmd
}

type infoWarner interface {
	Info(string, ...any)
	Warn(string, ...any)
}

func serveEdge(ctx context.Context, e *edge.Edge, publicAddr, adminAddr, addrFile, instanceFile string, drainWait time.Duration, log infoWarner) error {
	pl, err := net.Listen("tcp", publicAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", publicAddr, err)
	}
	al, err := net.Listen("tcp", adminAddr)
	if err != nil {
		pl.Close()
		return fmt.Errorf("listening on %s: %w", adminAddr, err)
	}
	if err := writeAddrFile(addrFile, "public="+pl.Addr().String()+" admin="+al.Addr().String()); err != nil {
		pl.Close()
		al.Close()
		return err
	}
	if err := writeAddrFile(instanceFile, e.Instance()); err != nil {
		pl.Close()
		al.Close()
		return err
	}
	log.Info("listening", "public", "http://"+pl.Addr().String()+"/", "admin", "http://"+al.Addr().String()+"/admin/", "instance", e.Instance())
	return serveOnDrain(ctx, e, pl, al, drainWait, log)
}

// serveOn serves an edge on two listeners until ctx ends, then drains.
func serveOn(ctx context.Context, e *edge.Edge, pl, al net.Listener, log infoWarner) error {
	return serveOnDrain(ctx, e, pl, al, 0, log)
}

func serveOnDrain(ctx context.Context, e *edge.Edge, pl, al net.Listener, drainWait time.Duration, log infoWarner) error {
	lctx, stopListen := context.WithCancel(context.WithoutCancel(ctx))
	defer stopListen()
	go e.Listen(lctx)
	servers := []*http.Server{httpapi.NewServer(e.Public()), httpapi.NewServer(e.Admin())}
	servers[0].ReadTimeout = 30 * time.Second
	errs := make(chan error, 2)
	go func() { errs <- servers[0].Serve(pl) }()
	go func() { errs <- servers[1].Serve(al) }()
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: readiness off, draining")
	e.Drain()
	time.Sleep(drainWait)
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(sctx); err != nil {
				log.Warn("http shutdown", "err", err)
			}
		}()
	}
	wg.Wait()
	log.Info("stopped")
	return nil
}

// zkCredential reads a role's ZooKeeper credential (user:password); empty
// means none, and the nodes this process creates are world-writable.
func zkCredential(value, env string, log *slog.Logger) (*zkconn.Credential, error) {
	if value == "" {
		log.Warn("ZooKeeper without a credential: the nodes this process creates are world-writable (set --zk-auth / $" + env + "; docs/security-zookeeper.md)")
		return nil, nil
	}
	c, err := zkconn.ParseCredential(value)
	if err != nil {
		return nil, fmt.Errorf("--zk-auth ($%s): %w", env, err)
	}
	return &c, nil
}
