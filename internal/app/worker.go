package app

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"seckill/httpapi"
	"seckill/queue"
	"seckill/stock"
	"seckill/worker"
)

// WorkerConfig is the worker role: RabbitMQ to PostgreSQL.
type WorkerConfig struct {
	Stores
	MetricsListen string        // metrics-listen ("" = none)
	Prefetch      int           // prefetch
	Batch         int           // batch
	Flush         time.Duration // flush
	DeliveryLimit int           // delivery-limit
	Log           *slog.Logger
}

// DefaultWorker holds the built-in defaults of the worker's own settings.
var DefaultWorker = WorkerConfig{Prefetch: 500, Batch: 1024, Flush: 10 * time.Millisecond, DeliveryLimit: 5}

// Validate returns every problem of the configuration.
func (c WorkerConfig) Validate() error {
	var ps Problems
	c.Stores.validate(&ps, true, true, true)
	ps.listen("metrics-listen", c.MetricsListen, true)
	ps.positive("prefetch", c.Prefetch)
	ps.positive("batch", c.Batch)
	if c.Prefetch > 65535 {
		ps.add("prefetch", "%d is over RabbitMQ's bound of 65535", c.Prefetch)
	}
	ps.atLeast("flush", c.Flush, time.Millisecond)
	ps.positive("delivery-limit", c.DeliveryLimit)
	return ps.err()
}

// Worker is a running worker role.
type Worker struct {
	gr          *group
	cons        *queue.Consumer
	metricsAddr string
	log         *slog.Logger
}

// StartWorker builds the worker role and starts consuming.
func StartWorker(ctx context.Context, cfg WorkerConfig) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := orDefault(cfg.Log)
	gr := newGroup(ctx)
	w, err := startWorker(ctx, gr, cfg, log)
	if err != nil {
		return nil, gr.fail(err)
	}
	return w, nil
}

func startWorker(ctx context.Context, gr *group, cfg WorkerConfig, log *slog.Logger) (*Worker, error) {
	db, rdb, err := cfg.Stores.openDBAndRedis(ctx, gr)
	if err != nil {
		return nil, err
	}
	cons := queue.NewConsumer(queue.ConsumerConfig{
		URL: cfg.AMQPURL, Topology: queue.Topology{Queue: cfg.Queue, DeliveryLimit: cfg.DeliveryLimit},
		Prefetch: cfg.Prefetch, BatchSize: cfg.Batch, FlushInterval: cfg.Flush, Logger: log,
	}, worker.New(db, stock.New(rdb, cfg.RedisPrefix), log))
	w := &Worker{gr: gr, cons: cons, log: log}
	if cfg.MetricsListen != "" {
		reg := newRegistry()
		registerConsumerMetrics(reg, cons)
		ln, err := listen("metrics-listen", cfg.MetricsListen)
		if err != nil {
			return nil, err
		}
		w.metricsAddr = ln.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
			rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := db.Ping(rctx); err != nil {
				http.Error(w, "postgres: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			if err := rdb.Ping(rctx).Err(); err != nil {
				http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ready\n"))
		})
		srv := httpapi.NewServer(mux)
		gr.onShutdown(func() { shutdownServers(log, srv) })
		gr.serve("worker metrics", srv, ln)
		log.Info("metrics listening", "addr", w.metricsAddr)
	}
	gr.Go("consumer", func() error { return cons.Run(gr.ctx) })
	return w, nil
}

// MetricsAddr is the address of the metrics listener ("" when none).
func (w *Worker) MetricsAddr() string { return w.metricsAddr }

// Wait waits for the role to stop and for every goroutine and client.
func (w *Worker) Wait() error {
	err := w.gr.wait()
	s := w.cons.Stats()
	w.log.Info("stopped", "stored", s.Stored, "nacked", s.Nacked, "dead", s.Dead, "malformed", s.Malformed)
	return err
}

// RunWorker starts the worker role and waits for it.
func RunWorker(ctx context.Context, cfg WorkerConfig) error {
	w, err := StartWorker(ctx, cfg)
	if err != nil {
		return err
	}
	return w.Wait()
}

func registerConsumerMetrics(reg prometheus.Registerer, cons *queue.Consumer) {
	counter := func(name, help string, f func(queue.ConsumerStats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "seckill_worker", Name: name, Help: help,
		}, func() float64 { return float64(f(cons.Stats())) }))
	}
	counter("stored_total", "Order messages stored (or found already stored) and acked.", func(s queue.ConsumerStats) uint64 { return s.Stored })
	counter("nacked_total", "Order messages that failed to store and were requeued.", func(s queue.ConsumerStats) uint64 { return s.Nacked })
	counter("dead_lettered_total", "Dead-lettered order messages recorded as failed orders.", func(s queue.ConsumerStats) uint64 { return s.Dead })
	counter("malformed_total", "Order messages that could not be decoded.", func(s queue.ConsumerStats) uint64 { return s.Malformed })
	counter("republished_total", "Orders of a partly failed batch republished as single messages.", func(s queue.ConsumerStats) uint64 { return s.Republished })
}
