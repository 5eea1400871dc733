package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill/internal/faultproxy"
	"seckill/internal/rkeys"
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

// strandDirect makes the reservation of one unit for user (the same writes
// as the reservation script: DECR stock, HSET buyer, XADD outbox) and reads
// the new entry with XREADGROUP > under the relay's consumer name, in one
// MULTI/EXEC, so no relay can read it first: an order stranded exactly as
// a lost read reply leaves it. It returns the order ref.
func (s *stack) strandDirect(item, user int64, consumer string) string {
	s.t.Helper()
	ctx := context.Background()
	k := rkeys.Space(s.prefix).Item(item)
	ref := fmt.Sprintf("stranded%016x%d", time.Now().UnixNano(), user)
	req := fmt.Sprint("req-", user)
	pipe := s.st.Client().TxPipeline()
	pipe.Decr(ctx, k.Stock)
	pipe.HSet(ctx, k.Buyers, fmt.Sprint(user), ref+"|"+req)
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: k.Outbox, Values: []any{"ref", ref, "user", user, "item", item, "req", req}})
	read := pipe.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "relay", Consumer: consumer, Streams: []string{k.Outbox, ">"}, Count: 100, Block: -1})
	if _, err := pipe.Exec(ctx); err != nil {
		s.t.Fatal(err)
	}
	if res := read.Val(); len(res) != 1 || len(res[0].Messages) != 1 || res[0].Messages[0].Values["ref"] != ref {
		s.t.Fatalf("stranded read %+v", res)
	}
	return ref
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

	// The relay's Redis replies are lost for a moment: it keeps going.
	// For 500 ms, and until a reply was dropped: a relay slowed down by a
	// busy machine may send nothing in 500 ms.
	p.DropReplies(true)
	time.Sleep(500 * time.Millisecond)
	testenv.Eventually(t, 10*time.Second, "a reply of the relay dropped", func() bool { return p.Dropped() > 0 })
	p.DropReplies(false)
	accepted[users[1]] = s.strandDirect(item.ID, users[1], "relay-proc")
	// Bound: --claim-idle + a scan (claim-idle/2) + publish and store,
	// with room for a relay still recovering from the dropped replies on
	// a busy machine (5 s was close); only its own reclaim can store it
	// (--relay-steal-after is 1 min).
	s.waitOrders(item.ID, 2, 1500*time.Millisecond+15*time.Second)
	for u, r := range s.reserveAll(item.ID, users[2:]) {
		accepted[u] = r
	}
	s.waitOrders(item.ID, int64(len(accepted)), 20*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)
	_, metrics := httpGet(t, base+"/metrics")
	for _, want := range []string{"seckill_relay_reclaimed_total 1", fmt.Sprintf("seckill_relay_confirmed_total %d", len(accepted)),
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
	users := s.users(3)
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
	// While the relay cannot reach Redis, the backend still sells; the
	// order waits.
	p.Refuse(true)
	p.CutAll()
	a, err = reserve(be.url, item.ID, users[1], "r1")
	if err != nil || a.status != http.StatusAccepted {
		t.Fatalf("reserve during the fault: %+v %v", a, err)
	}
	accepted[users[1]] = a.orderRef
	time.Sleep(time.Second)
	if n, _ := s.db.CountOrders(context.Background(), item.ID); n != 1 {
		t.Fatalf("%d orders stored while the relay's Redis was cut off, want 1", n)
	}
	p.Refuse(false)
	s.waitOrders(item.ID, 2, 20*time.Second)
	// An order stranded under the relay's name is taken back.
	accepted[users[2]] = s.strandDirect(item.ID, users[2], "relay-be")
	s.waitOrders(item.ID, 3, 1500*time.Millisecond+15*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)
}
