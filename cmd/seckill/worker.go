package main

import (
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
				srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
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
	envFlag(fs, getenv, &metricsListen, "metrics-listen", "SECKILL_WORKER_METRICS_LISTEN", "", "serve /metrics and /healthz on this address (off when empty)")
	fs.IntVar(&prefetch, "prefetch", 500, "RabbitMQ prefetch (unacked messages held at once)")
	fs.IntVar(&batch, "batch", 500, "largest insert batch")
	fs.DurationVar(&flush, "flush", 10*time.Millisecond, "longest wait to fill a batch")
	fs.IntVar(&deliveryLimit, "delivery-limit", 5, "deliveries before a failing message is dead-lettered (quorum queue x-delivery-limit)")
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
}
