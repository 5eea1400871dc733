package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"seckill/httpapi"
	"seckill/queue"
	"seckill/stock"
)

// relayOptions are the settings of an outbox relay, shared by `seckill
// relay` and the relay embedded in `seckill backend`.
type relayOptions struct {
	id         string
	stealAfter time.Duration
	claimIdle  time.Duration
	redisURL   string // the relay's own Redis URL ("" = the common one)
}

// register adds the relay flags; claimIdleFlag names the own-pending bound
// (claim-idle for `seckill relay`, relay-claim-idle for the backend).
func (o *relayOptions) register(fs *pflag.FlagSet, getenv func(string) string, claimIdleFlag string) {
	host, _ := os.Hostname()
	envFlag(fs, getenv, &o.id, "relay-id", "SECKILL_RELAY_ID", "relay-"+host, "name of this relay; a restarted relay with the same name resumes its unconfirmed entries at once")
	envDuration(fs, getenv, &o.stealAfter, "relay-steal-after", "SECKILL_RELAY_STEAL_AFTER", 30*time.Second, "take over entries another relay has held unconfirmed this long")
	envDuration(fs, getenv, &o.claimIdle, claimIdleFlag, "SECKILL_RELAY_CLAIM_IDLE", 5*time.Second, "take back and publish again this relay's own pending entries untouched this long (a read whose reply was lost)")
}

// relayParts are a relay and what it runs on.
type relayParts struct {
	relay  *queue.Relay
	outbox *stock.Outbox
	close  func()
}

// newRelay builds a relay on the outbox under prefix. rdb is the Redis
// client to use for everything but the commands a retry would spoil; when
// nil (or when o.redisURL is set) the relay gets a client of its own.
func newRelay(c common, o relayOptions, rdb redis.UniversalClient, log *slog.Logger) (*relayParts, error) {
	url := c.RedisURL
	var closers []func()
	if o.redisURL != "" {
		url = o.redisURL
		rdb = nil
	}
	if rdb == nil {
		rc := c
		rc.RedisURL = url
		cl, err := rc.redisClient()
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() { _ = cl.Close() })
		rdb = cl
	}
	reads, err := noRetryRedisClient(url, 4)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = reads.Close() })
	ob := stock.New(rdb, c.RedisPrefix).RelayOutbox(o.id, stock.OutboxOptions{
		StealAfter: o.stealAfter, ClaimIdle: o.claimIdle, Reads: reads,
	})
	r := queue.NewRelay(queue.RelayConfig{
		URL: c.AMQPURL, Topology: queue.Topology{Queue: c.Queue},
		// Held entries are refreshed well before ClaimIdle: only an entry
		// the relay does not hold goes idle that long.
		HoldRefresh: max(o.claimIdle/3, 100*time.Millisecond),
		Logger:      log.With("component", "relay", "relay_id", o.id),
	}, ob)
	return &relayParts{relay: r, outbox: ob, close: func() {
		for _, f := range closers {
			f()
		}
	}}, nil
}

func relayCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c             common
		o             relayOptions
		metricsListen string
		addrFile      string
	)
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Run the outbox relay alone: Redis outbox to RabbitMQ with publisher confirms",
		Long: `Run the outbox relay as its own process (seckill backend --relay=false then
serves reservations without one). It reads accepted orders from the Redis
outbox streams, publishes them to RabbitMQ with publisher confirms, and
removes an entry only after RabbitMQ confirmed it.

It never strands an entry: what a failed read returned is published; every
few seconds it takes back its own pending entries untouched for --claim-idle
(a read whose reply was lost) and entries another relay has held for
--relay-steal-after, and publishes them again (the worker stores an order
ref once). Every second it writes the heartbeat PREFIXrelay:alive:RELAY-ID,
which seckill reconcile reads.

--metrics-listen serves /metrics, /healthz (the process runs) and /readyz
(Redis answers and a RabbitMQ channel is open).`,
		Example: `  seckill relay --relay-id relay-a --redis-url redis://127.0.0.1:6379/0 \
    --amqp-url amqp://guest:guest@127.0.0.1:5672/ --metrics-listen 127.0.0.1:9092`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(stderr, c.LogLevel).With("component", "relay")
			printConfig(stderr, "relay", cmd.Flags())
			ctx := cmd.Context()
			parts, err := newRelay(c, o, nil, log)
			if err != nil {
				return err
			}
			defer parts.close()
			if metricsListen != "" {
				reg := prometheus.NewRegistry()
				reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
				registerRelayMetrics(reg, parts.relay, parts.outbox)
				ln, err := net.Listen("tcp", metricsListen)
				if err != nil {
					return fmt.Errorf("listening on %s: %w", metricsListen, err)
				}
				if err := writeAddrFile(addrFile, ln.Addr().String()); err != nil {
					return err
				}
				srv := httpapi.NewServer(relayMux(reg, parts))
				go func() { _ = srv.Serve(ln) }()
				defer srv.Close()
				log.Info("metrics listening", "addr", ln.Addr().String())
			}
			err = parts.relay.Run(ctx)
			if errors.Is(err, context.Canceled) {
				err = nil
			}
			s := parts.relay.Stats()
			log.Info("stopped", "published", s.Published, "confirmed", s.Confirmed, "reclaimed", parts.outbox.Stats().Reclaimed)
			return err
		},
	}
	fs := cmd.Flags()
	c.register(fs, getenv, "redis", "amqp")
	o.register(fs, getenv, "claim-idle")
	envFlag(fs, getenv, &metricsListen, "metrics-listen", "SECKILL_RELAY_METRICS_LISTEN", "", "serve /metrics, /healthz and /readyz on this address (off when empty)")
	envFlag(fs, getenv, &addrFile, "addr-file", "SECKILL_RELAY_ADDR_FILE", "", "write the address --metrics-listen actually listens on to this file (for port 0)")
	return cmd
}

func relayMux(reg *prometheus.Registry, parts *relayParts) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		_, rerr := parts.outbox.Ping(rctx)
		amqpOK := parts.relay.Connected()
		w.Header().Set("Content-Type", "application/json")
		if rerr != nil || !amqpOK {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		body := map[string]any{"redis": rerr == nil, "amqp": amqpOK}
		if rerr != nil {
			body["redis_error"] = rerr.Error()
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	return mux
}

func registerRelayMetrics(reg prometheus.Registerer, r *queue.Relay, ob *stock.Outbox) {
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
	counter("claim_errors_total", "Outbox reads that failed (what they returned is published).", func(s queue.RelayStats) uint64 { return s.ClaimErrors })
	counter("done_errors_total", "Failed removals of confirmed entries from the outbox (retried).", func(s queue.RelayStats) uint64 { return s.DoneErrors })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "seckill_relay", Name: "connected", Help: "1 while the relay holds an open RabbitMQ channel.",
	}, func() float64 {
		if r.Connected() {
			return 1
		}
		return 0
	}))
	if ob == nil {
		return
	}
	obCounter := func(name, help string, f func(stock.OutboxStats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "seckill_relay", Name: name, Help: help,
		}, func() float64 { return float64(f(ob.Stats())) }))
	}
	obCounter("reclaimed_total", "This relay's own pending entries taken back after --claim-idle and published again.", func(s stock.OutboxStats) uint64 { return s.Reclaimed })
	obCounter("stolen_total", "Entries taken over from another relay after --relay-steal-after.", func(s stock.OutboxStats) uint64 { return s.Stolen })
	gauge := func(name, help string, f func(stock.OutboxAges) time.Duration) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "seckill_relay", Name: name, Help: help,
		}, func() float64 { return f(ob.Ages()).Seconds() }))
	}
	gauge("oldest_pending_seconds", "Age of the oldest outbox entry handed to a relay and not yet confirmed (0 when none).", func(a stock.OutboxAges) time.Duration { return a.OldestPending })
	gauge("oldest_unread_seconds", "Age of the oldest outbox entry no relay has read yet (0 when none).", func(a stock.OutboxAges) time.Duration { return a.OldestUnread })
}
