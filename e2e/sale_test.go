package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"seckill/internal/testenv"
)

// TestFlashSale5000Buyers: 5,000 concurrent buyers, each trying 3 times
// (some tries are retries of the same request), on one item of 1,000
// units, through the backend API, relay, RabbitMQ and worker, on the real
// servers. Exactly 1,000 accepted and stored, stock 0, no doubles,
// reconcile clean. Three seeds.
func TestFlashSale5000Buyers(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			s := newStack(t)
			item := s.createItem(1000, "none")
			users := s.users(5000)
			s.startRelay(s.amqpURL, "relay-"+s.queue)
			s.startWorker(s.amqpURL)

			rng := rand.New(rand.NewPCG(seed, seed*7919))
			rng.Shuffle(len(users), func(i, j int) { users[i], users[j] = users[j], users[i] })
			type plan struct {
				user  int64
				reuse [3]bool // retry the previous request id
				delay [3]time.Duration
			}
			plans := make([]plan, len(users))
			for i, u := range users {
				plans[i].user = u
				for a := range 3 {
					plans[i].reuse[a] = a > 0 && rng.IntN(3) == 0
					plans[i].delay[a] = time.Duration(rng.IntN(2000)) * time.Microsecond
				}
			}

			var mu sync.Mutex
			accepted := map[int64]string{}
			counts := map[string]int{}
			var wg sync.WaitGroup
			start := make(chan struct{})
			for _, p := range plans {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					req := ""
					for a := range 3 {
						time.Sleep(p.delay[a])
						if !p.reuse[a] {
							req = fmt.Sprintf("%d-%d-%d", seed, p.user, a)
						}
						ans, err := reserve(s.apiURL, item.ID, p.user, req)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						switch {
						case ans.status == 202:
							if prev, ok := accepted[p.user]; ok && prev != ans.orderRef {
								t.Errorf("user %d accepted twice: %s and %s", p.user, prev, ans.orderRef)
							}
							if _, ok := accepted[p.user]; !ok {
								counts["accepted"]++
							} else {
								counts["accepted again (retry)"]++
							}
							accepted[p.user] = ans.orderRef
						default:
							counts[fmt.Sprintf("%d %s", ans.status, ans.code)]++
						}
						mu.Unlock()
					}
				}()
			}
			began := time.Now()
			close(start)
			wg.Wait()
			t.Logf("seed %d: 15,000 attempts in %v: %v", seed, time.Since(began).Round(time.Millisecond), counts)
			if counts["accepted"] != 1000 || len(accepted) != 1000 {
				t.Fatalf("accepted %d (%d users), want exactly 1000", counts["accepted"], len(accepted))
			}
			total := 0
			for k, n := range counts {
				total += n
				switch k {
				case "accepted", "accepted again (retry)", "409 already_bought", "410 sold_out":
				default:
					t.Errorf("unexpected answer %q x%d", k, n)
				}
			}
			if total != 15000 {
				t.Fatalf("%d answers, want 15000", total)
			}
			s.waitOrders(item.ID, 1000, 60*time.Second)
			waitOutboxEmpty(t, s, item.ID)
			s.checkFinal(item, accepted)
		})
	}
}

// waitOutboxEmpty waits until every accepted order left the outbox.
func waitOutboxEmpty(t *testing.T, s *stack, item int64) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "the outbox to empty", func() bool {
		c, err := s.st.Counters(context.Background(), item)
		if err != nil {
			t.Fatal(err)
		}
		return c.OutboxPending == 0
	})
}

// TestOneUserHundredParallelAttempts: one user, 100 parallel attempts
// through the API: exactly one accepted, and it is stored once.
func TestOneUserHundredParallelAttempts(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.createItem(10, "none")
	user := s.users(1)[0]
	s.startRelay(s.amqpURL, "relay-"+s.queue)
	s.startWorker(s.amqpURL)
	var mu sync.Mutex
	byStatus := map[int]int{}
	var ref string
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ans, err := reserve(s.apiURL, item.ID, user, fmt.Sprint("attempt-", i))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			byStatus[ans.status]++
			if ans.status == 202 {
				ref = ans.orderRef
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if byStatus[202] != 1 || byStatus[409] != 99 {
		t.Fatalf("answers %v, want 1 x 202 and 99 x 409", byStatus)
	}
	s.waitOrders(item.ID, 1, 30*time.Second)
	s.checkFinal(item, map[int64]string{user: ref})
}
