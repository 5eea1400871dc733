package edge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/testenv"
	"seckill/limit"
	"seckill/stock"
)

// itemsBackend serves a fixed catalogue (the rest is noBackend's).
type itemsBackend struct {
	noBackend
	items []seckill.ItemView
}

func (b itemsBackend) Items(context.Context) ([]seckill.ItemView, error) { return b.items, nil }

// BenchmarkQueuePollVsCatalog: the cost of one request at the edge,
// server side (handler through the router, session check, token buckets
// without rules, JSON), for a cached catalogue read (GET /api/items/{id},
// no Redis), a waiting-room poll without a poll token (GET
// /api/items/{id}/queue: one script run on the real Redis, 100,000 tickets
// waiting) and one with its poll token (answered from the edge's view;
// the script runs at most once a tick), never handed to Redis (as most
// are: roomView.record), each handed over to be checked (the first of a
// ticket at an edge), or each handed over as known waiting (the others).
// docs/BENCHMARKS.md.
//
//	scripts/testenv.sh ./edge -run '^$' -bench QueuePollVsCatalog -benchtime 5s
func BenchmarkQueuePollVsCatalog(b *testing.B) {
	rdb, prefix := testenv.Redis(b)
	ctx := context.Background()
	now := time.Now()
	it := seckill.Item{ID: 5, Name: "q", Stock: 100, StartsAt: now.Add(time.Hour), EndsAt: now.Add(2 * time.Hour), Challenge: "none",
		SaleRules: seckill.SaleRules{Allocation: seckill.AllocationQueue, QueueOpensAt: now.Add(-time.Minute)}}
	if err := stock.New(rdb, prefix).LoadItem(ctx, it, nil, nil); err != nil {
		b.Fatal(err)
	}
	lim, err := limit.New(nil, limit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer lim.Close()
	e := New(Config{SessionSecret: []byte("bench-secret")}, Deps{
		Backend: itemsBackend{items: []seckill.ItemView{{Item: it, StockLeft: 100, State: seckill.StateUpcoming}}},
		Redis:   rdb, Prefix: prefix, Limiter: lim,
	})
	const users = 100_000
	fill(b, e.queue, it, users)
	tokens := make([]string, 1024)
	for i := range tokens {
		tokens[i], _ = e.sessions.Sign(int64(1+i*97), "u")
	}
	h := e.Public()
	b.Run("script-only", func(b *testing.B) { // the poll's Redis part alone
		var n atomic.Int64
		defer cpuCost(b, rdb)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := e.queue.run(ctx, opPoll, it, 1+n.Add(1)%users, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("redis-get", func(b *testing.B) { // one plain Redis round trip
		defer cpuCost(b, rdb)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = rdb.Get(ctx, prefix+"nothing").Err()
			}
		})
	})
	polls := make([]string, len(tokens)) // each user's poll token
	keys := make([]recKey, len(tokens))  // and its key in the edge's record of polls handed to Redis
	for i := range polls {
		u := int64(1 + i*97)
		st, err := e.queue.run(ctx, opPoll, it, u, 1)
		if err != nil || !st.HasPlace {
			b.Fatalf("user %d: %+v %v", u, st, err)
		}
		pt := pollToken{User: u, Item: it.ID, Ticket: st.Ticket, Place: st.Place}
		polls[i] = e.pollTokens.sign(pt)
		keys[i] = seenOf(pt).key()
	}
	ptoks := make([]pollToken, len(polls))
	for i := range polls {
		ptoks[i], _ = e.pollTokens.open(polls[i], int64(1+i*97), it.ID)
	}
	// forget makes this edge forget it recorded ticket i (its next poll is
	// recorded and checked); due makes its last record older than
	// recordEvery (its next poll is recorded, unchecked: known waiting).
	forget := func(i int64) {
		v := e.queue.view(it.ID)
		v.mu.Lock()
		delete(v.recorded, keys[i]) // (clear would cost O(the map's buckets) here)
		v.mu.Unlock()
	}
	due := func(i int64) {
		v := e.queue.view(it.ID)
		v.mu.Lock()
		if r, ok := v.recorded[keys[i]]; ok {
			r.at = time.Time{}
			v.recorded[keys[i]] = r
		}
		v.mu.Unlock()
	}
	// The view's part alone (fromView, no HTTP): never recorded, or each
	// recorded as known waiting (the edge's part of a record, isolated from
	// the HTTP path's noise).
	for _, known := range []bool{false, true} {
		name := "view-only"
		if known {
			name = "view-only-each-recorded-known"
		}
		b.Run(name, func(b *testing.B) {
			var n atomic.Int64
			defer cpuCost(b, rdb)()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1) % int64(len(tokens))
					if known {
						due(i)
					}
					if _, ok, err := e.queue.fromView(ctx, it, ptoks[i], 1); !ok || err != nil {
						b.Fatal(ok, err)
					}
				}
			})
		})
	}
	serve := func(b *testing.B, path string, token bool, before func(n, i int64)) {
		var n atomic.Int64
		view0, rec0, chk0 := e.queue.viewPolls.Load(), e.queue.recordedPolls.Load(), e.queue.checkedPolls.Load()
		defer func() {
			if token {
				b.ReportMetric(float64(e.queue.viewPolls.Load()-view0)/float64(b.N), "from-view/op")
				b.ReportMetric(float64(e.queue.recordedPolls.Load()-rec0)/float64(b.N), "recorded/op")
				b.ReportMetric(float64(e.queue.checkedPolls.Load()-chk0)/float64(b.N), "checked/op")
			}
		}()
		defer cpuCost(b, rdb)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := n.Add(1)
				i := k % int64(len(tokens))
				req := httptest.NewRequest(http.MethodGet, path, nil)
				req.Header.Set("Authorization", "Bearer "+tokens[i])
				if token {
					req.Header.Set(PollTokenHeader, polls[i])
				}
				if before != nil {
					before(k, i)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
				}
			}
		})
	}
	for _, c := range []struct {
		name, path string
		token      bool
		before     func(n, i int64)
	}{
		{"catalogue", "/api/items/5", false, nil},
		{"queue-poll", "/api/items/5/queue", false, nil},
		{"queue-poll-token", "/api/items/5/queue", true, nil},                                             // answered from the edge's view
		{"queue-poll-token-each-recorded", "/api/items/5/queue", true, func(_, i int64) { forget(i) }},    // and every poll handed to Redis, checked
		{"queue-poll-token-each-recorded-known", "/api/items/5/queue", true, func(_, i int64) { due(i) }}, // handed over, the ticket known waiting
	} {
		b.Run(c.name, func(b *testing.B) { serve(b, c.path, c.token, c.before) })
	}
	// The catalogue read and the poll as the 100,000-entrant run mixes them
	// (mixRecorded and mixChecked), in alternate rounds, so the machine's
	// drift hits both alike: compare each round's pair.
	//
	//	scripts/testenv.sh ./edge -run '^$' -bench 'QueuePollVsCatalog/round' -benchtime 2s
	mixed := func(n, i int64) {
		switch k := n % 10_000; {
		case k < mixChecked:
			forget(i)
		case k < mixRecorded:
			due(i)
		}
	}
	for r := range 6 {
		b.Run(fmt.Sprintf("round-%d/catalogue", r+1), func(b *testing.B) { serve(b, "/api/items/5", false, nil) })
		b.Run(fmt.Sprintf("round-%d/queue-poll-mixed", r+1), func(b *testing.B) { serve(b, "/api/items/5/queue", true, mixed) })
	}
}

// The share of polls (per 10,000) an edge hands to Redis (mixRecorded)
// and of those it checks (mixChecked, counted in mixRecorded) in the
// 100,000-entrant lab run (docs/BENCHMARKS.md "Waiting room"):
// BenchmarkQueuePollVsCatalog's mixed poll.
const (
	mixRecorded = 1668 // run 7: 113,118 of 678,123 view-answered polls
	mixChecked  = 0    // run 7: none
)

// cpuCost reports the CPU time per operation of this process (the edge)
// and of the Redis server (INFO cpu): on a shared, loaded machine wall
// time per operation mostly measures waiting for a core, CPU time does
// not. Call as defer cpuCost(b, rdb)().
func cpuCost(b *testing.B, rdb interface {
	Info(ctx context.Context, section ...string) *redis.StringCmd
}) func() {
	self := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	server := func() float64 { // seconds
		info, _ := rdb.Info(context.Background(), "cpu").Result()
		total := 0.0
		for _, l := range strings.Split(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(l), ":")
			if k == "used_cpu_sys" || k == "used_cpu_user" {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
		return total
	}
	s0, r0 := self(), server()
	return func() {
		n := float64(b.N)
		b.ReportMetric(float64((self()-s0).Microseconds())/n, "edge-cpu-µs/op")
		b.ReportMetric((server()-r0)*1e6/n, "redis-cpu-µs/op")
	}
}

// fill joins users 1..n to the waiting room of it, 16 at a time.
func fill(tb testing.TB, w *waitingRoom, it seckill.Item, n int) {
	tb.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for u := next.Add(1); u <= int64(n); u = next.Add(1) {
				if _, err := w.run(context.Background(), opJoin, it, u, 1); err != nil {
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkQueueAdmission100k: 100,000 entrants join before the start;
// from the start, pollers keep polling random waiting tickets (as the
// room's clients do) for 60 s and the admissions are counted against the
// configured rate (6,000 a minute; units and active users do not bind).
// Reports the measured rate, its error and the polls per second Redis
// served. docs/BENCHMARKS.md.
//
//	scripts/testenv.sh ./edge -run '^$' -bench QueueAdmission100k -benchtime 1x
func BenchmarkQueueAdmission100k(b *testing.B) {
	for range b.N {
		rdb, prefix := testenv.Redis(b)
		const users, rate = 100_000, 6000
		window := 60 * time.Second
		start := time.Now().Add(5 * time.Minute) // after the joins
		it := seckill.Item{ID: 6, Name: "q", Stock: users, StartsAt: start, EndsAt: start.Add(time.Hour),
			SaleRules: seckill.SaleRules{Allocation: seckill.AllocationQueue, NewUsersPerMinute: rate, SessionDuration: seckill.Duration(time.Hour)}}
		if err := stock.New(rdb, prefix).LoadItem(context.Background(), it, nil, nil); err != nil {
			b.Fatal(err)
		}
		w := newWaitingRoom(rdb, prefix, 0, 0)
		began := time.Now()
		fill(b, w, it, users)
		joined := time.Since(began)
		// Start the sale now (the tickets keep their places).
		it.StartsAt = time.Now()
		var polls atomic.Int64
		var first, last queueStatus
		ctx, cancel := context.WithTimeout(context.Background(), window)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for g := range 16 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 1))
				for ctx.Err() == nil {
					s, err := w.run(context.Background(), opPoll, it, 1+rng.Int64N(users), 1)
					if err != nil {
						b.Error(err)
						return
					}
					polls.Add(1)
					mu.Lock()
					if first.Now.IsZero() {
						first = s
					}
					if s.Now.After(last.Now) {
						last = s
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		cancel()
		secs := last.Now.Sub(it.StartsAt).Seconds()
		measured := float64(last.Admitted) / secs * 60
		b.ReportMetric(measured, "admitted/min")
		b.ReportMetric(100*(measured-rate)/rate, "error-%")
		b.ReportMetric(float64(polls.Load())/window.Seconds(), "polls/s")
		b.ReportMetric(joined.Seconds(), "join-s")
		fmt.Printf("100,000 joined in %v; %d admitted in %.1f s by Redis's clock (%.0f a minute, configured %d); %d polls (%.0f/s); %d still waiting\n",
			joined.Round(time.Millisecond), last.Admitted, secs, measured, rate, polls.Load(), float64(polls.Load())/window.Seconds(), last.Waiting)
	}
}
