package app

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"seckill/httpapi"
	"seckill/queue"
	"seckill/stock"
)

// RelayOptions are the settings of an outbox relay, shared by the relay
// role and the relay embedded in the backend.
type RelayOptions struct {
	ID         string        // relay-id
	StealAfter time.Duration // relay-steal-after
	ClaimIdle  time.Duration // claim-idle (relay) / relay-claim-idle (backend)
	RedisURL   string        // relay-redis-url: the relay's own Redis URL ("" = Stores.RedisURL)
}

// DefaultRelayOptions are the built-in defaults (ID: "relay-" + host name).
var DefaultRelayOptions = RelayOptions{StealAfter: 30 * time.Second, ClaimIdle: 5 * time.Second}

func (o RelayOptions) validate(ps *Problems, claimIdleSetting string) {
	if o.ID == "" {
		ps.add("relay-id", "must not be empty: a restarted relay resumes its entries by this name")
	}
	ps.atLeast("relay-steal-after", o.StealAfter, 100*time.Millisecond)
	ps.atLeast(claimIdleSetting, o.ClaimIdle, 100*time.Millisecond)
	if o.RedisURL != "" {
		if _, err := redis.ParseURL(o.RedisURL); err != nil {
			ps.add("relay-redis-url", "%q is not a Redis URL (%v)", MaskURL(o.RedisURL), err)
		}
	}
}

// relayParts are a relay and what it runs on.
type relayParts struct {
	relay  *queue.Relay
	outbox *stock.Outbox
}

// newRelay builds a relay on the outbox under the prefix. rdb is the Redis
// client for everything but the commands a retry would spoil; when nil (or
// when o.RedisURL is set) the relay gets a client of its own. Its clients
// are closed by gr.
func newRelay(gr *group, s Stores, o RelayOptions, rdb redis.UniversalClient, log *slog.Logger) (*relayParts, error) {
	url := s.RedisURL
	if o.RedisURL != "" {
		url = o.RedisURL
		rdb = nil
	}
	if rdb == nil {
		cl, err := RedisClient(url)
		if err != nil {
			return nil, err
		}
		gr.onClose(func() { _ = cl.Close() })
		rdb = cl
	}
	reads, err := NoRetryRedisClient(url, 4)
	if err != nil {
		return nil, err
	}
	gr.onClose(func() { _ = reads.Close() })
	ob := stock.New(rdb, s.RedisPrefix).RelayOutbox(o.ID, stock.OutboxOptions{
		StealAfter: o.StealAfter, ClaimIdle: o.ClaimIdle, Reads: reads,
	})
	r := queue.NewRelay(queue.RelayConfig{
		URL: s.AMQPURL, Topology: queue.Topology{Queue: s.Queue},
		// Held entries are refreshed well before ClaimIdle: only an entry
		// the relay does not hold goes idle that long.
		HoldRefresh: max(o.ClaimIdle/3, 100*time.Millisecond),
		Logger:      log.With("component", "relay", "relay_id", o.ID),
	}, ob)
	return &relayParts{relay: r, outbox: ob}, nil
}

// RelayConfig is the relay role: the outbox relay as its own process.
type RelayConfig struct {
	Stores
	Relay         RelayOptions
	MetricsListen string // metrics-listen: /metrics, /healthz, /readyz ("" = none)
	AddrFile      string // addr-file: where the metrics address is written
	Log           *slog.Logger
}

// Validate returns every problem of the configuration.
func (c RelayConfig) Validate() error {
	var ps Problems
	c.Stores.validate(&ps, true, true, false)
	c.Relay.validate(&ps, "claim-idle")
	ps.listen("metrics-listen", c.MetricsListen, true)
	return ps.err()
}

// Relay is a running relay role.
type Relay struct {
	gr          *group
	parts       *relayParts
	metricsAddr string
	log         *slog.Logger
}

// StartRelay builds and starts the relay role.
func StartRelay(ctx context.Context, cfg RelayConfig) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := orDefault(cfg.Log)
	gr := newGroup(ctx)
	parts, err := newRelay(gr, cfg.Stores, cfg.Relay, nil, log)
	if err != nil {
		return nil, gr.fail(err)
	}
	r := &Relay{gr: gr, parts: parts, log: log}
	if cfg.MetricsListen != "" {
		reg := newRegistry()
		registerRelayMetrics(reg, parts.relay, parts.outbox)
		ln, err := listen("metrics-listen", cfg.MetricsListen)
		if err != nil {
			return nil, gr.fail(err)
		}
		r.metricsAddr = ln.Addr().String()
		if err := WriteAddrFile(cfg.AddrFile, r.metricsAddr); err != nil {
			ln.Close()
			return nil, gr.fail(err)
		}
		srv := httpapi.NewServer(relayMux(reg, parts))
		gr.onShutdown(func() { shutdownServers(log, srv) })
		gr.serve("relay metrics", srv, ln)
		log.Info("metrics listening", "addr", r.metricsAddr)
	}
	gr.Go("relay", func() error { return parts.relay.Run(gr.ctx) })
	return r, nil
}

// MetricsAddr is the address of the metrics listener ("" when none).
func (r *Relay) MetricsAddr() string { return r.metricsAddr }

// Wait waits for the role to stop (its context ended, or a part failed)
// and for every goroutine and client it had.
func (r *Relay) Wait() error {
	err := r.gr.wait()
	s := r.parts.relay.Stats()
	r.log.Info("stopped", "published", s.Published, "confirmed", s.Confirmed, "reclaimed", r.parts.outbox.Stats().Reclaimed)
	return err
}

// RunRelay starts the relay role and waits for it.
func RunRelay(ctx context.Context, cfg RelayConfig) error {
	r, err := StartRelay(ctx, cfg)
	if err != nil {
		return err
	}
	return r.Wait()
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
