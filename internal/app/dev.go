package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/backend"
	"seckill/httpapi"
	"seckill/inproc"
	"seckill/internal/redisconf"
	"seckill/postgres"
	"seckill/queue"
	"seckill/reconcile"
	"seckill/sqlite"
	"seckill/stock"
	"seckill/worker"
)

// DevConfig is `seckill dev`: edge, backend and order pipeline in one
// process, on embedded stand-ins (miniredis, SQLite, an in-process
// pipeline) unless a real server is named. The edge calls the backend
// service in process; the backend API also listens (BackendListen) for
// tools and tests.
type DevConfig struct {
	PublicListen, AdminListen, BackendListen string
	AddrFile                                 string
	// AdminToken and SessionSecret: "" = generated; with DataFile, kept in
	// DataFile + ".secrets" so a restart keeps them (and users logged in).
	AdminToken, SessionSecret string
	DataFile                  string // SQLite file ("" = in memory)
	LimitsFile                string // "" = the built-in limits
	RedisURL, AMQPURL, PGURL  string // "" = the stand-in
	BackendToken              string // internal credential of the backend API ("" = generated at each start)
	TrustedProxies            []string
	NoDemo                    bool
	DemoStock                 int
	DemoStart                 time.Duration
	Difficulty                int
	Log                       *slog.Logger
}

// DefaultDev holds the built-in defaults of `seckill dev`.
var DefaultDev = DevConfig{
	PublicListen: "127.0.0.1:8080", AdminListen: "127.0.0.1:8081", BackendListen: "127.0.0.1:0",
	DemoStock: 20, DemoStart: 10 * time.Second, Difficulty: 14,
}

// devPrefix is the Redis key prefix of `seckill dev`.
const devPrefix = "seckill:"

func (c DevConfig) edge() EdgeConfig {
	e := DefaultEdge
	e.RedisPrefix = devPrefix
	e.PublicListen, e.AdminListen, e.AddrFile = c.PublicListen, c.AdminListen, ""
	e.AdminToken, e.SessionSecret = c.AdminToken, c.SessionSecret
	e.LimitsFile, e.TrustedProxies = c.LimitsFile, c.TrustedProxies
	e.Difficulty, e.DifficultyUnderLoad = c.Difficulty, 2
	e.SecureCookie = false // plain HTTP by design: a Secure cookie would not come back
	e.Log = c.Log
	e.Backend = inprocBackend{} // set at start
	return e
}

// Validate returns every problem of the configuration. Weak secrets are
// allowed: `seckill dev` is for one person's machine.
func (c DevConfig) Validate() error {
	var ps Problems
	e := c.edge()
	if e.AdminToken == "" {
		e.AdminToken = "generated"
	}
	e.validate(&ps, true)
	ps.listen("backend-listen", c.BackendListen, false)
	st := Stores{RedisURL: c.RedisURL, AMQPURL: c.AMQPURL, PGURL: c.PGURL, Queue: "seckill.orders", RedisPrefix: devPrefix}
	st.validate(&ps, c.RedisURL != "", c.AMQPURL != "", c.PGURL != "")
	if !c.NoDemo {
		ps.positive("demo-stock", c.DemoStock)
		ps.nonNegative("demo-start", c.DemoStart)
	}
	if c.DataFile != "" && c.PGURL != "" {
		ps.add("data", "--data (SQLite) and --pg-url (PostgreSQL) exclude each other: name one store")
	}
	return ps.err()
}

// devSecrets are the generated secrets kept beside the data file.
type devSecrets struct {
	AdminToken    string `json:"admin_token"`
	SessionSecret string `json:"session_secret"`
}

// SecretsFile is where `seckill dev --data FILE` keeps its generated admin
// token and session secret.
func SecretsFile(dataFile string) string { return dataFile + ".secrets" }

// devSecretsFor fills in the secrets not given: from the secrets file when
// there is a data file, else generated (and then kept in the file).
func devSecretsFor(c *DevConfig) (kept string, err error) {
	var s devSecrets
	path := ""
	if c.DataFile != "" {
		path = SecretsFile(c.DataFile)
		raw, err := os.ReadFile(path)
		switch {
		case err == nil:
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", fmt.Errorf("reading %s: %w (delete it to make new secrets)", path, err)
			}
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("reading %s: %w", path, err)
		}
	}
	changed := false
	if s.AdminToken == "" {
		s.AdminToken, changed = randomHex(16), true
	}
	if s.SessionSecret == "" {
		s.SessionSecret, changed = randomHex(32), true
	}
	if path != "" && changed {
		raw, _ := json.MarshalIndent(s, "", "  ")
		if err := os.WriteFile(path, append(raw, '\n'), 0o600); err != nil {
			return "", fmt.Errorf("keeping the dev secrets in %s: %w", path, err)
		}
	}
	if c.AdminToken == "" {
		c.AdminToken = s.AdminToken
	}
	if c.BackendToken == "" {
		c.BackendToken = randomHex(32)
	}
	if c.SessionSecret == "" {
		c.SessionSecret = s.SessionSecret
	}
	return path, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// store is what every part needs of the durable store; package postgres
// and package sqlite both provide it.
type store interface {
	backend.Catalog
	backend.Users
	worker.Store
	reconcile.Catalog
	Close()
}

// Dev is a running `seckill dev`.
type Dev struct {
	*Edge
	backendAddr string
	svc         *backend.Service
	cfg         DevConfig
	mini        bool
	// SecretsFile is where the generated secrets are kept ("" = nowhere).
	SecretsFile string
}

// StartDev builds and starts `seckill dev`.
func StartDev(ctx context.Context, cfg DevConfig) (*Dev, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	kept, err := devSecretsFor(&cfg)
	if err != nil {
		return nil, err
	}
	log := orDefault(cfg.Log)
	gr := newGroup(ctx)
	d, err := startDev(ctx, gr, cfg, log)
	if err != nil {
		return nil, gr.fail(err)
	}
	d.SecretsFile = kept
	return d, nil
}

func startDev(ctx context.Context, gr *group, cfg DevConfig, log *slog.Logger) (*Dev, error) {
	d := &Dev{cfg: cfg}
	// The order pipeline and the stand-ins' clock run on bg (until the
	// listeners closed); stores close after every goroutine returned.
	var rdb *redis.Client
	if cfg.RedisURL == "" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("starting miniredis: %w", err)
		}
		gr.onClose(m.Close)
		d.mini = true
		// miniredis only ages keys when told: follow the wall clock so
		// challenges and paths expire.
		gr.Go("miniredis clock", func() error {
			last := time.Now()
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-gr.bg.Done():
					return nil
				case now := <-t.C:
					m.FastForward(now.Sub(last))
					last = now
				}
			}
		})
		// go-redis's own defaults (5 s timeouts), not internal/redisconf:
		// miniredis runs in this process and cannot stall on its own; a
		// slow reply here means a starved CPU, and the production 2 s bound
		// would turn a busy demo sale into spurious timeouts.
		rdb = redis.NewClient(&redis.Options{Addr: m.Addr(), PoolSize: redisconf.PoolSize})
	} else {
		var err error
		if rdb, err = RedisClient(cfg.RedisURL); err != nil {
			return nil, err
		}
	}
	gr.onClose(func() { _ = rdb.Close() })

	var db store
	var err error
	if cfg.PGURL != "" {
		db, err = postgres.Open(ctx, cfg.PGURL)
	} else {
		dsn := cfg.DataFile
		if dsn == "" {
			dsn = ":memory:"
		}
		db, err = sqlite.Open(ctx, dsn)
	}
	if err != nil {
		return nil, err
	}
	gr.onClose(db.Close)
	st := stock.New(rdb, devPrefix)
	svc := backend.New(db, st, log.With("component", "backend"))
	d.svc = svc
	if _, err := svc.LoadAll(ctx); err != nil {
		return nil, err
	}

	// The order pipeline: in process, or relay and consumer on RabbitMQ.
	w := worker.New(db, st, log)
	if cfg.AMQPURL == "" {
		p := inproc.New(st.Outbox("dev", 30*time.Second), w, inproc.Config{Logger: log})
		gr.Go("pipeline", func() error { return p.Run(gr.bg) })
	} else {
		topo := queue.Topology{Queue: "seckill.orders"}
		r := queue.NewRelay(queue.RelayConfig{URL: cfg.AMQPURL, Topology: topo, Logger: log}, st.Outbox("dev", 30*time.Second))
		c := queue.NewConsumer(queue.ConsumerConfig{URL: cfg.AMQPURL, Topology: topo, Logger: log}, w)
		gr.Go("relay", func() error { return r.Run(gr.bg) })
		gr.Go("consumer", func() error { return c.Run(gr.bg) })
	}

	// The backend API, for tools and tests (the edge does not use it).
	bl, err := listen("backend-listen", cfg.BackendListen)
	if err != nil {
		return nil, err
	}
	d.backendAddr = bl.Addr().String()
	bsrv := httpapi.NewServer(backend.NewHandler(svc, backend.HTTPConfig{Token: cfg.BackendToken, Logger: log.With("component", "backend")}))
	gr.onShutdown(func() { shutdownServers(log, bsrv) })
	gr.serve("backend api", bsrv, bl)

	ecfg := cfg.edge()
	ecfg.Backend = inprocBackend{svc: svc}
	ecfg.Log = log.With("component", "edge")
	e, err := startEdge(gr, ecfg, rdb, ecfg.Log)
	if err != nil {
		return nil, err
	}
	d.Edge = e
	// The demo sale comes once every listener is bound: a port in use
	// fails the start before anything is created (or logged as created).
	if !cfg.NoDemo {
		id, err := seedDemo(ctx, svc, cfg.DemoStock, cfg.DemoStart)
		if err != nil {
			return nil, fmt.Errorf("creating the demo sale: %w", err)
		}
		if id > 0 {
			e.edge.Catalog().Learn(id)
			e.edge.Catalog().Invalidate()
		}
	}
	if err := WriteAddrFile(cfg.AddrFile, fmt.Sprintf("public=%s admin=%s backend=%s", e.public, e.admin, d.backendAddr)); err != nil {
		return nil, err
	}
	return d, nil
}

// BackendAddr is the address of the backend API.
func (d *Dev) BackendAddr() string { return d.backendAddr }

// BackendToken is the internal credential of the backend API (given or
// generated).
func (d *Dev) BackendToken() string { return d.cfg.BackendToken }

// AdminToken is the admin token in force (given, kept or generated).
func (d *Dev) AdminToken() string { return d.cfg.AdminToken }

// Service is the backend service.
func (d *Dev) Service() *backend.Service { return d.svc }

// Describe names the stores in use.
func (d *Dev) Describe() string {
	var parts []string
	if d.mini {
		parts = append(parts, "redis: in-process miniredis")
	} else {
		parts = append(parts, "redis: "+MaskURL(d.cfg.RedisURL))
	}
	switch {
	case d.cfg.PGURL != "":
		parts = append(parts, "orders: "+MaskURL(d.cfg.PGURL))
	case d.cfg.DataFile != "":
		parts = append(parts, "orders: SQLite "+d.cfg.DataFile)
	default:
		parts = append(parts, "orders: SQLite in memory")
	}
	if d.cfg.AMQPURL != "" {
		parts = append(parts, "queue: "+MaskURL(d.cfg.AMQPURL))
	} else {
		parts = append(parts, "queue: in-process pipeline")
	}
	return strings.Join(parts, "; ")
}

// seedDemo creates the demo sale unless an item exists already and
// returns its id (0 when none was created).
func seedDemo(ctx context.Context, svc *backend.Service, units int, in time.Duration) (int64, error) {
	items, err := svc.Items(ctx)
	if err != nil {
		return 0, err
	}
	if len(items) > 0 {
		return 0, nil
	}
	now := time.Now()
	it, err := svc.CreateItem(ctx, seckill.Item{
		Name: "Demo sale: mechanical keyboard", PriceCents: 4999, Stock: int64(units),
		StartsAt: now.Add(in), EndsAt: now.Add(in + time.Hour), Challenge: "pow",
	})
	return it.ID, err
}
