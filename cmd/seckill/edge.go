package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"seckill/internal/app"
)

func edgeCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c                       common
		cfg                     = app.DefaultEdge
		backendURL, zk, trusted string
		origins                 string
	)
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run the protective edge: the public API and storefront, and the admin API",
		Long: `Run the edge. Shoppers and every client talk only to it; it talks to the
backend. Cheapest check first: client identity, token buckets, session, known
item, sold-out marker, hidden path, Bloom dedup, load shedding, circuit
breaker; then the backend.

The public API listens on --public-listen, the admin API (/admin/*, /metrics,
/healthz, /readyz) on --admin-listen. Limits come from --limits (YAML; the
built-in configs/limits.yaml when empty).

The admin token, the session secret and the backend token must be at least
32 bytes and not a published example: make each with openssl rand -hex 32.`,
		Example: `  SECKILL_ADMIN_TOKEN=$(openssl rand -hex 32) SECKILL_SESSION_SECRET=$(openssl rand -hex 32) \
    seckill edge --backend-url http://127.0.0.1:8090 --limits configs/limits.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			cfg.Stores = c.stores()
			cfg.BackendURLs, cfg.BackendURLsSet = splitList(backendURL), given(fs, "backend-url")
			cfg.ZK, cfg.TrustedProxies = splitList(zk), splitList(trusted)
			cfg.TrustedOrigins = splitList(origins)
			if err := cfg.Validate(); err != nil {
				return explain(fs, err)
			}
			cfg.Log = startLog(stderr, "edge", c.LogLevel, fs)
			return app.RunEdge(cmd.Context(), cfg)
		},
	}
	fs := cmd.Flags()
	d := app.DefaultEdge
	c.register(fs, getenv, "redis")
	envFlag(fs, getenv, &cfg.PublicListen, "public-listen", "SECKILL_PUBLIC_LISTEN", d.PublicListen, "address of the public API and storefront")
	envFlag(fs, getenv, &cfg.AdminListen, "admin-listen", "SECKILL_ADMIN_LISTEN", d.AdminListen, "address of the admin API, /metrics, /healthz, /readyz (keep it on loopback or a private network)")
	envFlag(fs, getenv, &cfg.AddrFile, "addr-file", "SECKILL_EDGE_ADDR_FILE", "", "write 'public=ADDR admin=ADDR' to this file once listening (for port 0)")
	envFlag(fs, getenv, &cfg.InstanceFile, "instance-file", "SECKILL_EDGE_INSTANCE_FILE", "", "write this process's instance (the one /healthz names) to this file once listening")
	envFlag(fs, getenv, &backendURL, "backend-url", "SECKILL_BACKEND_URL", "http://127.0.0.1:8090", "base URL(s) of the backend API, comma-separated (with --zk: also used until ZooKeeper answers, when set)")
	envFlag(fs, getenv, &zk, "zk", "SECKILL_ZK", "", "ZooKeeper servers (comma-separated): find the backends there instead of --backend-url")
	envFlag(fs, getenv, &cfg.ZKRoot, "zk-root", "SECKILL_ZK_ROOT", d.ZKRoot, "root of seckill's nodes in ZooKeeper")
	envFlag(fs, getenv, &cfg.ZKAuth, "zk-auth", "SECKILL_ZK_EDGE", "", "the edges' ZooKeeper digest credential, user:password (docs/security-zookeeper.md)")
	envFlag(fs, getenv, &cfg.ConfigPublicKeys, "config-public-keys", "SECKILL_CONFIG_PUBLIC_KEYS", "", "Ed25519 public keys (base64, comma-separated: old,new while rotating) that pushed configurations must be signed with (seckill config keygen)")
	envBool(fs, getenv, &cfg.BackendsFromZK, "backends-from-zk", "SECKILL_BACKENDS_FROM_ZK", d.BackendsFromZK, "with --zk: find the backends in ZooKeeper (else use --backend-url)")
	host, _ := os.Hostname()
	envFlag(fs, getenv, &cfg.EdgeID, "edge-id", "SECKILL_EDGE_ID", fmt.Sprintf("%s-%d", host, os.Getpid()), "name of this edge in ZooKeeper (/seckill/edges/ID)")
	envFlag(fs, getenv, &cfg.ConfigCache, "config-cache", "SECKILL_CONFIG_CACHE", "", "last good pushed configuration, used when ZooKeeper is away at start (default: in the temp folder)")
	envFlag(fs, getenv, &cfg.BackendsCache, "backends-cache", "SECKILL_BACKENDS_CACHE", "", "last backend list read from ZooKeeper, used when ZooKeeper is away at start (default: in the temp folder, named by --edge-id)")
	envFlag(fs, getenv, &cfg.BackendToken, "backend-token", "SECKILL_BACKEND_TOKEN", "", "internal credential sent to the backends on every call (required; the backends' --backend-token; at least 32 bytes)")
	envFlag(fs, getenv, &cfg.AdminToken, "admin-token", "SECKILL_ADMIN_TOKEN", "", "Bearer token of the admin API (required; at least 32 bytes: openssl rand -hex 32)")
	envFlag(fs, getenv, &cfg.SessionSecret, "session-secret", "SECKILL_SESSION_SECRET", "", "HMAC key of session tokens; the same on every edge (random when empty; else at least 32 bytes)")
	envFlag(fs, getenv, &cfg.LimitsFile, "limits", "SECKILL_LIMITS", "", "token bucket rules (YAML; the built-in configs/limits.yaml when empty)")
	envFlag(fs, getenv, &trusted, "trusted-proxies", "SECKILL_TRUSTED_PROXIES", "", "comma-separated CIDRs whose X-Forwarded-For is believed")
	envInt(fs, getenv, &cfg.Difficulty, "difficulty", "SECKILL_DIFFICULTY", d.Difficulty, "proof-of-work difficulty in leading zero bits (0 to 32)")
	envInt(fs, getenv, &cfg.DifficultyUnderLoad, "difficulty-under-load", "SECKILL_DIFFICULTY_UNDER_LOAD", d.DifficultyUnderLoad, "bits added while the backend is busy")
	envInt(fs, getenv, &cfg.MaxInFlight, "max-in-flight", "SECKILL_MAX_IN_FLIGHT", d.MaxInFlight, "bound on backend calls in flight; over it 503 overloaded")
	envInt(fs, getenv, &cfg.BreakerFailures, "breaker-failures", "SECKILL_BREAKER_FAILURES", d.BreakerFailures, "consecutive backend failures that open the breaker")
	envDuration(fs, getenv, &cfg.BreakerOpen, "breaker-open", "SECKILL_BREAKER_OPEN", d.BreakerOpen, "how long the breaker stays open before probing")
	envDuration(fs, getenv, &cfg.SessionTTL, "session-ttl", "SECKILL_SESSION_TTL", d.SessionTTL, "session lifetime")
	envDuration(fs, getenv, &cfg.ChallengeTTL, "challenge-ttl", "SECKILL_CHALLENGE_TTL", d.ChallengeTTL, "challenge lifetime")
	envDuration(fs, getenv, &cfg.PathTTL, "path-ttl", "SECKILL_PATH_TTL", d.PathTTL, "hidden path lifetime")
	envDuration(fs, getenv, &cfg.CatalogTTL, "catalog-ttl", "SECKILL_CATALOG_TTL", d.CatalogTTL, "how long a catalogue copy is fresh; an older one is served while one refresh runs in the background")
	envDuration(fs, getenv, &cfg.DrainWait, "drain-wait", "SECKILL_DRAIN_WAIT", 0, "on shutdown, how long /readyz fails before the listeners close")
	envInt(fs, getenv, &cfg.LimitMaxKeys, "limit-max-keys", "SECKILL_LIMIT_MAX_KEYS", d.LimitMaxKeys, "most token buckets one rule keeps (bounds memory: about 120 bytes each)")
	envDuration(fs, getenv, &cfg.LimitSweep, "limit-sweep", "SECKILL_LIMIT_SWEEP", d.LimitSweep, "how often buckets that refilled are evicted")
	fs.DurationVar(&cfg.ClockOffset, "clock-offset", 0, "test only: shift the clock the edge judges sale windows by (make chaos's clock-skew row)")
	_ = fs.MarkHidden("clock-offset")
	envBool(fs, getenv, &cfg.SecureCookie, "secure-cookie", "SECKILL_SECURE_COOKIE", d.SecureCookie, "mark the session cookie Secure (sent over HTTPS only; browsers also send it to http://localhost); --secure-cookie=false for plain HTTP elsewhere")
	envFlag(fs, getenv, &origins, "trusted-origins", "SECKILL_TRUSTED_ORIGINS", "", "comma-separated origins (https://shop.example) besides the edge's own whose pages may POST to the public API")
	envFlag(fs, getenv, &cfg.PreviousSessionSecret, "session-secret-previous", "SECKILL_SESSION_SECRET_PREVIOUS", "", "the session secret before a rotation: its tokens stay valid for --session-key-overlap")
	envDuration(fs, getenv, &cfg.SessionKeyOverlap, "session-key-overlap", "SECKILL_SESSION_KEY_OVERLAP", 0, "how long after start tokens of --session-secret-previous stay valid (0: --session-ttl)")
	envDuration(fs, getenv, &cfg.RevocationSync, "revocation-sync", "SECKILL_REVOCATION_SYNC", d.RevocationSync, "how often the edge checks Redis for session revocations its subscription missed")
	envInt(fs, getenv, &cfg.AccountsInFlight, "accounts-in-flight", "SECKILL_ACCOUNTS_IN_FLIGHT", d.AccountsInFlight, "bound on login and register calls in flight (apart from purchases); over it 503 overloaded")
	envInt(fs, getenv, &cfg.CaptchaRate, "captcha-rate", "SECKILL_CAPTCHA_RATE", d.CaptchaRate, "captcha images this edge draws per second at most (about 5 ms of CPU each); over it 503 overloaded")
	envDuration(fs, getenv, &cfg.QueueGrace, "queue-grace", "SECKILL_QUEUE_GRACE", d.QueueGrace, "waiting rooms: how long an expired admission keeps its slot (longer than a backend call; the same on every edge)")
	envDuration(fs, getenv, &cfg.QueueViewStale, "queue-view-stale", "SECKILL_QUEUE_VIEW_STALE", d.QueueViewStale, "waiting rooms: how old this edge's view of a queue may be and still answer polls while Redis is slow or unreachable")
	envInt(fs, getenv, &cfg.QueuePollRate, "queue-poll-rate", "SECKILL_QUEUE_POLL_RATE", d.QueuePollRate, "waiting rooms: polls per second the whole queue of a sale is spread to (poll_after grows with its length)")
	return cmd
}
