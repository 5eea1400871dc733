package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"seckill"
	"seckill/backend"
	"seckill/backendclient"
	"seckill/captcha"
	"seckill/clientip"
	"seckill/edge"
	"seckill/httpapi"
	"seckill/inproc"
	"seckill/internal/redisconf"
	"seckill/postgres"
	"seckill/queue"
	"seckill/reconcile"
	"seckill/sqlite"
	"seckill/stock"
	"seckill/web"
	"seckill/worker"
)

// store is what every part needs of the durable store; package postgres
// and package sqlite both provide it.
type store interface {
	backend.Catalog
	backend.Users
	worker.Store
	reconcile.Catalog
	Close()
}

func devCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		publicListen, adminListen, backendListen, addrFile string
		adminToken, dataFile, limitsFile                   string
		redisURL, amqpURL, pgURL, logLevel, trusted        string
		noDemo                                             bool
		demoStock, difficulty                              int
		demoStart                                          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process on embedded stand-ins, with a demo sale",
		Long: `Run the edge, the backend and the order pipeline in one process, with nothing
installed but this binary: Redis is served in-process by miniredis (the same
Lua scripts and go-redis code run on it), the relay/RabbitMQ/worker path is an
in-process pipeline with the same guarantees, and users, items and orders live
in SQLite (in memory, or in --data FILE).

Each stand-in can be swapped for the real server: --redis-url, --amqp-url,
--pg-url. A demo sale starts a few seconds after start unless --no-demo.`,
		Example: `  seckill dev
  seckill dev --data /tmp/seckill.db --admin-token s3cret --demo-stock 50
  seckill dev --redis-url redis://127.0.0.1:6379/0 --pg-url 'postgres://postgres@127.0.0.1:5432/seckill?sslmode=disable'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			began := time.Now()
			ctx := cmd.Context()
			log := newLogger(stderr, logLevel)
			if adminToken == "" {
				adminToken = randomHex(16)
			}
			d, err := startDev(ctx, devConfig{
				backendListen: backendListen, redisURL: redisURL, amqpURL: amqpURL, pgURL: pgURL, dataFile: dataFile,
			}, log)
			if err != nil {
				return err
			}
			defer d.close()

			lim, err := loadLimiter(limitsFile, edge.DefaultMaxKeysPerRule, 10*time.Second)
			if err != nil {
				return err
			}
			defer func() { _ = lim.Close() }()
			ips, err := clientip.New(splitList(trusted))
			if err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			e := edge.New(edge.Config{
				SessionSecret: []byte(randomHex(32)), AdminToken: adminToken, Difficulty: difficulty, DifficultyUnderLoad: 2,
			}, edge.Deps{
				Backend: backendclient.New("http://"+d.backendAddr, "", nil), Redis: d.rdb, Prefix: devPrefix,
				Limiter: lim, Challenges: captcha.NewStore(d.rdb, devPrefix, captcha.Options{}),
				Buyers: d.st, IPs: ips, Log: log.With("component", "edge"), Registry: reg,
				Storefront: web.Storefront(), Dashboard: web.Dashboard(),
			})
			if !noDemo {
				if err := seedDemo(ctx, d.svc, demoStock, demoStart); err != nil {
					return err
				}
			}
			pl, err := net.Listen("tcp", publicListen)
			if err != nil {
				return fmt.Errorf("listening on %s: %w", publicListen, err)
			}
			al, err := net.Listen("tcp", adminListen)
			if err != nil {
				pl.Close()
				return fmt.Errorf("listening on %s: %w", adminListen, err)
			}
			if err := writeAddrFile(addrFile, fmt.Sprintf("public=%s admin=%s backend=%s", pl.Addr(), al.Addr(), d.backendAddr)); err != nil {
				return err
			}
			fmt.Fprintf(stdout, `seckill dev is running (ready in %d ms):
  storefront and public API  http://%s/   (API: docs/API.md)
  admin dashboard and API    http://%s/dashboard/   token: %s
  backend API (internal)     http://%s/v1/items
  stores                     %s
Press Ctrl-C to stop.
`, time.Since(began).Milliseconds(), pl.Addr(), al.Addr(), adminToken, d.backendAddr, d.describe())
			return serveOn(ctx, e, pl, al, log)
		},
	}
	fs := cmd.Flags()
	envFlag(fs, getenv, &publicListen, "public-listen", "SECKILL_PUBLIC_LISTEN", "127.0.0.1:8080", "address of the storefront and public API")
	envFlag(fs, getenv, &adminListen, "admin-listen", "SECKILL_ADMIN_LISTEN", "127.0.0.1:8081", "address of the admin API")
	envFlag(fs, getenv, &backendListen, "backend-listen", "SECKILL_BACKEND_LISTEN", "127.0.0.1:0", "address of the internal backend API")
	envFlag(fs, getenv, &addrFile, "addr-file", "SECKILL_DEV_ADDR_FILE", "", "write 'public=ADDR admin=ADDR backend=ADDR' to this file once listening")
	envFlag(fs, getenv, &adminToken, "admin-token", "SECKILL_ADMIN_TOKEN", "", "admin API token (random when empty; printed at start)")
	envFlag(fs, getenv, &dataFile, "data", "SECKILL_DATA", "", "SQLite file for users, items and orders (in memory when empty)")
	envFlag(fs, getenv, &limitsFile, "limits", "SECKILL_LIMITS", "configs/limits.yaml", "token bucket rules (YAML)")
	envFlag(fs, getenv, &redisURL, "redis-url", "SECKILL_REDIS_URL", "", "use this Redis instead of the in-process miniredis")
	envFlag(fs, getenv, &amqpURL, "amqp-url", "SECKILL_AMQP_URL", "", "use this RabbitMQ (relay and worker) instead of the in-process pipeline")
	envFlag(fs, getenv, &pgURL, "pg-url", "SECKILL_PG_URL", "", "use this PostgreSQL instead of SQLite")
	envFlag(fs, getenv, &logLevel, "log-level", "SECKILL_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	envFlag(fs, getenv, &trusted, "trusted-proxies", "SECKILL_TRUSTED_PROXIES", "", "comma-separated CIDRs whose X-Forwarded-For is believed (the lab needs 127.0.0.1/32)")
	envBool(fs, getenv, &noDemo, "no-demo", "SECKILL_NO_DEMO", false, "do not create the demo sale")
	envInt(fs, getenv, &demoStock, "demo-stock", "SECKILL_DEMO_STOCK", 20, "units of the demo sale")
	envDuration(fs, getenv, &demoStart, "demo-start", "SECKILL_DEMO_START", 10*time.Second, "the demo sale starts this long after start")
	envInt(fs, getenv, &difficulty, "difficulty", "SECKILL_DIFFICULTY", 14, "proof-of-work difficulty in leading zero bits")
	return cmd
}

const devPrefix = "seckill:"

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type devConfig struct {
	backendListen, redisURL, amqpURL, pgURL, dataFile string
}

// devStack is the backend side of `seckill dev`: stores, backend API and
// order pipeline, in process.
type devStack struct {
	rdb         *redis.Client
	mini        *miniredis.Miniredis
	db          store
	st          *stock.Store
	svc         *backend.Service
	backendAddr string
	cfg         devConfig
	closers     []func()
}

func (d *devStack) describe() string {
	var parts []string
	if d.mini != nil {
		parts = append(parts, "redis: in-process miniredis")
	} else {
		parts = append(parts, "redis: "+mask("url", d.cfg.redisURL))
	}
	switch {
	case d.cfg.pgURL != "":
		parts = append(parts, "orders: "+mask("url", d.cfg.pgURL))
	case d.cfg.dataFile != "":
		parts = append(parts, "orders: SQLite "+d.cfg.dataFile)
	default:
		parts = append(parts, "orders: SQLite in memory")
	}
	if d.cfg.amqpURL != "" {
		parts = append(parts, "queue: "+mask("url", d.cfg.amqpURL))
	} else {
		parts = append(parts, "queue: in-process pipeline")
	}
	return strings.Join(parts, "; ")
}

func (d *devStack) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

func startDev(ctx context.Context, cfg devConfig, log *slog.Logger) (*devStack, error) {
	d := &devStack{cfg: cfg}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	if cfg.redisURL == "" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("starting miniredis: %w", err)
		}
		d.mini = m
		d.closers = append(d.closers, m.Close)
		// miniredis only ages keys when told: follow the wall clock so
		// challenges and paths expire.
		tctx, stop := context.WithCancel(context.Background())
		d.closers = append(d.closers, stop)
		go func() {
			last := time.Now()
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-tctx.Done():
					return
				case now := <-t.C:
					m.FastForward(now.Sub(last))
					last = now
				}
			}
		}()
		// go-redis's own defaults (5 s timeouts), not internal/redisconf:
		// miniredis runs in this process and cannot stall on its own; a slow
		// reply here means a starved CPU, and the production 2 s bound would
		// turn a busy demo sale into spurious timeouts.
		d.rdb = redis.NewClient(&redis.Options{Addr: m.Addr(), PoolSize: redisconf.PoolSize})
	} else {
		c := common{RedisURL: cfg.redisURL}
		rdb, err := c.redisClient()
		if err != nil {
			return nil, err
		}
		d.rdb = rdb
	}
	d.closers = append(d.closers, func() { _ = d.rdb.Close() })

	var err error
	if cfg.pgURL != "" {
		d.db, err = postgres.Open(ctx, cfg.pgURL)
	} else {
		dsn := cfg.dataFile
		if dsn == "" {
			dsn = ":memory:"
		}
		d.db, err = sqlite.Open(ctx, dsn)
	}
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, d.db.Close)
	d.st = stock.New(d.rdb, devPrefix)
	d.svc = backend.New(d.db, d.st, log.With("component", "backend"))
	if _, err := d.svc.LoadAll(ctx); err != nil {
		return nil, err
	}

	bl, err := net.Listen("tcp", cfg.backendListen)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.backendListen, err)
	}
	d.backendAddr = bl.Addr().String()
	bsrv := httpapi.NewServer(backend.NewHandler(d.svc, backend.HTTPConfig{Logger: log.With("component", "backend")}))
	go func() { _ = bsrv.Serve(bl) }()
	d.closers = append(d.closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = bsrv.Shutdown(sctx)
	})

	pctx, stopPipeline := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	d.closers = append(d.closers, func() { stopPipeline(); wg.Wait() })
	w := worker.New(d.db, d.st, log)
	runBG := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(pctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error(name+" stopped", "err", err)
			}
		}()
	}
	if cfg.amqpURL == "" {
		runBG("pipeline", inproc.New(d.st.Outbox("dev", 30*time.Second), w, inproc.Config{Logger: log}).Run)
	} else {
		topo := queue.Topology{Queue: "seckill.orders"}
		runBG("relay", queue.NewRelay(queue.RelayConfig{URL: cfg.amqpURL, Topology: topo, Logger: log}, d.st.Outbox("dev", 30*time.Second)).Run)
		runBG("consumer", queue.NewConsumer(queue.ConsumerConfig{URL: cfg.amqpURL, Topology: topo, Logger: log}, w).Run)
	}
	ok = true
	return d, nil
}

// seedDemo creates the demo sale unless an item exists already.
func seedDemo(ctx context.Context, svc *backend.Service, units int, in time.Duration) error {
	items, err := svc.Items(ctx)
	if err != nil {
		return err
	}
	if len(items) > 0 {
		return nil
	}
	now := time.Now()
	_, err = svc.CreateItem(ctx, seckill.Item{
		Name: "Demo sale: mechanical keyboard", PriceCents: 4999, Stock: int64(units),
		StartsAt: now.Add(in), EndsAt: now.Add(in + time.Hour), Challenge: "pow",
	})
	return err
}
