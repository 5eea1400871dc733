package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"seckill/internal/app"
)

// relayFlags adds the relay flags; claimIdleFlag names the own-pending
// bound (claim-idle for `seckill relay`, relay-claim-idle for the backend).
func relayFlags(fs *pflag.FlagSet, getenv func(string) string, o *app.RelayOptions, claimIdleFlag string) {
	host, _ := os.Hostname()
	d := app.DefaultRelayOptions
	envFlag(fs, getenv, &o.ID, "relay-id", "SECKILL_RELAY_ID", "relay-"+host, "name of this relay; a restarted relay with the same name resumes its unconfirmed entries at once")
	envDuration(fs, getenv, &o.StealAfter, "relay-steal-after", "SECKILL_RELAY_STEAL_AFTER", d.StealAfter, "take over entries another relay has held unconfirmed this long")
	envDuration(fs, getenv, &o.ClaimIdle, claimIdleFlag, "SECKILL_RELAY_CLAIM_IDLE", d.ClaimIdle, "take back and publish again this relay's own pending entries untouched this long (a read whose reply was lost)")
}

func relayCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c   common
		cfg app.RelayConfig
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
			cfg.Stores = c.stores()
			if err := cfg.Validate(); err != nil {
				return explain(cmd.Flags(), err)
			}
			cfg.Log = startLog(stderr, "relay", c.LogLevel, cmd.Flags())
			return app.RunRelay(cmd.Context(), cfg)
		},
	}
	fs := cmd.Flags()
	c.register(fs, getenv, "redis", "amqp")
	relayFlags(fs, getenv, &cfg.Relay, "claim-idle")
	envFlag(fs, getenv, &cfg.MetricsListen, "metrics-listen", "SECKILL_RELAY_METRICS_LISTEN", "", "serve /metrics, /healthz and /readyz on this address (off when empty)")
	envFlag(fs, getenv, &cfg.AddrFile, "addr-file", "SECKILL_RELAY_ADDR_FILE", "", "write the address --metrics-listen actually listens on to this file (for port 0)")
	return cmd
}
