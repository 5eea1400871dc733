package e2e

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"seckill/internal/faultproxy"
	"seckill/internal/testenv"
)

// redisProxy puts a faultproxy in front of the test Redis and returns it
// with the Redis URL that goes through it.
func (s *stack) redisProxy() (*faultproxy.Proxy, string) {
	s.t.Helper()
	u, err := url.Parse(s.redisURL)
	if err != nil {
		s.t.Fatal(err)
	}
	p, err := faultproxy.New(u.Host)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = p.Close() })
	via := *u
	via.Host = p.Addr()
	return p, via.String()
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRelayProcess: `seckill relay` runs alone, its Redis traffic through a
// proxy. A read reply lost there strands an order under its name; it
// takes it back and publishes it, the metrics show it, and its heartbeat
// names its pid. SIGKILLed, its heartbeat expires.
func TestRelayProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t)
	item := s.createItem(10, "none")
	users := s.users(3)
	s.startWorker(s.amqpURL)
	p, viaProxy := s.redisProxy()
	addrFile := filepath.Join(t.TempDir(), "addr")
	rp := startProc(t, s.env(s.amqpURL), "relay", "--redis-url", viaProxy, "--relay-id", "relay-proc",
		"--claim-idle", "1s", "--relay-steal-after", "1m", "--metrics-listen", "127.0.0.1:0", "--addr-file", addrFile)
	var base string
	testenv.Eventually(t, 30*time.Second, "the relay to be ready", func() bool {
		b, err := os.ReadFile(addrFile)
		if err != nil {
			return false
		}
		base = "http://" + strings.TrimSpace(string(b))
		code, _ := httpGet(t, base+"/readyz")
		return code == http.StatusOK
	})
	if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz %d %s", code, body)
	}
	live, err := s.st.LiveRelays(ctx)
	if err != nil || live["relay-proc"].PID != rp.cmd.Process.Pid || live["relay-proc"].ClaimIdleMs != 1000 {
		t.Fatalf("heartbeats %+v %v", live, err)
	}
	accepted := s.reserveAll(item.ID, users[:1])
	s.waitOrders(item.ID, 1, 20*time.Second)

	ref := s.strandVia(p, "relay-proc", item.ID, users[1])
	accepted[users[1]] = ref
	s.waitOrders(item.ID, 2, 1500*time.Millisecond+5*time.Second)
	for u, r := range s.reserveAll(item.ID, users[2:]) {
		accepted[u] = r
	}
	s.waitOrders(item.ID, 3, 20*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)
	_, metrics := httpGet(t, base+"/metrics")
	for _, want := range []string{"seckill_relay_reclaimed_total 1", "seckill_relay_confirmed_total 3",
		"seckill_relay_oldest_pending_seconds", "seckill_relay_oldest_unread_seconds", "seckill_relay_connected 1"} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %q:\n%s", want, metrics)
		}
	}

	_ = rp.cmd.Process.Signal(syscall.SIGKILL)
	<-rp.done
	testenv.Eventually(t, 10*time.Second, "the heartbeat to expire", func() bool {
		live, err := s.st.LiveRelays(ctx)
		return err == nil && len(live) == 0
	})
}

// TestBackendRelayRedisURL: `seckill backend --relay-redis-url` sends the
// embedded relay's Redis traffic (and only it) another way: a lost read
// reply there is recovered, while the backend keeps taking orders.
func TestBackendRelayRedisURL(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.createItem(10, "none")
	users := s.users(2)
	s.startWorker(s.amqpURL)
	p, viaProxy := s.redisProxy()
	be := startBackend(t, s, s.amqpURL, "--relay-redis-url", viaProxy, "--relay-id", "relay-be", "--relay-claim-idle", "1s")
	accepted := map[int64]string{}
	a, err := reserve(be.url, item.ID, users[0], "r0")
	if err != nil || a.status != http.StatusAccepted {
		t.Fatalf("reserve: %+v %v", a, err)
	}
	accepted[users[0]] = a.orderRef
	s.waitOrders(item.ID, 1, 20*time.Second)
	// While the relay's replies are dropped, the backend still sells.
	p.DropReplies(true)
	a, err = reserve(be.url, item.ID, users[1], "r1")
	if err != nil || a.status != http.StatusAccepted {
		t.Fatalf("reserve during the fault: %+v %v", a, err)
	}
	accepted[users[1]] = a.orderRef
	testenv.Eventually(t, 10*time.Second, "the order pending under relay-be", func() bool {
		st, err := s.st.OutboxState(context.Background(), item.ID)
		return err == nil && len(st.Pending) == 1 && st.Pending[0].Consumer == "relay-be"
	})
	p.DropReplies(false)
	s.waitOrders(item.ID, 2, 1500*time.Millisecond+5*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)
	if p.Dropped() == 0 {
		t.Fatal("nothing went through the relay's proxy")
	}
}
