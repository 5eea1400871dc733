package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"seckill/backend"
	"seckill/internal/app"
)

func backendCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c   common
		cfg app.BackendConfig
		zk  string
		// hashProcess: password hashing in a child process at the
		// lowest CPU priority (issue 13 M5).
		hashProcess bool
	)
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "Run the purchase backend: reservation API and outbox relay",
		Long: `Run the purchase backend. It serves the backend API (docs/BACKEND_API.md) that the
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
			cfg.Stores = c.stores()
			cfg.ZK = splitList(zk)
			if err := cfg.Validate(); err != nil {
				return explain(cmd.Flags(), err)
			}
			cfg.Log = startLog(stderr, "backend", c.LogLevel, cmd.Flags())
			if hashProcess {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("finding this program for the hashing process: %w", err)
				}
				cfg.HasherCommand = []string{exe, "hasher"}
			}
			return app.RunBackend(cmd.Context(), cfg)
		},
	}
	fs := cmd.Flags()
	c.register(fs, getenv, "redis", "amqp", "pg")
	cfg.Relay = app.DefaultRelayOptions
	envFlag(fs, getenv, &cfg.Listen, "listen", "SECKILL_BACKEND_LISTEN", "127.0.0.1:8090", "address of the backend API")
	envFlag(fs, getenv, &cfg.AddrFile, "addr-file", "SECKILL_BACKEND_ADDR_FILE", "", "write the address actually listened on to this file (for --listen with port 0)")
	envFlag(fs, getenv, &cfg.InstanceFile, "instance-file", "SECKILL_BACKEND_INSTANCE_FILE", "", "write this process's instance (the one /healthz names) to this file once listening")
	envFlag(fs, getenv, &cfg.Token, "backend-token", "SECKILL_BACKEND_TOKEN", "", "internal credential (required): the Bearer token every route but /healthz, /readyz and /metrics requires; the edges send it; at least 32 bytes: openssl rand -hex 32")
	envBool(fs, getenv, &cfg.RunRelay, "relay", "SECKILL_RELAY", true, "run the outbox relay in this process")
	relayFlags(fs, getenv, &cfg.Relay, "relay-claim-idle")
	// Old names: --admin-token (before every route required the
	// credential) and --claim-idle (the name seckill relay uses).
	aliasFlags(fs, map[string]string{"admin-token": "backend-token", "claim-idle": "relay-claim-idle"})
	envFlag(fs, getenv, &cfg.Relay.RedisURL, "relay-redis-url", "SECKILL_RELAY_REDIS_URL", "", "Redis URL of the relay's own traffic (default --redis-url; the same Redis, reached another way)")
	envFlag(fs, getenv, &zk, "zk", "SECKILL_ZK", "", "ZooKeeper servers (host:port,...) to register this backend with, so edges find it (none when empty)")
	envFlag(fs, getenv, &cfg.Advertise, "advertise", "SECKILL_BACKEND_ADVERTISE", "", "URL or host:port edges reach this backend at (default the address listened on)")
	envFlag(fs, getenv, &cfg.ZKRoot, "zk-root", "SECKILL_ZK_ROOT", "/seckill", "ZooKeeper folder of this deployment; backends register under ROOT/backends")
	envFlag(fs, getenv, &cfg.ZKAuth, "zk-auth", "SECKILL_ZK_BACKEND", "", "the backends' ZooKeeper digest credential, user:password (docs/security-zookeeper.md)")
	envBool(fs, getenv, &cfg.RedisGuard, "redis-guard", "SECKILL_REDIS_GUARD", true, "freeze reservations whenever the Redis server restarted (run_id or NOSCRIPT) until items are re-seeded from PostgreSQL (docs/RELIABILITY.md, Stale Redis)")
	envDuration(fs, getenv, &cfg.GuardSettle, "redis-guard-settle", "SECKILL_REDIS_GUARD_SETTLE", time.Second, "during that recovery, how long the stored order count must stay unchanged (outboxes and queue empty) before re-seeding")
	envBool(fs, getenv, &hashProcess, "hash-process", "SECKILL_HASH_PROCESS", true, "hash passwords in a child process (seckill hasher) at the lowest CPU priority, so a login flood slows logins rather than purchases (docs/security-edge.md)")
	envDuration(fs, getenv, &cfg.DrainWait, "drain-wait", "SECKILL_DRAIN_WAIT", 0, "on shutdown, how long /readyz fails before the listener closes")
	return cmd
}

// hasherCmd is the password hashing process the backend starts (hidden:
// not for people to run).
func hasherCmd(stdin io.Reader, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "hasher",
		Short:  "Hash passwords for the backend (started by seckill backend)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE:   func(*cobra.Command, []string) error { return backend.ServeHasher(stdin, stdout) },
	}
}
