package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"seckill"
	"seckill/discovery"
	"seckill/internal/testenv"
)

// perHost counts the requests sent to each backend (host:port).
type perHost struct {
	next http.RoundTripper
	mu   sync.Mutex
	n    map[string]int
}

func (c *perHost) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n[r.URL.Host]++
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *perHost) get(base string) int {
	u, _ := url.Parse(base)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[u.Host]
}

func listed(b *discovery.Balancer) []string {
	var out []string
	for _, s := range b.Backends() {
		out = append(out, s.URL)
	}
	return out
}

// TestBackendsDiscoveredKilledMidSale: two `seckill backend` processes
// register in ZooKeeper (--zk); a Balancer finds both and spreads a sale
// over them; one is SIGKILLed mid-sale. The buyers see at most the
// breaker's bound of errors (a failed reservation is retried once on the
// other backend, under the same request id), the dead backend gets no
// request once its node is gone, every accepted order is stored exactly
// once, and a backend stopped with SIGTERM leaves ZooKeeper at once.
func TestBackendsDiscoveredKilledMidSale(t *testing.T) {
	t.Parallel()
	zkAddr := testenv.ZooKeeper(t)
	root := "/" + testenv.Name(t)
	s := newStack(t)
	const n = 6000
	item := s.createItem(n, "none")
	users := s.users(n)
	s.startWorker(s.amqpURL)

	zkArgs := []string{"--zk", zkAddr, "--zk-root", root, "--relay-steal-after", "2s"}
	b1 := startBackend(t, s, s.amqpURL, append(zkArgs, "--relay-id", "relay1-"+s.queue)...)
	b2 := startBackend(t, s, s.amqpURL, append(zkArgs, "--relay-id", "relay2-"+s.queue)...)

	const fails = 5
	hosts := &perHost{next: &http.Transport{MaxIdleConnsPerHost: 256}, n: map[string]int{}}
	ctx := context.Background()
	bal, err := discovery.NewBalancer(ctx, []string{zkAddr}, root, discovery.WithLogger(quietLog(t)), discovery.WithAdminToken(testBackendToken),
		discovery.WithHTTPClient(&http.Client{Transport: hosts, Timeout: 10 * time.Second}),
		discovery.WithBreaker(discovery.BreakerConfig{ConsecutiveFailures: fails, OpenFor: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	both := []string{b1.url, b2.url}
	slices.Sort(both)
	testenv.Eventually(t, 10*time.Second, "both backends listed", func() bool { return slices.Equal(listed(bal), both) })

	const workers = 32
	var (
		mu          sync.Mutex
		accepted    = map[int64]string{}
		unanswered  []int64
		buyerErrors atomic.Int64
		killAt      = make(chan struct{})
		killOnce    sync.Once
	)
	var wg sync.WaitGroup
	sem := make(chan struct{}, workers)
	buy := func(u int64) {
		defer wg.Done()
		defer func() { <-sem }()
		defer time.Sleep(80 * time.Millisecond)
		r, err := bal.Reserve(ctx, item.ID, seckill.Account{ID: u}, fmt.Sprint("r", u))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			var se *seckill.Error
			if !errors.As(err, &se) {
				buyerErrors.Add(1)
			}
			unanswered = append(unanswered, u)
			return
		}
		accepted[u] = r.OrderRef
		if len(accepted) == 1500 {
			killOnce.Do(func() { close(killAt) })
		}
	}
	// Buyers at about 400 a second, so the sale goes on well past the
	// kill and past the removal of the dead backend's node.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, u := range users {
			wg.Add(1)
			sem <- struct{}{}
			go buy(u)
		}
	}()
	<-killAt
	before1 := hosts.get(b1.url)
	b1.kill()
	killed := time.Now()
	// The dead backend's node goes with its session, in the middle of the
	// sale; from then on it gets no request.
	testenv.Eventually(t, 3*discovery.DefaultSessionTimeout, "the dead backend's node to go", func() bool {
		return slices.Equal(listed(bal), []string{b2.url})
	})
	dead := hosts.get(b1.url)
	mu.Lock()
	t.Logf("b1 dropped %v after the kill, with %d accepted", time.Since(killed), len(accepted))
	mu.Unlock()
	wg.Wait()
	t.Logf("sale over %v after the kill: %d accepted, %d unanswered, %d buyer errors; b1 got %d requests after the kill, b2 %d in all",
		time.Since(killed), len(accepted), len(unanswered), buyerErrors.Load(), dead-before1, hosts.get(b2.url))
	if buyerErrors.Load() > fails {
		t.Fatalf("%d buyers saw the backend fail, more than the breaker's %d", buyerErrors.Load(), fails)
	}
	if tries := dead - before1; tries > workers+fails {
		t.Fatalf("%d requests to the dead backend, more than the %d in flight plus the breaker's %d", tries, workers, fails)
	}

	// A request cut by the kill may have taken a unit without its answer
	// reaching the buyer; asking again under the same request id tells.
	for _, u := range unanswered {
		r, err := bal.Reserve(ctx, item.ID, seckill.Account{ID: u}, fmt.Sprint("r", u))
		if err != nil {
			t.Fatalf("reserve again for user %d: %v", u, err)
		}
		accepted[u] = r.OrderRef
	}
	for _, u := range users[:200] {
		if _, err := bal.Status(ctx, item.ID, u); err != nil {
			t.Fatalf("status: %v", err)
		}
	}
	if d := hosts.get(b1.url) - dead; d != 0 {
		t.Fatalf("%d requests to b1 after its node was gone", d)
	}
	if len(accepted) != n {
		t.Fatalf("accepted %d, want %d", len(accepted), n)
	}
	s.waitOrders(item.ID, n, 90*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)

	// SIGTERM: the backend deregisters before it drains, long before a
	// session timeout.
	if err := b2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	testenv.Eventually(t, discovery.DefaultSessionTimeout/2, "b2 to deregister", func() bool { return len(listed(bal)) == 0 })
	t.Logf("b2 deregistered %v after SIGTERM", time.Since(stopped))
	<-b2.done
}
