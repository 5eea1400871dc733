package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"seckill/backend"
	"seckill/discovery"
	"seckill/httpapi"
	"seckill/postgres"
	"seckill/queue"
	"seckill/stock"
)

// BackendConfig is the backend role: the purchase API, the outbox relay
// (unless Relay.Off) and the ZooKeeper registration (when ZK is set).
type BackendConfig struct {
	Stores
	Listen       string // listen
	AddrFile     string // addr-file
	InstanceFile string // instance-file
	// Token is the internal credential (SECKILL_BACKEND_TOKEN), required:
	// the Bearer token of every route but /healthz, /readyz and /metrics.
	Token       string
	RunRelay    bool // relay: run the outbox relay in this process
	Relay       RelayOptions
	ZK          []string // zk: servers to register with (none: no registration)
	ZKRoot      string   // zk-root
	ZKAuth      string   // zk-auth: the backends' ZooKeeper credential, user:password ("" = an open tree)
	Advertise   string   // advertise: URL or host:port edges reach this backend at
	RedisGuard  bool     // redis-guard
	GuardSettle time.Duration
	DrainWait   time.Duration
	// HasherCommand runs password hashing in a child process at the
	// lowest CPU priority (`seckill hasher`; issue 13 M5); empty: in this
	// process, at normal priority.
	HasherCommand []string
	Log           *slog.Logger
}

// Validate returns every problem of the configuration.
func (c BackendConfig) Validate() error {
	var ps Problems
	c.Stores.validate(&ps, true, true, true)
	ps.listen("listen", c.Listen, false)
	if c.Token == "" {
		ps.add("backend-token", "the internal credential is required: every backend route but the health probes needs it, "+
			"and the edges send it; the same on every edge and backend (%s)", HowToMakeSecret)
	}
	ps.secret("backend-token", c.Token)
	if c.RunRelay {
		c.Relay.validate(&ps, "relay-claim-idle")
	}
	if len(c.ZK) > 0 && !strings.HasPrefix(c.ZKRoot, "/") {
		ps.add("zk-root", "%q must start with /", c.ZKRoot)
	}
	ps.zkAuth(c.ZKAuth)
	ps.nonNegative("redis-guard-settle", c.GuardSettle)
	ps.nonNegative("drain-wait", c.DrainWait)
	return ps.err()
}

// Backend is a running backend role.
type Backend struct {
	gr      *group
	db      *postgres.DB
	st      *stock.Store
	svc     *backend.Service
	handler *backend.Handler
	addr    string
	log     *slog.Logger
}

// StartBackend builds the backend role and starts serving.
func StartBackend(ctx context.Context, cfg BackendConfig) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := orDefault(cfg.Log)
	gr := newGroup(ctx)
	b, err := startBackend(ctx, gr, cfg, log)
	if err != nil {
		return nil, gr.fail(err)
	}
	return b, nil
}

func startBackend(ctx context.Context, gr *group, cfg BackendConfig, log *slog.Logger) (*Backend, error) {
	db, rdb, err := cfg.Stores.openDBAndRedis(ctx, gr)
	if err != nil {
		return nil, err
	}
	st := stock.New(rdb, cfg.RedisPrefix)
	svc := backend.New(db, st, log)
	var guard *stock.Guard
	if cfg.RedisGuard {
		// Reservations stay frozen until the guard has verified this Redis
		// server (its first check runs before serving).
		topo := queue.Topology{Queue: cfg.Queue}
		amqpURL := cfg.AMQPURL
		guard = stock.NewGuard(st, stock.GuardConfig{
			Source: db, Settle: cfg.GuardSettle, Logger: log.With("component", "redis-guard"),
			QueueReady: func(ctx context.Context) (int, error) {
				ready, _, err := queue.QueueDepth(ctx, amqpURL, topo)
				var ae *amqp.Error
				if errors.As(err, &ae) && ae.Code == amqp.NotFound {
					return 0, nil // no queue yet: nothing in it
				}
				return ready, err
			},
		})
		svc.SetRedisGuard(guard)
	} else {
		log.Warn("redis guard off: a Redis restarted from an older state can sell units twice")
	}
	n, err := svc.LoadAll(ctx)
	if err != nil {
		return nil, err
	}
	log.Info("items loaded into redis", "items", n)

	reg := newRegistry()
	h := backend.NewHandler(svc, backend.HTTPConfig{Token: cfg.Token, Registry: reg, Logger: log})
	var relay *relayParts
	if cfg.RunRelay {
		if relay, err = newRelay(gr, cfg.Stores, cfg.Relay, rdb, log); err != nil {
			return nil, err
		}
		registerRelayMetrics(reg, relay.relay, relay.outbox)
	}
	if guard != nil {
		registerGuardMetrics(reg, guard)
	}

	ln, err := listen("listen", cfg.Listen)
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	if err := WriteAddrFile(cfg.AddrFile, addr); err != nil {
		ln.Close()
		return nil, err
	}
	if err := WriteAddrFile(cfg.InstanceFile, h.Instance()); err != nil {
		ln.Close()
		return nil, err
	}
	log.Info("listening", "addr", addr, "instance", h.Instance())

	// The relay and the guard outlive the HTTP drain (they run on bg):
	// orders accepted while draining are relayed too.
	if guard != nil {
		gr.Go("redis guard", func() error { _ = guard.Run(gr.bg); return nil })
	}
	if relay != nil {
		gr.Go("relay", func() error { return relay.relay.Run(gr.bg) })
	}
	// Password hashing in its low-priority process (issue 13 M5).
	if len(cfg.HasherCommand) > 0 {
		gr.Go("password hashing", func() error { return svc.RunHashing(gr.bg, cfg.HasherCommand) })
	}
	var zreg *discovery.Registration
	srv := httpapi.NewServer(h)
	gr.onShutdown(func() {
		gr.mu.Lock()
		r := zreg
		gr.mu.Unlock()
		if r != nil {
			r.Close() // edges stop sending before the drain
		}
		log.Info("shutting down: readiness off, draining")
		h.Drain()
		sleep(cfg.DrainWait)
		shutdownServers(log, srv)
	})
	gr.serve("backend api", srv, ln)

	if len(cfg.ZK) > 0 {
		url := cfg.Advertise
		if url == "" {
			url = addr
			if host, _, _ := net.SplitHostPort(addr); host == "" || net.ParseIP(host).IsUnspecified() {
				log.Warn("registering a wildcard address: set --advertise to an address edges can reach", "addr", addr)
			}
		}
		if !strings.Contains(url, "://") {
			url = "http://" + url
		}
		// Registered in the background: the backend serves at once, and
		// keeps trying while ZooKeeper is away (no deadline, no exit: a
		// crash loop under a supervisor helps nobody).
		// The registration carries a MAC under the internal token (edges
		// route only to registrations they verify); with a credential its
		// node is writable by this backend alone.
		zopts := []discovery.Option{discovery.WithAdminToken(cfg.Token)}
		if cred := zkCredential(cfg.ZKAuth, "SECKILL_ZK_BACKEND", log); cred != nil {
			zopts = append(zopts, discovery.WithCredential(cred))
		}
		r, err := discovery.StartRegistration(cfg.ZK, cfg.ZKRoot, url, log, zopts...)
		if err != nil {
			return nil, fmt.Errorf("registering in zookeeper: %w", err)
		}
		gr.onClose(r.Close)
		gr.mu.Lock()
		zreg = r
		gr.mu.Unlock()
		log.Info("registering in zookeeper in the background", "url", url)
	}
	return &Backend{gr: gr, db: db, st: st, svc: svc, handler: h, addr: addr, log: log}, nil
}

// Addr is the address the backend API listens on.
func (b *Backend) Addr() string { return b.addr }

// Service is the backend service (for tests that look inside).
func (b *Backend) Service() *backend.Service { return b.svc }

// DB is the backend's PostgreSQL store (for tests that look inside).
func (b *Backend) DB() *postgres.DB { return b.db }

// Stock is the backend's Redis store (for tests that look inside).
func (b *Backend) Stock() *stock.Store { return b.st }

// Wait waits for the role to stop and for every goroutine and client.
func (b *Backend) Wait() error {
	err := b.gr.wait()
	b.log.Info("stopped")
	return err
}

// RunBackend starts the backend role and waits for it.
func RunBackend(ctx context.Context, cfg BackendConfig) error {
	b, err := StartBackend(ctx, cfg)
	if err != nil {
		return err
	}
	return b.Wait()
}

func registerGuardMetrics(reg prometheus.Registerer, g *stock.Guard) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "seckill_backend", Name: "redis_frozen",
		Help: "1 while reservations are frozen because Redis restarted and is being verified, else 0.",
	}, func() float64 {
		if g.Frozen() {
			return 1
		}
		return 0
	}))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "seckill_backend", Name: "redis_freezes_total",
		Help: "Freezes of reservations after a Redis restart (run_id change or NOSCRIPT).",
	}, func() float64 { return float64(g.Status().Freezes) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "seckill_backend", Name: "redis_last_freeze_seconds",
		Help: "How long the last finished freeze lasted.",
	}, func() float64 { return g.Status().LastFreezeSeconds }))
}
