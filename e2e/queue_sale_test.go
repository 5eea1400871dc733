package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"seckill/apiclient"
	"seckill/edge"
)

// TestQueueSaleInvariants: a waiting-room sale on the real stack (backend,
// relay, RabbitMQ, worker, PostgreSQL). 300 users join before the start
// (pre-queue); admitted ones buy through challenge, path and buy with their
// pass, clicking buy twice; every fifth lets its turn expire and joins
// again. The admin stats, read all along, never show more admitted users
// than units left; at the end exactly the units are sold, one per account,
// every order stored once, and reconcile finds nothing.
func TestQueueSaleInvariants(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, browserRules(), edge.Config{Difficulty: 4, QueueGrace: time.Second})
	const units, users = 40, 300
	now := time.Now()
	start := now.Add(4 * time.Second)
	a := env.admin("POST", "/admin/items", map[string]any{
		"name": "queued", "price_cents": 100, "stock": units, "challenge": "pow",
		"starts_at": start.UTC().Format(time.RFC3339Nano), "ends_at": start.Add(time.Hour).UTC().Format(time.RFC3339Nano),
		"allocation": "queue", "queue_opens_at": now.UTC().Format(time.RFC3339Nano),
		"new_users_per_minute": 1200, "total_active_users": 15, "session_duration": "2s",
	})
	if a.status != 201 {
		t.Fatalf("create: %d %v", a.status, a.body)
	}
	item := int64(a.body["id"].(float64))
	base := fmt.Sprintf("/api/items/%d", item)
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("queuer%03d", i)
	}
	tokens := env.sessions(names...)

	// The sampler: admitted-unexpired and units left come from one script run.
	stop := make(chan struct{})
	var samples, over atomic.Int64
	var sw sync.WaitGroup
	sw.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			st := env.admin("GET", fmt.Sprintf("/admin/items/%d/stats", item), nil)
			q, _ := st.body["queue"].(map[string]any)
			if q == nil {
				continue
			}
			samples.Add(1)
			if q["admitted"].(float64) > q["units_left"].(float64) {
				over.Add(1)
				t.Errorf("admitted %v > units left %v", q["admitted"], q["units_left"])
			}
		}
	})

	var mu sync.Mutex
	won := map[string]string{}
	accepted := map[string]int{}
	outcomes := map[string]int{}
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i, name := range names {
		wg.Go(func() {
			sh := shopper{e: env, token: tokens[name]}
			lets := i%5 == 0 // lets its first turn expire
			q := sh.do("POST", base+"/queue", nil)
			for ctx.Err() == nil {
				if q.status != 200 {
					mu.Lock()
					outcomes[fmt.Sprintf("queue %d %s", q.status, q.code())]++
					mu.Unlock()
					return
				}
				switch q.str("state") {
				case "sold_out", "bought":
					mu.Lock()
					outcomes[q.str("state")]++
					mu.Unlock()
					return
				case "expired":
					q = sh.do("POST", base+"/queue", nil)
					continue
				case "admitted":
					if lets {
						lets = false
						time.Sleep(2500 * time.Millisecond)
						q = sh.do("GET", base+"/queue", nil)
						continue
					}
					out, ref := buyWithPass(sh, item, q.str("pass"))
					mu.Lock()
					outcomes[out]++
					if out == "202" {
						accepted[name]++
						won[name] = ref
					}
					mu.Unlock()
					return
				}
				time.Sleep(500 * time.Millisecond)
				q = sh.do("GET", base+"/queue", nil)
			}
		})
	}
	wg.Wait()
	close(stop)
	sw.Wait()
	t.Logf("outcomes %v; %d samples of the room", outcomes, samples.Load())
	if len(won) != units || over.Load() != 0 || samples.Load() < 10 {
		t.Fatalf("%d winners (want %d), %d samples with more admitted than units left, %d samples", len(won), units, over.Load(), samples.Load())
	}
	for name, n := range accepted {
		if n != 1 {
			t.Fatalf("%s accepted %d times", name, n)
		}
	}
	env.s.waitOrders(item, units, 60*time.Second)
	ids, err := env.s.db.EnsureUsers(context.Background(), keys(won))
	if err != nil {
		t.Fatal(err)
	}
	acc := map[int64]string{}
	for name, ref := range won {
		acc[ids[name]] = ref
	}
	it, err := env.s.svc.Item(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	env.s.checkFinal(it.Item, acc)
}

// buyWithPass goes through challenge, path and buy with the admission
// pass, then clicks buy again with a second path: the outcome of the first
// buy ("202" or the refusal) and its order ref. The second must not be 202.
func buyWithPass(sh shopper, item int64, pass string) (string, string) {
	t := sh.e.t
	hdr := http.Header{edge.PassHeader: {pass}}
	send := func(method, path string, body any) answer {
		api := apiclient.New(sh.e.pub.URL, "", "", edgeClient)
		a, err := api.Send(context.Background(), method, path, sh.token, body, hdr)
		if err != nil {
			t.Fatal(err)
		}
		return checkAnswer(t, method, sh.e.pub.URL+path, a.Status, a.Header, a.Body)
	}
	path := func() (string, string) {
		ch := send("POST", fmt.Sprintf("/api/items/%d/challenge", item), nil)
		if ch.status != 200 {
			return "", fmt.Sprintf("challenge %d %s", ch.status, ch.code())
		}
		p := send("POST", fmt.Sprintf("/api/items/%d/path", item), map[string]any{"challenge_id": ch.str("challenge_id"), "answer": sh.solve(ch)})
		if p.status != 200 {
			return "", fmt.Sprintf("path %d %s", p.status, p.code())
		}
		return p.str("path"), ""
	}
	p, refused := path()
	if refused != "" {
		return refused, ""
	}
	b := send("POST", fmt.Sprintf("/api/items/%d/buy/%s", item, p), nil)
	if b.status != 202 {
		return fmt.Sprintf("buy %d %s", b.status, b.code()), ""
	}
	if p2, refused := path(); refused == "" {
		if again := send("POST", fmt.Sprintf("/api/items/%d/buy/%s", item, p2), nil); again.status == 202 {
			t.Errorf("a second buy of the same account was accepted")
		}
	}
	return "202", b.str("order_ref")
}
