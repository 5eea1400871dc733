package main

import (
	"io"

	"github.com/spf13/cobra"

	"seckill/internal/app"
)

func workerCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c   common
		cfg = app.DefaultWorker
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
			cfg.Stores = c.stores()
			if err := cfg.Validate(); err != nil {
				return explain(cmd.Flags(), err)
			}
			cfg.Log = startLog(stderr, "worker", c.LogLevel, cmd.Flags())
			return app.RunWorker(cmd.Context(), cfg)
		},
	}
	fs := cmd.Flags()
	c.register(fs, getenv, "redis", "amqp", "pg")
	d := app.DefaultWorker
	envFlag(fs, getenv, &cfg.MetricsListen, "metrics-listen", "SECKILL_WORKER_METRICS_LISTEN", "", "serve /metrics, /healthz and /readyz on this address (off when empty)")
	envInt(fs, getenv, &cfg.Prefetch, "prefetch", "SECKILL_WORKER_PREFETCH", d.Prefetch, "RabbitMQ prefetch (unacked messages held at once)")
	envInt(fs, getenv, &cfg.Batch, "batch", "SECKILL_WORKER_BATCH", d.Batch, "largest insert batch (orders)")
	envDuration(fs, getenv, &cfg.Flush, "flush", "SECKILL_WORKER_FLUSH", d.Flush, "longest wait to fill a batch")
	envInt(fs, getenv, &cfg.DeliveryLimit, "delivery-limit", "SECKILL_DELIVERY_LIMIT", d.DeliveryLimit, "deliveries before a failing message is dead-lettered (quorum queue x-delivery-limit)")
	return cmd
}
