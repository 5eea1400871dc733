package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"seckill/internal/app"
)

func devCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		cfg               = app.DefaultDev
		logLevel, trusted string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process on embedded stand-ins, with a demo sale",
		Long: `Run the edge, the backend and the order pipeline in one process, with nothing
installed but this binary: Redis is served in-process by miniredis (the same
Lua scripts and go-redis code run on it), the relay/RabbitMQ/worker path is an
in-process pipeline with the same guarantees, and users, items and orders live
in SQLite (in memory, or in --data FILE). The edge calls the backend in the
same process; the backend API also listens, for tools.

Each stand-in can be swapped for the real server: --redis-url, --amqp-url,
--pg-url. A demo sale starts a few seconds after start unless --no-demo.

The admin token and the session secret are generated unless given; with
--data FILE they are kept in FILE.secrets, so a restart keeps the token and
keeps users logged in. The limits are built in (configs/limits.yaml) unless
--limits names a file.`,
		Example: `  seckill dev
  seckill dev --data /tmp/seckill.db --admin-token s3cret --demo-stock 50
  seckill dev --redis-url redis://127.0.0.1:6379/0 --pg-url 'postgres://postgres@127.0.0.1:5432/seckill?sslmode=disable'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			began := time.Now()
			cfg.TrustedProxies = splitList(trusted)
			cfg.Log = newLogger(stderr, logLevel)
			if err := cfg.Validate(); err != nil {
				return explain(cmd.Flags(), err)
			}
			d, err := app.StartDev(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			tokenHint := "set your own with --admin-token or SECKILL_ADMIN_TOKEN"
			switch {
			case given(cmd.Flags(), "admin-token"):
				src := sourceOf(cmd.Flags(), "admin-token")
				if src == "" {
					src = "--admin-token"
				}
				tokenHint = "from " + src
			case d.SecretsFile != "":
				tokenHint = "kept in " + d.SecretsFile + "; " + tokenHint
			default:
				tokenHint = "new each start (--data keeps it); " + tokenHint
			}
			fmt.Fprintf(stdout, `seckill dev is running (ready in %d ms):
  storefront and public API  http://%s/   (API: docs/API.md)
  admin dashboard and API    http://%s/dashboard/   token: %s
                             (%s)
  backend API (internal)     http://%s/v1/items   token: %s
  stores                     %s
Press Ctrl-C to stop.
`, time.Since(began).Milliseconds(), d.PublicAddr(), d.AdminAddr(), d.AdminToken(), tokenHint, d.BackendAddr(), d.BackendToken(), d.Describe())
			return d.Wait()
		},
	}
	fs := cmd.Flags()
	d := app.DefaultDev
	envFlag(fs, getenv, &cfg.PublicListen, "public-listen", "SECKILL_PUBLIC_LISTEN", d.PublicListen, "address of the storefront and public API")
	envFlag(fs, getenv, &cfg.AdminListen, "admin-listen", "SECKILL_ADMIN_LISTEN", d.AdminListen, "address of the admin API")
	envFlag(fs, getenv, &cfg.BackendListen, "backend-listen", "SECKILL_BACKEND_LISTEN", d.BackendListen, "address of the internal backend API")
	envFlag(fs, getenv, &cfg.AddrFile, "addr-file", "SECKILL_DEV_ADDR_FILE", "", "write 'public=ADDR admin=ADDR backend=ADDR' to this file once listening")
	envFlag(fs, getenv, &cfg.BackendToken, "backend-token", "SECKILL_BACKEND_TOKEN", "", "internal credential of the backend API (generated at each start when empty; printed at start)")
	envFlag(fs, getenv, &cfg.AdminToken, "admin-token", "SECKILL_ADMIN_TOKEN", "", "admin API token (generated when empty, and kept beside --data; printed at start)")
	envFlag(fs, getenv, &cfg.SessionSecret, "session-secret", "SECKILL_SESSION_SECRET", "", "HMAC key of session tokens (generated when empty, and kept beside --data so restarts keep users logged in)")
	envFlag(fs, getenv, &cfg.DataFile, "data", "SECKILL_DATA", "", "SQLite file for users, items and orders (in memory when empty); generated secrets go to FILE.secrets")
	envFlag(fs, getenv, &cfg.LimitsFile, "limits", "SECKILL_LIMITS", "", "token bucket rules (YAML; the built-in configs/limits.yaml when empty)")
	envFlag(fs, getenv, &cfg.RedisURL, "redis-url", "SECKILL_REDIS_URL", "", "use this Redis instead of the in-process miniredis")
	envFlag(fs, getenv, &cfg.AMQPURL, "amqp-url", "SECKILL_AMQP_URL", "", "use this RabbitMQ (relay and worker) instead of the in-process pipeline")
	envFlag(fs, getenv, &cfg.PGURL, "pg-url", "SECKILL_PG_URL", "", "use this PostgreSQL instead of SQLite")
	envFlag(fs, getenv, &logLevel, "log-level", "SECKILL_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	envFlag(fs, getenv, &trusted, "trusted-proxies", "SECKILL_TRUSTED_PROXIES", "", "comma-separated CIDRs whose X-Forwarded-For is believed (the lab needs 127.0.0.1/32)")
	envBool(fs, getenv, &cfg.NoDemo, "no-demo", "SECKILL_NO_DEMO", false, "do not create the demo sale")
	envInt(fs, getenv, &cfg.DemoStock, "demo-stock", "SECKILL_DEMO_STOCK", d.DemoStock, "units of the demo sale")
	envDuration(fs, getenv, &cfg.DemoStart, "demo-start", "SECKILL_DEMO_START", d.DemoStart, "the demo sale starts this long after start")
	envInt(fs, getenv, &cfg.Difficulty, "difficulty", "SECKILL_DIFFICULTY", d.Difficulty, "proof-of-work difficulty in leading zero bits (0 to 32)")
	return cmd
}
