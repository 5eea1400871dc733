package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"seckill/httpapi"
	"seckill/postgres"
	"seckill/queue"
	"seckill/stock"
	"seckill/worker"
)

func workerCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c             common
		metricsListen string
		prefetch      int
		batch         int
		flush         time.Duration
		deliveryLimit int
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Store orders from RabbitMQ in PostgreSQL",
		Long: `Run the worker. It consumes the order queue with manual acks, inserts orders in
batches (ON CONFLICT DO NOTHING, so a redelivered order is stored once),
commits, and only then acks. A message that keeps failing is dead-lettered
after --delivery-limit deliveries; the worker records it as a failed order and
gives its unit back to stock in Redis.`,
		Example: `  seckill worker --amqp-url amqp://guest:guest@127.0.0.1:5672/ \
    --pg-url 'postgres://postgres@127.0.0.1:5432/seckill?sslmode=disable' --metrics-listen 127.0.0.1:9091`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(stderr, c.LogLevel).With("component", "worker")
			printConfig(stderr, "worker", cmd.Flags())
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
			w := worker.New(db, stock.New(rdb, c.RedisPrefix), log)
			cons := queue.NewConsumer(queue.ConsumerConfig{
				URL: c.AMQPURL, Topology: queue.Topology{Queue: c.Queue, DeliveryLimit: deliveryLimit},
				Prefetch: prefetch, BatchSize: batch, FlushInterval: flush, Logger: log,
			}, w)
			if metricsListen != "" {
				reg := prometheus.NewRegistry()
				reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
				registerConsumerMetrics(reg, cons)
				ln, err := net.Listen("tcp", metricsListen)
				if err != nil {
					return fmt.Errorf("listening on %s: %w", metricsListen, err)
				}
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
				go func() { _ = srv.Serve(ln) }()
				defer srv.Close()
				log.Info("metrics listening", "addr", ln.Addr().String())
			}
			err = cons.Run(ctx)
			if errors.Is(err, ctx.Err()) {
				err = nil
			}
			s := cons.Stats()
			log.Info("stopped", "stored", s.Stored, "nacked", s.Nacked, "dead", s.Dead, "malformed", s.Malformed)
			return err
		},
	}
	fs := cmd.Flags()
	c.register(fs, getenv, "redis", "amqp", "pg")
	envFlag(fs, getenv, &metricsListen, "metrics-listen", "SECKILL_WORKER_METRICS_LISTEN", "", "serve /metrics, /healthz and /readyz on this address (off when empty)")
	envInt(fs, getenv, &prefetch, "prefetch", "SECKILL_WORKER_PREFETCH", 500, "RabbitMQ prefetch (unacked messages held at once)")
	envInt(fs, getenv, &batch, "batch", "SECKILL_WORKER_BATCH", 1024, "largest insert batch (orders)")
	envDuration(fs, getenv, &flush, "flush", "SECKILL_WORKER_FLUSH", 10*time.Millisecond, "longest wait to fill a batch")
	envInt(fs, getenv, &deliveryLimit, "delivery-limit", "SECKILL_DELIVERY_LIMIT", 5, "deliveries before a failing message is dead-lettered (quorum queue x-delivery-limit)")
	return cmd
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
