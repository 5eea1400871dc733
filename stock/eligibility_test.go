package stock_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"seckill"
	"seckill/internal/testenv"
	"seckill/stock"
)

// eligibleItem is a live item with eligibility rules.
func eligibleItem(id, units int64, minAge time.Duration, maxNet int64) seckill.Item {
	it := liveItem(id, units)
	it.MinAccountAge = seckill.Duration(minAge)
	it.MaxPerNetwork = maxNet
	return it
}

// account made at created on network net.
func account(id int64, created time.Time, net string) seckill.Account {
	return seckill.Account{ID: id, CreatedAt: created, Network: net}
}

// checkNetworks asserts the networks hash and that it agrees with the
// buyer records (each "ref|req|net" counted once) and with the stock:
// total = left + buyers.
func checkNetworks(t *testing.T, ctx context.Context, s *stock.Store, itemID int64, want map[string]int64) {
	t.Helper()
	got, err := s.Networks(ctx, itemID)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("networks of item %d = %v, want %v", itemID, got, want)
	}
	c, err := s.Counters(ctx, itemID)
	if err != nil {
		t.Fatal(err)
	}
	if c.StockTotal != c.StockLeft+c.Reserved {
		t.Errorf("item %d: total %d != left %d + reserved %d", itemID, c.StockTotal, c.StockLeft, c.Reserved)
	}
}

func TestEligibilityAccountAge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	it := eligibleItem(31, 10, 72*time.Hour, 0)
	if err := s.LoadItem(ctx, it, nil, nil); err != nil {
		t.Fatal(err)
	}
	plain := liveItem(32, 10)
	if err := s.LoadItem(ctx, plain, nil, nil); err != nil {
		t.Fatal(err)
	}
	cutoff := it.StartsAt.Add(-72 * time.Hour)
	for _, c := range []struct {
		name   string
		item   int64
		acct   seckill.Account
		want   stock.Outcome
		reason string
	}{
		{"fresh", 31, account(1, time.Now(), "198.51.100.0/24"), stock.NotEligible, stock.ReasonAccountAge},
		{"one ms too young", 31, account(2, cutoff.Add(time.Millisecond), ""), stock.NotEligible, stock.ReasonAccountAge},
		{"exactly old enough", 31, account(3, cutoff, ""), stock.Queued, ""},
		{"old", 31, account(4, time.Now().Add(-100*time.Hour), "198.51.100.0/24"), stock.Queued, ""},
		{"unknown (old token)", 31, seckill.Account{ID: 5}, stock.NotEligible, stock.ReasonUnknownAccount},
		{"unknown, no rules", 32, seckill.Account{ID: 5}, stock.Queued, ""},
		{"fresh, no rules", 32, account(6, time.Now(), ""), stock.Queued, ""},
	} {
		r, err := s.Reserve(ctx, c.item, c.acct, fmt.Sprint("q", c.acct.ID), fmt.Sprint("o", c.item, "-", c.acct.ID))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.Outcome != c.want || r.Reason != c.reason {
			t.Errorf("%s: %+v, want %s %q", c.name, r, c.want, c.reason)
		}
	}
	cnt, _ := s.Counters(ctx, 31)
	if cnt.StockLeft != 8 || cnt.Reserved != 2 {
		t.Errorf("item 31: %+v, want 2 reserved, 8 left (refusals take nothing)", cnt)
	}
}

// TestMaxPerNetworkConcurrent: 50 accounts of one network race (three
// attempts each) for a sale with max_per_network 3, beside 20 accounts of
// another network and 10 accounts without a network: exactly 3 units go
// to each network, every account without a network gets one, and nothing
// is oversold.
func TestMaxPerNetworkConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.LoadItem(ctx, eligibleItem(33, 100, 0, 3), nil, nil); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	netOf := func(u int64) string {
		switch {
		case u <= 50:
			return "203.0.113.0/24"
		case u <= 70:
			return "2001:db8:1::/48"
		}
		return ""
	}
	var mu sync.Mutex
	queued := map[string]map[int64]string{}
	refused := map[string]int{}
	var wg sync.WaitGroup
	for u := int64(1); u <= 80; u++ {
		for a := 0; a < 3; a++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				net := netOf(u)
				r, err := s.Reserve(ctx, 33, account(u, old, net), fmt.Sprintf("q-%d-%d", u, a), fmt.Sprintf("o-%d-%d", u, a))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				switch r.Outcome {
				case stock.Queued:
					if queued[net] == nil {
						queued[net] = map[int64]string{}
					}
					if prev, ok := queued[net][u]; ok && prev != r.OrderRef {
						t.Errorf("user %d queued twice: %s and %s", u, prev, r.OrderRef)
					}
					queued[net][u] = r.OrderRef
				case stock.NotEligible:
					if r.Reason != stock.ReasonNetwork {
						t.Errorf("user %d: not eligible for %q", u, r.Reason)
					}
					refused[net]++
				case stock.AlreadyBought:
				default:
					t.Errorf("user %d: %+v", u, r)
				}
			}()
		}
	}
	wg.Wait()
	if n := len(queued["203.0.113.0/24"]); n != 3 {
		t.Errorf("network 203.0.113.0/24 got %d units, want exactly 3", n)
	}
	if n := len(queued["2001:db8:1::/48"]); n != 3 {
		t.Errorf("network 2001:db8:1::/48 got %d units, want exactly 3", n)
	}
	if n := len(queued[""]); n != 10 {
		t.Errorf("accounts without a network got %d units, want 10 (one each)", n)
	}
	t.Logf("refused per network: %v", refused)
	checkNetworks(t, ctx, s, 33, map[string]int64{"203.0.113.0/24": 3, "2001:db8:1::/48": 3})
	c, _ := s.Counters(ctx, 33)
	if c.Reserved != 16 || c.StockLeft != 84 || c.OutboxPending != 16 {
		t.Errorf("counters %+v, want 16 reserved, 84 left, 16 in the outbox", c)
	}
}

// TestMaxPerNetworkRelease: a failed order's release gives its network's
// slot back exactly once, however often it is called; a retried request id
// never counts twice.
func TestMaxPerNetworkRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.LoadItem(ctx, eligibleItem(34, 10, 0, 2), nil, nil); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	const net = "192.0.2.0/24"
	reserve := func(u int64, req string) stock.Reservation {
		t.Helper()
		r, err := s.Reserve(ctx, 34, account(u, old, net), req, "o-"+req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := reserve(1, "a"); r.Outcome != stock.Queued {
		t.Fatalf("first: %+v", r)
	}
	for range 3 { // the same request again: its first answer, counted once
		if r := reserve(1, "a"); r.Outcome != stock.Queued || r.OrderRef != "o-a" {
			t.Fatalf("retry: %+v", r)
		}
	}
	checkNetworks(t, ctx, s, 34, map[string]int64{net: 1})
	if r := reserve(2, "b"); r.Outcome != stock.Queued {
		t.Fatalf("second: %+v", r)
	}
	if r := reserve(3, "c"); r.Outcome != stock.NotEligible || r.Reason != stock.ReasonNetwork {
		t.Fatalf("third of the network: %+v, want not_eligible network", r)
	}
	for i := range 3 {
		ok, err := s.Release(ctx, 34, 1, "o-a")
		if err != nil || ok != (i == 0) {
			t.Fatalf("release #%d = %v, %v", i+1, ok, err)
		}
	}
	checkNetworks(t, ctx, s, 34, map[string]int64{net: 1})
	if r := reserve(3, "c2"); r.Outcome != stock.Queued {
		t.Fatalf("after the release: %+v, want queued", r)
	}
	if r := reserve(4, "d"); r.Outcome != stock.NotEligible {
		t.Fatalf("network full again: %+v", r)
	}
	checkNetworks(t, ctx, s, 34, map[string]int64{net: 2})
	for _, u := range []int64{2, 3} {
		ref, _, _ := s.Buyer(ctx, 34, u)
		if ok, err := s.Release(ctx, 34, u, ref); !ok || err != nil {
			t.Fatalf("release of user %d: %v %v", u, ok, err)
		}
	}
	checkNetworks(t, ctx, s, 34, map[string]int64{}) // a count that reaches 0 is removed
}

// TestMaxPerNetworkBlindRetries: accounts of one network race through a
// proxy that drops Redis replies on and off, so go-redis resends scripts
// that already ran, and every caller resends its own request id until it
// gets an answer. The network still gets exactly max_per_network units.
func TestMaxPerNetworkBlindRetries(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	s := stock.New(f.Client, f.Prefix)
	direct := stock.New(f.Direct, f.Prefix)
	ctx := context.Background()
	if err := s.LoadItem(ctx, eligibleItem(35, 50, 0, 3), nil, nil); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	const net = "198.51.100.0/24"
	stop := make(chan struct{})
	var flap sync.WaitGroup
	flap.Add(1)
	go func() { // replies dropped 150 ms of every 400
		defer flap.Done()
		for {
			f.Proxy.DropReplies(true)
			select {
			case <-stop:
				f.Proxy.DropReplies(false)
				return
			case <-time.After(150 * time.Millisecond):
			}
			f.Proxy.DropReplies(false)
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	var mu sync.Mutex
	queued := map[int64]string{}
	var wg sync.WaitGroup
	for u := int64(1); u <= 50; u++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(u%10) * 40 * time.Millisecond)
			req := fmt.Sprint("q-", u)
			for try := 0; ; try++ {
				r, err := s.Reserve(ctx, 35, account(u, old, net), req, fmt.Sprint("o-", u, "-", try))
				if err != nil {
					if try > 50 {
						t.Errorf("user %d: no answer after %d tries: %v", u, try, err)
						return
					}
					continue // blind retry, same request id
				}
				if r.Outcome == stock.Queued {
					mu.Lock()
					queued[u] = r.OrderRef
					mu.Unlock()
				} else if r.Outcome != stock.NotEligible {
					t.Errorf("user %d: %+v", u, r)
				}
				return
			}
		}()
	}
	wg.Wait()
	close(stop)
	flap.Wait()
	if f.Proxy.Dropped() == 0 {
		t.Fatal("no reply was dropped: the test tested nothing")
	}
	if len(queued) != 3 {
		t.Errorf("network got %d units (%v), want exactly 3", len(queued), queued)
	}
	checkNetworks(t, ctx, direct, 35, map[string]int64{net: 3})
	buyers, _ := direct.Buyers(ctx, 35)
	if len(buyers) != 3 {
		t.Errorf("buyers %v, want 3", buyers)
	}
	for u, ref := range queued {
		if buyers[u] != ref {
			t.Errorf("user %d told %s, holds %q", u, ref, buyers[u])
		}
	}
	t.Logf("reply bytes dropped: %d", f.Proxy.Dropped())
}

// TestMaxPerNetworkAfterRedisLoss: Redis lost the item (LoadItem) or came
// back stale (Reseed): the per-network counts are counted again from the
// buyers PostgreSQL holds plus those Redis still holds, so the network
// cannot buy past its limit after the loss.
func TestMaxPerNetworkAfterRedisLoss(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	s := stock.New(rdb, prefix)
	it := eligibleItem(36, 10, 0, 2)
	old := time.Now().Add(-time.Hour)
	const a, b = "203.0.113.0/24", "192.0.2.0/24"
	// Lost entirely: two stored orders of network a, one of b, one of an
	// account without a network.
	sold := map[int64]string{1: "o1", 2: "o2", 3: "o3", 4: "o4"}
	nets := map[int64]string{1: a, 2: a, 3: b}
	if err := s.LoadItem(ctx, it, sold, nets); err != nil {
		t.Fatal(err)
	}
	checkNetworks(t, ctx, s, 36, map[string]int64{a: 2, b: 1})
	if r, _ := s.Reserve(ctx, 36, account(5, old, a), "q5", "o5"); r.Outcome != stock.NotEligible {
		t.Fatalf("network a after the loss: %+v, want not_eligible", r)
	}
	if r, _ := s.Reserve(ctx, 36, account(6, old, b), "q6", "o6"); r.Outcome != stock.Queued {
		t.Fatalf("network b after the loss: %+v, want queued", r)
	}
	// The release of a re-seeded buyer gives its network's slot back.
	if ok, err := s.Release(ctx, 36, 1, "o1"); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	checkNetworks(t, ctx, s, 36, map[string]int64{a: 1, b: 2})
	// Loading again while counters live changes nothing.
	if err := s.LoadItem(ctx, it, sold, nets); err != nil {
		t.Fatal(err)
	}
	checkNetworks(t, ctx, s, 36, map[string]int64{a: 1, b: 2})

	// Stale: Redis holds buyer 7 (network b, not stored yet) and its
	// counts were wiped; PostgreSQL holds 1..4 and 6. The reseed adds
	// what Redis lacks and counts every network again.
	if r, _ := s.Reserve(ctx, 36, account(7, old, a), "q7", "o7"); r.Outcome != stock.Queued {
		t.Fatalf("user 7: %+v", r)
	}
	k := prefix + "item:{36}:"
	if err := rdb.Del(ctx, k+"networks").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HDel(ctx, k+"buyers", "2", "6").Err(); err != nil { // lost from the stale copy
		t.Fatal(err)
	}
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	run := ""
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "run_id:"); ok {
			run = v
		}
	}
	stored := map[int64]string{1: "o1", 2: "o2", 3: "o3", 4: "o4", 6: "o6"}
	storedNets := map[int64]string{1: a, 2: a, 3: b, 6: b}
	if err := s.Reseed(ctx, run, []stock.ReseedItem{{Item: it, Sold: stored, Networks: storedNets}}); err != nil {
		t.Fatal(err)
	}
	// Buyer 1 was released in Redis but PostgreSQL still has it (as in a
	// stale copy); buyers: 1,2 (a, stored), 7 (a, Redis), 3,6 (b), 4.
	checkNetworks(t, ctx, s, 36, map[string]int64{a: 3, b: 2})
	c, _ := s.Counters(ctx, 36)
	if c.Reserved != 6 || c.StockLeft != 4 {
		t.Errorf("after the reseed: %+v, want 6 reserved, 4 left", c)
	}
	if r, _ := s.Reserve(ctx, 36, account(8, old, a), "q8", "o8"); r.Outcome != stock.NotEligible {
		t.Fatalf("network a after the reseed: %+v, want not_eligible", r)
	}
}
