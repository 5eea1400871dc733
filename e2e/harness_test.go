package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"seckill"
	"seckill/backend"
	"seckill/internal/app"
	"seckill/internal/testenv"
	"seckill/postgres"
	"seckill/queue"
	"seckill/reconcile"
	"seckill/stock"
)

var binary string // the seckill binary built by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "seckill-e2e-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "seckill")
	out, err := exec.Command("go", "build", "-o", binary, "seckill/cmd/seckill").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building seckill: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func quietLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// stack is one backend role and its stores, on the real servers, with the
// test's own database, Redis prefix and queue, built by the composition
// root (internal/app) as `seckill backend` builds it. Its relay and worker
// are started apart (startRelay, startWorker), as `seckill relay` and
// `seckill worker` build them.
type stack struct {
	t        *testing.T
	pgURL    string
	redisURL string
	prefix   string
	amqpURL  string
	queue    string
	db       *postgres.DB
	st       *stock.Store
	svc      *backend.Service
	apiURL   string // the backend API
}

func newStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{t: t, pgURL: testenv.Postgres(t), redisURL: testenv.RedisURL(t), amqpURL: testenv.AMQPURL(t), queue: testenv.Name(t)}
	_, s.prefix = testenv.Redis(t) // deletes the test's keys at the end
	ctx, stop := context.WithCancel(context.Background())
	b, err := app.StartBackend(ctx, app.BackendConfig{Stores: s.stores(s.amqpURL), Listen: "127.0.0.1:0", Token: testBackendToken, Log: quietLog(t)})
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if err := b.Wait(); err != nil {
			t.Errorf("backend: %v", err)
		}
	})
	s.db, s.st, s.svc, s.apiURL = b.DB(), b.Stock(), b.Service(), "http://"+b.Addr()
	t.Cleanup(func() { deleteQueues(s.amqpURL, s.topology()) })
	return s
}

func (s *stack) stores(amqpURL string) app.Stores {
	return app.Stores{RedisURL: s.redisURL, RedisPrefix: s.prefix, AMQPURL: amqpURL, Queue: s.queue, PGURL: s.pgURL}
}

func (s *stack) topology() queue.Topology { return queue.Topology{Queue: s.queue} }

// run starts f in the background until the test ends.
func run(t *testing.T, f func(ctx context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("background task: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// startRelay runs the relay role (`seckill relay`) on amqpURL.
func (s *stack) startRelay(amqpURL, id string) (stop func()) {
	o := app.DefaultRelayOptions
	o.ID = id
	return run(s.t, func(ctx context.Context) error {
		return app.RunRelay(ctx, app.RelayConfig{Stores: s.stores(amqpURL), Relay: o, Log: quietLog(s.t)})
	})
}

// startWorker runs the worker role (`seckill worker`) on amqpURL.
func (s *stack) startWorker(amqpURL string) (stop func()) {
	cfg := app.DefaultWorker
	cfg.Stores, cfg.Log = s.stores(amqpURL), quietLog(s.t)
	return run(s.t, func(ctx context.Context) error { return app.RunWorker(ctx, cfg) })
}

func (s *stack) createItem(units int64, challenge string) seckill.Item {
	now := time.Now()
	it, err := s.svc.CreateItem(context.Background(), seckill.Item{
		Name: "flash", PriceCents: 100, Stock: units, StartsAt: now.Add(-time.Second), EndsAt: now.Add(time.Hour), Challenge: challenge,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return it
}

func (s *stack) users(n int) []int64 {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("buyer%05d", i)
	}
	ids, err := s.db.EnsureUsers(context.Background(), names)
	if err != nil {
		s.t.Fatal(err)
	}
	out := make([]int64, n)
	for i, name := range names {
		out[i] = ids[name]
	}
	return out
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}, Timeout: 30 * time.Second}

type reserveAnswer struct {
	status   int
	code     string
	orderRef string
}

func reserve(baseURL string, item, user int64, requestID string) (reserveAnswer, error) {
	body, _ := json.Marshal(map[string]any{"item_id": item, "user_id": user, "request_id": requestID})
	req, err := http.NewRequest("POST", baseURL+"/v1/reservations", bytes.NewReader(body))
	if err != nil {
		return reserveAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testBackendToken)
	resp, err := client.Do(req)
	if err != nil {
		return reserveAnswer{}, err
	}
	defer resp.Body.Close()
	var m struct {
		Code     string `json:"code"`
		OrderRef string `json:"order_ref"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return reserveAnswer{status: resp.StatusCode, code: m.Code, orderRef: m.OrderRef}, nil
}

// waitOrders waits until PostgreSQL holds want orders of the item.
func (s *stack) waitOrders(item int64, want int64, timeout time.Duration) {
	s.t.Helper()
	var n int64
	testenv.Eventually(s.t, timeout, fmt.Sprintf("%d orders of item %d", want, item), func() bool {
		var err error
		n, err = s.db.CountOrders(context.Background(), item)
		if err != nil {
			s.t.Fatal(err)
		}
		if n > want {
			s.t.Fatalf("%d orders stored, more than the %d accepted", n, want)
		}
		return n == want
	})
}

// checkFinal asserts the exact end state of a sale: every accepted order
// stored once with its ref, stock and outbox at their exact values, and
// reconcile finding nothing.
func (s *stack) checkFinal(item seckill.Item, accepted map[int64]string) {
	s.t.Helper()
	s.checkFinalWithFailed(item, accepted, 0)
}

func (s *stack) checkFinalWithFailed(item seckill.Item, accepted map[int64]string, failed int64) {
	s.t.Helper()
	ctx := context.Background()
	stored, err := s.db.OrderRefs(ctx, item.ID)
	if err != nil {
		s.t.Fatal(err)
	}
	if len(stored) != len(accepted) {
		s.t.Fatalf("%d orders stored, %d accepted", len(stored), len(accepted))
	}
	for user, ref := range accepted {
		if stored[user] != ref {
			s.t.Fatalf("user %d: stored %q, accepted %q", user, stored[user], ref)
		}
	}
	if d, err := s.db.DuplicateOrders(ctx); err != nil || d != 0 {
		s.t.Fatalf("duplicate orders: %d %v", d, err)
	}
	st, err := s.svc.Stats(ctx, item.ID)
	if err != nil {
		s.t.Fatal(err)
	}
	n := int64(len(accepted))
	want := seckill.Stats{ItemID: item.ID, StockTotal: item.Stock, StockLeft: item.Stock - n, Reserved: n, Orders: n, OutboxPending: 0, Failed: failed}
	if st != want {
		s.t.Fatalf("stats %+v, want %+v", st, want)
	}
	rep, err := reconcile.Run(ctx, s.db, s.st, reconcile.Options{Items: []int64{item.ID}})
	if err != nil {
		s.t.Fatal(err)
	}
	if !rep.OK() || rep.Items[0].Repaired != 0 {
		var b strings.Builder
		reconcile.Print(&b, rep)
		s.t.Fatalf("reconcile:\n%s", b.String())
	}
}

// proc is a seckill subcommand running as its own process.
type proc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

// testBackendToken is the internal credential of the backends and edges the
// tests start as processes (and of seckill dev); the in-process handlers
// have none and ignore it.
const testBackendToken = "e2e-backend-token-0123456789abcdef0123456789"

func (s *stack) env(amqpURL string) []string {
	return append(os.Environ(), "SECKILL_BACKEND_TOKEN="+testBackendToken,
		"SECKILL_REDIS_URL="+s.redisURL, "SECKILL_REDIS_PREFIX="+s.prefix, "SECKILL_AMQP_URL="+amqpURL,
		"SECKILL_PG_URL="+s.pgURL, "SECKILL_QUEUE="+s.queue, "SECKILL_LOG_LEVEL=warn")
}

func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary, args...), out: &bytes.Buffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("output of %v:\n%s", args, p.out.String())
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}
