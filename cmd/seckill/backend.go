package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"seckill/backend"
	"seckill/discovery"
	"seckill/postgres"
	"seckill/queue"
	"seckill/stock"
)

func backendCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c          common
		listen     string
		addrFile   string
		token      string
		relay      bool
		relayID    string
		stealAfter time.Duration
		drainWait  time.Duration
		zkAddrs    string
		zkRoot     string
		advertise  string
	)
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "Run the purchase backend: reservation API and outbox relay",
		Long: `Run the purchase backend. It serves the backend API (docs/API.md) that the
edge calls, loads every item into Redis at start (never overwriting live
counters), and runs the relay that moves accepted orders from the Redis outbox
to RabbitMQ with publisher confirms.

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
				return err
			}
			log.Info("listening", "addr", addr)
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}

			var wg sync.WaitGroup
			relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
			defer stopRelay()
			if relay {
				r := queue.NewRelay(queue.RelayConfig{
					URL: c.AMQPURL, Topology: queue.Topology{Queue: c.Queue},
					Logger: log.With("component", "relay"),
				}, st.Outbox(relayID, stealAfter))
				registerRelayMetrics(reg, r)
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := r.Run(relayCtx); err != nil && !errors.Is(err, context.Canceled) {
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
				zreg, err = discovery.StartRegistration(strings.Split(zkAddrs, ","), zkRoot, url, log)
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
	envFlag(fs, getenv, &token, "admin-token", "SECKILL_BACKEND_TOKEN", "", "Bearer token required on /v1/admin/* (none when empty)")
	envBool(fs, getenv, &relay, "relay", "SECKILL_RELAY", true, "run the outbox relay in this process")
	envFlag(fs, getenv, &relayID, "relay-id", "SECKILL_RELAY_ID", "relay-"+host, "name of this relay; a restarted relay with the same name resumes its unconfirmed entries at once")
	envDuration(fs, getenv, &stealAfter, "relay-steal-after", "SECKILL_RELAY_STEAL_AFTER", 30*time.Second, "take over entries another relay has held unconfirmed this long")
	envFlag(fs, getenv, &zkAddrs, "zk", "SECKILL_ZK", "", "ZooKeeper servers (host:port,...) to register this backend with, so edges find it (none when empty)")
	envFlag(fs, getenv, &advertise, "advertise", "SECKILL_BACKEND_ADVERTISE", "", "URL or host:port edges reach this backend at (default the address listened on)")
	envFlag(fs, getenv, &zkRoot, "zk-root", "SECKILL_ZK_ROOT", "/seckill", "ZooKeeper folder of this deployment; backends register under ROOT/backends")
	envDuration(fs, getenv, &drainWait, "drain-wait", "SECKILL_DRAIN_WAIT", 0, "on shutdown, how long /readyz fails before the listener closes")
	return cmd
}

func registerRelayMetrics(reg prometheus.Registerer, r *queue.Relay) {
	counter := func(name, help string, f func(queue.RelayStats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "seckill_relay", Name: name, Help: help,
		}, func() float64 { return float64(f(r.Stats())) }))
	}
	counter("published_total", "Orders published to RabbitMQ (republishes included; many per message).", func(s queue.RelayStats) uint64 { return s.Published })
	counter("messages_total", "RabbitMQ messages published (each carries up to 256 orders).", func(s queue.RelayStats) uint64 { return s.Messages })
	counter("confirmed_total", "Orders confirmed by RabbitMQ and removed from the outbox.", func(s queue.RelayStats) uint64 { return s.Confirmed })
	counter("returned_total", "Orders returned unroutable, to be republished.", func(s queue.RelayStats) uint64 { return s.Returned })
	counter("nacked_total", "Orders nacked by RabbitMQ or lost with a channel, to be republished.", func(s queue.RelayStats) uint64 { return s.Nacked })
	counter("reconnects_total", "Connections to RabbitMQ opened after the first.", func(s queue.RelayStats) uint64 { return s.Reconnects })
}
