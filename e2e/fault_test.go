package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"seckill"
	"seckill/internal/testenv"
)

// reserveAll reserves one unit for every user through the service, many at
// a time, and returns user -> order ref of the accepted ones.
func (s *stack) reserveAll(item int64, users []int64) map[int64]string {
	s.t.Helper()
	var mu sync.Mutex
	accepted := map[int64]string{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := s.svc.Reserve(context.Background(), item, seckill.Account{ID: u}, fmt.Sprint("req-", u))
			if err != nil {
				s.t.Errorf("reserve user %d: %v", u, err)
				return
			}
			mu.Lock()
			accepted[u] = r.OrderRef
			mu.Unlock()
		}()
	}
	wg.Wait()
	return accepted
}

// TestWorkerKilledMidDrain: the worker is SIGKILLed while it stores a
// backlog of 20,000 orders, then restarted: every accepted order is stored
// exactly once.
func TestWorkerKilledMidDrain(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	const n = 20000
	item := s.createItem(n, "none")
	users := s.users(n)
	s.startRelay(s.amqpURL, "relay-"+s.queue)
	accepted := s.reserveAll(item.ID, users)
	if len(accepted) != n {
		t.Fatalf("accepted %d, want %d", len(accepted), n)
	}
	waitOutboxEmpty(t, s, item.ID) // all of it is in RabbitMQ now

	// Small batches so the drain takes long enough to be cut in the middle.
	w := startProc(t, s.env(s.amqpURL), "worker", "--batch", "10", "--prefetch", "50", "--flush", "1ms")
	var before int64
	testenv.Eventually(t, 60*time.Second, "the worker to store its first 2,000 orders", func() bool {
		before, _ = s.db.CountOrders(context.Background(), item.ID)
		return before >= 2000
	})
	w.kill()
	after, _ := s.db.CountOrders(context.Background(), item.ID)
	if after >= n {
		t.Fatalf("the drain finished (%d) before the kill: the test did not cut it", after)
	}
	t.Logf("worker killed with %d of %d orders stored", after, n)

	startProc(t, s.env(s.amqpURL), "worker")
	s.waitOrders(item.ID, n, 90*time.Second)
	s.checkFinal(item, accepted)
}

// TestBackendKilledBeforeRelay: orders accepted by a backend whose relay
// never ran (SIGKILLed right after the reservations) wait in the outbox; a
// new backend publishes them and all are stored once.
func TestBackendKilledBeforeRelay(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.createItem(3000, "none")
	users := s.users(3000)
	s.startWorker(s.amqpURL)

	b := startBackend(t, s, s.amqpURL, "--relay=false")
	accepted := map[int64]string{}
	for _, u := range users[:2000] {
		ans, err := reserve(b.url, item.ID, u, fmt.Sprint("r", u))
		if err != nil || ans.status != 202 {
			t.Fatalf("reserve: %+v %v", ans, err)
		}
		accepted[u] = ans.orderRef
	}
	b.kill()
	c, _ := s.st.Counters(context.Background(), item.ID)
	if c.OutboxPending != 2000 {
		t.Fatalf("outbox holds %d after the kill, want 2000", c.OutboxPending)
	}
	startBackend(t, s, s.amqpURL)
	s.waitOrders(item.ID, 2000, 60*time.Second)
	s.checkFinal(item, accepted)
}

// TestBackendKilledWhileRelaying: a backend is SIGKILLed in the middle of a
// sale while its relay has entries claimed but not confirmed; restarted
// under the same relay name it republishes them. Nothing lost, nothing
// doubled.
func TestBackendKilledWhileRelaying(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	const n = 6000
	item := s.createItem(n, "none")
	users := s.users(n)
	s.startWorker(s.amqpURL)
	relayID := "relay-" + s.queue

	var mu sync.Mutex
	accepted := map[int64]string{}
	buy := func(url string, us []int64) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for _, u := range us {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ans, err := reserve(url, item.ID, u, fmt.Sprint("r", u))
				if err != nil {
					return // the backend died under this request: not acknowledged
				}
				if ans.status == 202 {
					mu.Lock()
					accepted[u] = ans.orderRef
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	b := startBackend(t, s, s.amqpURL, "--relay-id", relayID)
	done := make(chan struct{})
	go func() { buy(b.url, users[:4000]); close(done) }()
	testenv.Eventually(t, 30*time.Second, "1,500 orders stored", func() bool {
		n, _ := s.db.CountOrders(context.Background(), item.ID)
		return n >= 1500
	})
	b.kill()
	<-done
	c, _ := s.st.Counters(context.Background(), item.ID)
	t.Logf("backend killed: %d reserved, %d in the outbox", c.Reserved, c.OutboxPending)

	b2 := startBackend(t, s, s.amqpURL, "--relay-id", relayID)
	buy(b2.url, users[4000:])
	// A request cut by the kill may have taken a unit without its answer
	// reaching the client; retrying the same request id tells which.
	for _, u := range users[:4000] {
		if _, ok := accepted[u]; ok {
			continue
		}
		ans, err := reserve(b2.url, item.ID, u, fmt.Sprint("r", u))
		if err != nil {
			t.Fatal(err)
		}
		if ans.status == 202 {
			accepted[u] = ans.orderRef
		}
	}
	if len(accepted) != n {
		t.Fatalf("accepted %d, want %d", len(accepted), n)
	}
	s.waitOrders(item.ID, n, 60*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)
}

// TestRabbitMQStoppedDuringSale: the broker stops in the middle of a sale
// and starts again. Orders accepted meanwhile wait in the outbox and all
// reach PostgreSQL afterwards; none lost, none doubled.
func TestRabbitMQStoppedDuringSale(t *testing.T) {
	t.Parallel()
	script := testenv.ServicesScript(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	broker := func(cmd string) {
		out, err := exec.Command("bash", script, cmd, dir).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
	}
	broker("rabbitmq-start")
	t.Cleanup(func() { _ = exec.Command("bash", script, "rabbitmq-stop", dir).Run() })
	raw, err := os.ReadFile(filepath.Join(dir, "amqp_url"))
	if err != nil {
		t.Fatal(err)
	}
	amqpURL := strings.TrimSpace(string(raw))

	s := newStack(t)
	const n = 3000
	item := s.createItem(n, "none")
	users := s.users(n)
	s.startRelay(amqpURL, "relay-"+s.queue)
	s.startWorker(amqpURL)

	accepted := s.reserveAll(item.ID, users[:1000])
	s.waitOrders(item.ID, 1000, 30*time.Second)

	broker("rabbitmq-stop")
	var during atomic.Int64
	for k, v := range s.reserveAll(item.ID, users[1000:2000]) {
		accepted[k] = v
		during.Add(1)
	}
	c, _ := s.st.Counters(context.Background(), item.ID)
	if c.OutboxPending != 1000 {
		t.Fatalf("outbox holds %d while the broker is down, want 1000", c.OutboxPending)
	}
	broker("rabbitmq-start")
	for k, v := range s.reserveAll(item.ID, users[2000:]) {
		accepted[k] = v
	}
	s.waitOrders(item.ID, n, 90*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)
}

type backendProc struct {
	*proc
	url string
}

func startBackend(t *testing.T, s *stack, amqpURL string, args ...string) backendProc {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	p := startProc(t, s.env(amqpURL), append([]string{"backend", "--listen", "127.0.0.1:0", "--addr-file", addrFile}, args...)...)
	var addr string
	testenv.Eventually(t, 30*time.Second, "the backend to listen", func() bool {
		b, err := os.ReadFile(addrFile)
		if err != nil {
			return false
		}
		addr = strings.TrimSpace(string(b))
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	// Ready means its Redis guard verified the server: it sells.
	testenv.Eventually(t, 30*time.Second, "the backend to be ready", func() bool {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return backendProc{proc: p, url: "http://" + addr}
}
