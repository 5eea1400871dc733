package backend_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"seckill"
	"seckill/backend"
	"seckill/internal/faultproxy"
	"seckill/internal/testenv"
	"seckill/postgres"
	"seckill/stock"
)

// outageEnv is a backend whose PostgreSQL and Redis connections each go
// through a fault proxy, Redis with the production client settings
// (redisconf: timeouts, retries, command budget), and the Redis guard
// running as in `seckill backend`.
type outageEnv struct {
	*env
	pg    *faultproxy.Proxy
	pgURL string // straight to the server
	redis *testenv.FaultyRedis
	item  int64
	buyer int64 // holds a unit of item
}

func newOutageEnv(t *testing.T) *outageEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	direct := testenv.Postgres(t)
	pgURL, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	pg, err := faultproxy.New(pgURL.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	pgURL.Host = pg.Addr()
	db, err := postgres.Open(ctx, pgURL.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	fr := testenv.RedisBehindProxyProd(t)
	st := stock.New(fr.Client, fr.Prefix)
	svc := backend.New(db, st, nil)
	g := stock.NewGuard(st, stock.GuardConfig{Source: db, Interval: 200 * time.Millisecond, Settle: 50 * time.Millisecond, Poll: 20 * time.Millisecond})
	svc.SetRedisGuard(g)
	gctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Run(gctx)
	}()
	t.Cleanup(func() { stop(); <-done })
	srv := httptest.NewServer(backend.NewHandler(svc, backend.HTTPConfig{AdminToken: "adm"}))
	t.Cleanup(srv.Close)
	e := &outageEnv{env: &env{srv: srv, db: db, st: st, svc: svc}, pg: pg, pgURL: direct, redis: fr}
	testenv.Eventually(t, 10*time.Second, "the guard to verify Redis", func() bool { return !g.Frozen() })

	e.item = e.env.item(t, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), 100)
	if code, m, _ := e.do(t, "POST", "/v1/users", `{"username":"alice","password":"alice-password"}`, true); code != 201 {
		t.Fatalf("register: %d %v", code, m)
	}
	e.buyer = 7001
	if code, m, _ := e.do(t, "POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":%d,"request_id":"before"}`, e.item, e.buyer), true); code != 202 {
		t.Fatalf("reserve before the outage: %d %v", code, m)
	}
	return e
}

// TestDependencyOutageIsNever500: every route of the backend's API, with
// PostgreSQL down, stalled (it gets queries and never answers) or refusing
// the database, and Redis down or stalled, answers what docs/BACKEND_API.md says: what it can
// serve without the store that is away, else 503 with a code and
// Retry-After; never 500, and within 10 s. No item list was read before
// the outage, so GET /v1/items has no last list to fall back on.
func TestDependencyOutageIsNever500(t *testing.T) {
	type want struct {
		status int
		code   seckill.Code // for a 503
	}
	var (
		ok      = func(s int) want { return want{status: s} }
		backend = want{503, seckill.EUnavailable}
		dep     = want{503, seckill.EDependency}
	)
	type route struct {
		name, method, path, body string
		admin                    bool
	}
	routes := func(e *outageEnv) []route {
		return []route{
			{"reserve", "POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":7002,"request_id":"during"}`, e.item), true},
			{"items", "GET", "/v1/items", "", true},
			{"item", "GET", fmt.Sprintf("/v1/items/%d", e.item), "", true},
			{"status", "GET", fmt.Sprintf("/v1/items/%d/orders/%d", e.item, e.buyer), "", true},
			{"status of an item redis lacks", "GET", fmt.Sprintf("/v1/items/%d/orders/%d", e.item+1000, e.buyer), "", true},
			{"create item", "POST", "/v1/admin/items", `{"name":"late","price_cents":1,"stock":3,"starts_at":"2020-01-01T00:00:00Z","ends_at":"2099-01-01T00:00:00Z","challenge":"none"}`, true},
			{"stats", "GET", fmt.Sprintf("/v1/admin/items/%d/stats", e.item), "", true},
			{"register", "POST", "/v1/users", `{"username":"bob_during","password":"bob-password"}`, true},
			{"login", "POST", "/v1/users/login", `{"username":"alice","password":"alice-password"}`, true},
			{"ensure users", "POST", "/v1/admin/users", `{"usernames":["carol"]}`, true},
		}
	}
	cases := []struct {
		name  string
		fault func(t *testing.T, e *outageEnv)
		want  map[string]want
	}{
		{
			name: "postgres down",
			fault: func(t *testing.T, e *outageEnv) {
				e.pg.Refuse(true)
				e.pg.CutAll()
			},
			want: map[string]want{
				"reserve": ok(202), "items": backend, "item": backend, "status": ok(200),
				"status of an item redis lacks": backend, "create item": dep, "stats": dep,
				"register": dep, "login": dep, "ensure users": dep,
			},
		},
		{
			// The server gets every query and never answers (as a
			// SIGSTOPped PostgreSQL): each call ends at DBTimeout.
			name:  "postgres stalled",
			fault: func(t *testing.T, e *outageEnv) { e.pg.DropReplies(true) },
			want: map[string]want{
				"reserve": ok(202), "items": backend, "item": backend, "status": ok(200),
				"status of an item redis lacks": backend, "create item": dep, "stats": dep,
				"register": dep, "login": dep, "ensure users": dep,
			},
		},
		{
			// The server itself refuses: open connections are ended
			// (57P01 admin_shutdown) and new ones are refused
			// ("database is not currently accepting connections", 55000).
			name:  "postgres refusing the database",
			fault: func(t *testing.T, e *outageEnv) { pgRefuse(t, e.pgURL) },
			want: map[string]want{
				"reserve": ok(202), "items": backend, "item": backend, "status": ok(200),
				"status of an item redis lacks": backend, "create item": dep, "stats": dep,
				"register": dep, "login": dep, "ensure users": dep,
			},
		},
		{
			name: "redis down",
			fault: func(t *testing.T, e *outageEnv) {
				e.redis.Proxy.Refuse(true)
				e.redis.Proxy.CutAll()
			},
			want: map[string]want{
				"reserve": backend, "items": dep, "item": dep, "status": dep,
				"status of an item redis lacks": dep, "create item": dep, "stats": dep,
				"register": ok(201), "login": ok(200), "ensure users": ok(200),
			},
		},
		{
			name:  "redis stalled",
			fault: func(t *testing.T, e *outageEnv) { e.redis.Proxy.DropReplies(true) },
			want: map[string]want{
				"reserve": backend, "items": dep, "item": dep, "status": dep,
				"status of an item redis lacks": dep, "create item": dep, "stats": dep,
				"register": ok(201), "login": ok(200), "ensure users": ok(200),
			},
		},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			e := newOutageEnv(t)
			c.fault(t, e)
			var slowest time.Duration
			for _, r := range routes(e) {
				w, ok := c.want[r.name]
				if !ok {
					t.Fatalf("no expectation for %s", r.name)
				}
				t0 := time.Now()
				code, m, h := e.do(t, r.method, r.path, r.body, r.admin)
				took := time.Since(t0)
				slowest = max(slowest, took)
				if code == 500 {
					t.Errorf("%s %s: 500 %v", r.method, r.path, m)
					continue
				}
				if code != w.status {
					t.Errorf("%s (%s %s): %d %v, want %d %s", r.name, r.method, r.path, code, m, w.status, w.code)
					continue
				}
				if code == 503 && (m["code"] != string(w.code) || h.Get("Retry-After") != "1" || m["retry_after"] != float64(1)) {
					t.Errorf("%s: 503 %v Retry-After %q, want code %s and Retry-After 1", r.name, m, h.Get("Retry-After"), w.code)
				}
				if took > 10*time.Second {
					t.Errorf("%s: answered after %v, want within 10 s", r.name, took)
				}
			}
			t.Logf("%s: slowest answer %v", c.name, slowest.Round(time.Millisecond))
		})
	}
}

// pgRefuse makes the PostgreSQL server refuse the test's database for real
// until the test ends: it stops accepting connections to it and ends the
// ones open. Other databases on the server are untouched.
func pgRefuse(t *testing.T, dbURL string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	u.Path = "/postgres"
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = conn.Exec(ctx, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true")
		_ = conn.Close(ctx)
	})
	for _, sql := range []string{
		"ALTER DATABASE " + name + " ALLOW_CONNECTIONS false",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + name + "' AND pid <> pg_backend_pid()",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// failingCatalog is a Catalog with a bug: reading an item fails with an
// error that says nothing of an outage.
type failingCatalog struct {
	backend.Catalog
}

var errBug = errors.New("scanning item: cannot scan text into *int64")

func (failingCatalog) Item(context.Context, int64) (seckill.Item, error) {
	return seckill.Item{}, errBug
}
func (failingCatalog) Items(context.Context) ([]seckill.Item, error) { return nil, errBug }

// TestBugIsStill500: errors that are not an outage keep their 500: a store
// returning a plain error, and PostgreSQL refusing a statement (a table
// that is missing: SQLSTATE 42P01) on a server that is up.
func TestBugIsStill500(t *testing.T) {
	e := newEnv(t)
	id := e.item(t, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), 5)

	bugged := httptest.NewServer(backend.NewHandler(backend.New(failingCatalog{e.db}, e.st, nil), backend.HTTPConfig{AdminToken: "adm"}))
	t.Cleanup(bugged.Close)
	be := &env{srv: bugged}
	for _, p := range []string{"/v1/items", fmt.Sprintf("/v1/items/%d", id), fmt.Sprintf("/v1/admin/items/%d/stats", id)} {
		code, m, h := be.do(t, "GET", p, "", true)
		if code != 500 || m["code"] != string(seckill.EInternal) || h.Get("Retry-After") != "" || strings.Contains(fmt.Sprint(m), "scan") {
			t.Errorf("GET %s with a bugged store: %d %v Retry-After %q, want 500 internal, no cause shown", p, code, m, h.Get("Retry-After"))
		}
	}

	if _, err := e.db.Pool().Exec(context.Background(), "DROP TABLE failed_orders"); err != nil {
		t.Fatal(err)
	}
	code, m, h := e.do(t, "GET", fmt.Sprintf("/v1/admin/items/%d/stats", id), "", true)
	if code != 500 || m["code"] != string(seckill.EInternal) || h.Get("Retry-After") != "" {
		t.Errorf("stats with a table missing: %d %v, want 500 internal", code, m)
	}
}
