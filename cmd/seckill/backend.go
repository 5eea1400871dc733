package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"

	"seckill/backend"
	"seckill/discovery"
	"seckill/httpapi"
	"seckill/postgres"
	"seckill/queue"
	"seckill/stock"
)

func backendCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c         common
		listen    string
		addrFile  string
		instFile  string
		token     string
		relay     bool
		ro        relayOptions
		drainWait time.Duration
		zkAddrs   string
		zkRoot    string
		zkAuth    string
		advertise string
		guardOn   bool
		settle    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "Run the purchase backend: reservation API and outbox relay",
		Long: `Run the purchase backend. It serves the backend API (docs/API.md) that the
edge calls, loads every item into Redis at start (never overwriting live
counters), and runs the relay that moves accepted orders from the Redis outbox
to RabbitMQ with publisher confirms.

The Redis guard (--redis-guard) freezes reservations (503
backend_unavailable, Retry-After) at start and whenever the Redis server
restarted (its run_id changed, or NOSCRIPT), until every item is re-seeded
from PostgreSQL: a Redis back from an older state never sells a unit twice
(docs/RELIABILITY.md, "Stale Redis").

On SIGTERM or Ctrl-C, /readyz fails first, in-flight requests finish, and the
relay stops after its outstanding confirms.`,
		Example: `  seckill backend --listen 127.0.0.1:8090 \
    --redis-url redis://127.0.0.1:6379/0 --amqp-url amqp://guest:guest@127.0.0.1:5672/ \
    --pg-url 'postgres://postgres@127.0.0.1:5432/seckill?sslmode=disable'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(stderr, c.LogLevel).With("component", "backend")
			printConfig(stderr, "backend", cmd.Flags())
			ctx := cmd.Context()

			db, err := postgres.Open(ctx, c.PGURL)
			if err != nil {
				return err
			}
			defer db.Close()
			rdb, err := c.redisClient()
			if err != nil {
				return err
			}
			defer rdb.Close()
			st := stock.New(rdb, c.RedisPrefix)
			svc := backend.New(db, st, log)
			var guard *stock.Guard
			if guardOn {
				// Reservations stay frozen until the guard has verified
				// this Redis server (its first check runs before serving).
				topo := queue.Topology{Queue: c.Queue}
				guard = stock.NewGuard(st, stock.GuardConfig{
					Source: db, Settle: settle, Logger: log.With("component", "redis-guard"),
					QueueReady: func(ctx context.Context) (int, error) {
						ready, _, err := queue.QueueDepth(ctx, c.AMQPURL, topo)
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
				return err
			}
			log.Info("items loaded into redis", "items", n)

			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			h := backend.NewHandler(svc, backend.HTTPConfig{AdminToken: token, Registry: reg, Logger: log})

			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listening on %s: %w", listen, err)
			}
			addr := ln.Addr().String()
			if err := writeAddrFile(addrFile, addr); err != nil {
				ln.Close()
				return err
			}
			if err := writeAddrFile(instFile, h.Instance()); err != nil {
				ln.Close()
				return err
			}
			log.Info("listening", "addr", addr, "instance", h.Instance())
			srv := httpapi.NewServer(h)

			var wg sync.WaitGroup
			relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
			defer stopRelay()
			if guard != nil {
				registerGuardMetrics(reg, guard)
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = guard.Run(relayCtx)
				}()
			}
			if relay {
				parts, err := newRelay(c, ro, rdb, log)
				if err != nil {
					return err
				}
				defer func() { stopRelay(); wg.Wait(); parts.close() }()
				registerRelayMetrics(reg, parts.relay, parts.outbox)
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := parts.relay.Run(relayCtx); err != nil && !errors.Is(err, context.Canceled) {
						log.Error("relay stopped", "err", err)
					}
				}()
			}
			serveErr := make(chan error, 1)
			go func() { serveErr <- srv.Serve(ln) }()

			var zreg *discovery.Registration
			if zkAddrs != "" {
				url := advertise
				if url == "" {
					url = addr
					if h, _, _ := net.SplitHostPort(addr); h == "" || net.ParseIP(h).IsUnspecified() {
						log.Warn("registering a wildcard address: set --advertise to an address edges can reach", "addr", addr)
					}
				}
				if !strings.Contains(url, "://") {
					url = "http://" + url
				}
				// Registered in the background: the backend serves at once,
				// and keeps trying while ZooKeeper is away (no deadline, no
				// exit: a crash loop under a supervisor helps nobody).
				// The registration carries a MAC under the internal token
				// (edges route only to registrations they verify); with a
				// credential its node is writable by this backend alone.
				zopts := []discovery.Option{discovery.WithAdminToken(token)}
				if cred, err := zkCredential(zkAuth, "SECKILL_ZK_BACKEND", log); err != nil {
					_ = srv.Close()
					return err
				} else if cred != nil {
					zopts = append(zopts, discovery.WithCredential(cred))
				}
				zreg, err = discovery.StartRegistration(strings.Split(zkAddrs, ","), zkRoot, url, log, zopts...)
				if err != nil {
					_ = srv.Close()
					return fmt.Errorf("registering in zookeeper: %w", err)
				}
				log.Info("registering in zookeeper in the background", "url", url)
				defer zreg.Close()
			}

			select {
			case err := <-serveErr:
				return err
			case <-ctx.Done():
			}
			if zreg != nil {
				zreg.Close() // edges stop sending before the drain
			}
			log.Info("shutting down: readiness off, draining")
			h.Drain()
			time.Sleep(drainWait)
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				log.Warn("http shutdown", "err", err)
			}
			stopRelay()
			wg.Wait()
			log.Info("stopped")
			return nil
		},
	}
	fs := cmd.Flags()
	c.register(fs, getenv, "redis", "amqp", "pg")
	envFlag(fs, getenv, &listen, "listen", "SECKILL_BACKEND_LISTEN", "127.0.0.1:8090", "address of the backend API")
	envFlag(fs, getenv, &addrFile, "addr-file", "SECKILL_BACKEND_ADDR_FILE", "", "write the address actually listened on to this file (for --listen with port 0)")
	envFlag(fs, getenv, &instFile, "instance-file", "SECKILL_BACKEND_INSTANCE_FILE", "", "write this process's instance (the one /healthz names) to this file once listening")
	envFlag(fs, getenv, &token, "admin-token", "SECKILL_BACKEND_TOKEN", "", "Bearer token required on /v1/admin/* (none when empty)")
	envBool(fs, getenv, &relay, "relay", "SECKILL_RELAY", true, "run the outbox relay in this process")
	ro.register(fs, getenv, "relay-claim-idle")
	fs.DurationVar(&ro.claimIdle, "claim-idle", ro.claimIdle, "the same as --relay-claim-idle (the name seckill relay uses)")
	_ = fs.MarkHidden("claim-idle")
	envFlag(fs, getenv, &ro.redisURL, "relay-redis-url", "SECKILL_RELAY_REDIS_URL", "", "Redis URL of the relay's own traffic (default --redis-url; the same Redis, reached another way)")
	envFlag(fs, getenv, &zkAddrs, "zk", "SECKILL_ZK", "", "ZooKeeper servers (host:port,...) to register this backend with, so edges find it (none when empty)")
	envFlag(fs, getenv, &advertise, "advertise", "SECKILL_BACKEND_ADVERTISE", "", "URL or host:port edges reach this backend at (default the address listened on)")
	envFlag(fs, getenv, &zkRoot, "zk-root", "SECKILL_ZK_ROOT", "/seckill", "ZooKeeper folder of this deployment; backends register under ROOT/backends")
	envFlag(fs, getenv, &zkAuth, "zk-auth", "SECKILL_ZK_BACKEND", "", "the backends' ZooKeeper digest credential, user:password (docs/security-zookeeper.md)")
	envBool(fs, getenv, &guardOn, "redis-guard", "SECKILL_REDIS_GUARD", true, "freeze reservations whenever the Redis server restarted (run_id or NOSCRIPT) until items are re-seeded from PostgreSQL (docs/RELIABILITY.md, Stale Redis)")
	envDuration(fs, getenv, &settle, "redis-guard-settle", "SECKILL_REDIS_GUARD_SETTLE", time.Second, "during that recovery, how long the stored order count must stay unchanged (outboxes and queue empty) before re-seeding")
	envDuration(fs, getenv, &drainWait, "drain-wait", "SECKILL_DRAIN_WAIT", 0, "on shutdown, how long /readyz fails before the listener closes")
	return cmd
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
