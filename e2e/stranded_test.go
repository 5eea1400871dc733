package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/faultproxy"
	"seckill/internal/rkeys"
	"seckill/internal/testenv"
	"seckill/queue"
	"seckill/stock"
)

// lossyRelay is a relay whose commands that a retry would spoil
// (XREADGROUP >, XCLAIM) go through a proxy that can drop Redis's replies,
// without retries, as `seckill backend` and `seckill relay` send them.
type lossyRelay struct {
	proxy  *faultproxy.Proxy
	relay  *queue.Relay
	outbox *stock.Outbox
	stop   func()
}

func (s *stack) startLossyRelay(id string, claimIdle time.Duration) *lossyRelay {
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
	opt, err := redis.ParseURL(s.redisURL)
	if err != nil {
		s.t.Fatal(err)
	}
	opt.Addr, opt.MaxRetries, opt.ReadTimeout, opt.PoolSize = p.Addr(), -1, 300*time.Millisecond, 4
	reads := redis.NewClient(opt)
	s.t.Cleanup(func() { _ = reads.Close() })
	ob := s.st.RelayOutbox(id, stock.OutboxOptions{ClaimIdle: claimIdle, StealAfter: time.Hour, Reads: reads})
	r := queue.NewRelay(queue.RelayConfig{URL: s.amqpURL, Topology: s.topology(), Logger: quietLog(s.t), HoldRefresh: claimIdle / 3}, ob)
	return &lossyRelay{proxy: p, relay: r, outbox: ob, stop: run(s.t, r.Run)}
}

// strandOne strands one order under the relay's own name: see strandVia.
func (s *stack) strandOne(lr *lossyRelay, item int64, users []int64, accepted map[int64]string) (string, int) {
	s.t.Helper()
	return s.strandVia(lr.proxy, lr.outbox.Consumer(), item, users, accepted, s.reserveOne)
}

func (s *stack) reserveOne(item, user int64) string {
	s.t.Helper()
	r, err := s.svc.Reserve(context.Background(), item, seckill.Account{ID: user}, fmt.Sprint("req-", user))
	if err != nil {
		s.t.Fatal(err)
	}
	return r.OrderRef
}

// strandVia reserves one unit per user, each while the relay's read replies
// are dropped, until an entry is pending under the relay's own name (its
// read reached Redis, its reply was lost). It returns that order's ref and
// how many users it used; accepted gets every order.
//
// One attempt can miss: when a read goes out after the drop began and
// before the reservation, its empty reply is dropped, the client closes the
// connection, and a new one cannot even say HELLO, so no read reaches
// Redis until the drop ends (the order is then read and stored normally).
func (s *stack) strandVia(p *faultproxy.Proxy, consumer string, item int64, users []int64, accepted map[int64]string, reserve func(item, user int64) string) (string, int) {
	s.t.Helper()
	ctx := context.Background()
	for i, user := range users {
		before := p.Dropped()
		p.DropReplies(true)
		ref := reserve(item, user)
		accepted[user] = ref
		deadline := time.Now().Add(1500 * time.Millisecond)
		for time.Now().Before(deadline) {
			st, err := s.st.OutboxState(ctx, item)
			if err != nil {
				s.t.Fatal(err)
			}
			for _, pe := range st.Pending {
				if pe.Ref == ref && pe.Consumer == consumer {
					// The read reached Redis; its reply may still be on
					// its way: keep dropping until the proxy ate some.
					for w := time.Now().Add(2 * time.Second); p.Dropped() == before && time.Now().Before(w); {
						time.Sleep(5 * time.Millisecond)
					}
					p.DropReplies(false)
					return ref, i + 1
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		p.DropReplies(false)
		s.t.Logf("attempt %d: no read reached Redis during the drop; trying again", i+1)
		// Start the next attempt only once the relay reads normally again
		// (its connections re-made): the missed order left the outbox.
		for wait := time.Now().Add(10 * time.Second); time.Now().Before(wait); time.Sleep(20 * time.Millisecond) {
			st, err := s.st.OutboxState(ctx, item)
			if err != nil {
				s.t.Fatal(err)
			}
			if len(st.Pending) == 0 && len(st.Unread) == 0 {
				break
			}
		}
	}
	s.t.Fatalf("no order stranded under %s in %d attempts", consumer, len(users))
	return "", 0
}

// TestRelayTakesBackReadWithLostReply: the relay's XREADGROUP > reaches
// Redis, its reply is lost (faultproxy). The entry sits pending under the
// relay's own name; the running relay takes it back after --claim-idle and
// publishes it: stored exactly once, within a bound, with no restart.
func TestRelayTakesBackReadWithLostReply(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.createItem(20, "none")
	users := s.users(12)
	s.startWorker(s.amqpURL)
	const claimIdle = time.Second
	lr := s.startLossyRelay("relay-lossy", claimIdle)
	accepted := s.reserveAll(item.ID, users[:1])
	s.waitOrders(item.ID, 1, 20*time.Second)

	ref, used := s.strandOne(lr, item.ID, users[1:11], accepted)
	stranded := time.Now()
	if lr.proxy.Dropped() == 0 {
		t.Fatal("no reply was dropped")
	}
	// Bound: ClaimIdle + one scan period (ClaimIdle/2) + publish and store.
	s.waitOrders(item.ID, int64(1+used), claimIdle+claimIdle/2+3*time.Second)
	took := time.Since(stranded)
	if n, _ := s.db.OrderRefs(context.Background(), item.ID); n[users[used]] != ref {
		t.Fatalf("stranded order %s not stored: %v", ref, n)
	}
	obs, rs := lr.outbox.Stats(), lr.relay.Stats()
	t.Logf("stranded order stored %v after the lost reply; outbox %+v; relay %+v", took.Round(time.Millisecond), obs, rs)
	if obs.Reclaimed < 1 || rs.ClaimErrors < 1 {
		t.Fatalf("outbox %+v relay %+v: want a failed read and a take-back", obs, rs)
	}
	// The relay still works normally afterwards.
	for u, r := range s.reserveAll(item.ID, users[11:]) {
		accepted[u] = r
	}
	s.waitOrders(item.ID, int64(len(accepted)), 20*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)
}

// reconcileJSON runs the seckill binary's reconcile and returns its exit
// code and JSON answer.
func (s *stack) reconcileJSON(args ...string) (int, map[string]any) {
	s.t.Helper()
	cmd := exec.Command(binary, append([]string{"reconcile", "--json", "--settle", "0s"}, args...)...)
	cmd.Env = s.env(s.amqpURL)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		s.t.Fatalf("reconcile output %q (stderr %q): %v", out.String(), errb.String(), err)
	}
	return code, m
}

func itemReport(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	items := m["report"].(map[string]any)["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("report of %d items", len(items))
	}
	return items[0].(map[string]any)
}

// TestReconcileReportsAndRepairsStranded: a relay that is alive (heartbeat)
// but does not take back its own entries (claim idle of an hour: the relay
// of issue 10) leaves an order stranded after a lost read reply. reconcile
// reports it as stranded (exit 2), repairs it (append again + XACK/XDEL in
// one script), the live relay publishes it, and the order is stored once.
func TestReconcileReportsAndRepairsStranded(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.createItem(20, "none")
	users := s.users(11)
	s.startWorker(s.amqpURL)
	lr := s.startLossyRelay("relay-stuck", time.Hour)
	accepted := s.reserveAll(item.ID, users[:1])
	s.waitOrders(item.ID, 1, 20*time.Second)
	ref, used := s.strandOne(lr, item.ID, users[1:], accepted)
	s.waitOrders(item.ID, int64(used), 20*time.Second) // the attempts that missed
	time.Sleep(1200 * time.Millisecond)                // idle past --stranded-after
	items := fmt.Sprint(item.ID)

	code, m := s.reconcileJSON("--items", items, "--stranded-after", "1s", "--dry-run")
	it := itemReport(t, m)
	alive := fmt.Sprint(m["report"].(map[string]any)["relays_alive"])
	if code != 2 || m["ok"] != false || fmt.Sprint(it["stranded"]) != "["+ref+"]" || alive != "[relay-stuck]" {
		t.Fatalf("dry run: exit %d, %v", code, m)
	}
	if n, _ := s.db.CountOrders(context.Background(), item.ID); n != int64(used) {
		t.Fatalf("%d orders stored while one is stranded, want %d", n, used)
	}

	code, m = s.reconcileJSON("--items", items, "--stranded-after", "1s")
	it = itemReport(t, m)
	if code != 2 || it["repaired_stranded"] != float64(1) {
		t.Fatalf("repair: exit %d, %v", code, m)
	}
	s.waitOrders(item.ID, int64(used+1), 10*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)
	if code, m = s.reconcileJSON("--items", items, "--stranded-after", "1s"); code != 0 || m["ok"] != true {
		t.Fatalf("after repair: exit %d, %v", code, m)
	}
	if obs := lr.outbox.Stats(); obs.Reclaimed != 0 {
		t.Fatalf("the stuck relay took back %d entries itself", obs.Reclaimed)
	}
}

// TestReconcileBacklogIsNotStranded: with no relay alive, entries waiting
// (unread, or pending under a dead relay) are a backlog: exit 3, not a
// mismatch. Stored orders above stock_total are a mismatch (oversold).
func TestReconcileBacklogIsNotStranded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t)
	item := s.createItem(2, "none")
	users := s.users(3)
	accepted := s.reserveAll(item.ID, users[:2])
	// One entry pending under a relay that died after reading it.
	rdb := s.st.Client()
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "relay", Consumer: "relay-dead",
		Streams: []string{rkeys.Space(s.prefix).Item(item.ID).Outbox, ">"}, Count: 1, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	items := fmt.Sprint(item.ID)
	code, m := s.reconcileJSON("--items", items, "--stranded-after", "1s", "--dry-run")
	it := itemReport(t, m)
	if code != 3 || m["ok"] != true || it["waiting"] != float64(2) || it["stranded"] != nil ||
		!strings.Contains(fmt.Sprint(m["waiting_reason"]), "no relay alive") {
		t.Fatalf("backlog: exit %d, %v", code, m)
	}
	// The admin stats show how long orders wait.
	stats, err := s.svc.Stats(ctx, item.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stats.OutboxPending != 2 || stats.OutboxOldestPendingMs < 1200 || stats.OutboxOldestUnreadMs < 1200 ||
		stats.OutboxOldestAgeMs != max(stats.OutboxOldestPendingMs, stats.OutboxOldestUnreadMs) {
		t.Fatalf("stats %+v", stats)
	}
	// The backlog drains once a relay and a worker run; the entry of the
	// dead relay is stolen after --relay-steal-after (1 s here).
	r := queue.NewRelay(queue.RelayConfig{URL: s.amqpURL, Topology: s.topology(), Logger: quietLog(t)},
		s.st.RelayOutbox("relay-new", stock.OutboxOptions{StealAfter: time.Second}))
	run(t, r.Run)
	s.startWorker(s.amqpURL)
	s.waitOrders(item.ID, 2, 20*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)

	// A third order stored behind Redis's back: more orders than units.
	if _, err := s.db.InsertOrder(ctx, seckill.OrderMessage{OrderRef: "extra-order", UserID: users[2], ItemID: item.ID, ReservedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	code, m = s.reconcileJSON("--items", items, "--dry-run")
	if it = itemReport(t, m); code != 2 || it["oversold"] != float64(1) {
		t.Fatalf("oversold: exit %d, %v", code, m)
	}
}

// TestHeldEntriesAreWaitingNotStranded: the relay holds entries it cannot
// get confirmed (RabbitMQ's replies are dropped: a broker that hangs). It
// tells the outbox it holds them, so reconcile reports them as waiting
// (exit 3), not stranded, and the relay does not take them back; once the
// broker answers again they are stored once.
func TestHeldEntriesAreWaitingNotStranded(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.createItem(10, "none")
	users := s.users(3)
	s.startWorker(s.amqpURL)
	u, err := url.Parse(s.amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	viaProxy := *u
	viaProxy.Host = p.Addr()
	ob := s.st.RelayOutbox("relay-held", stock.OutboxOptions{ClaimIdle: time.Second, StealAfter: time.Hour})
	r := queue.NewRelay(queue.RelayConfig{URL: viaProxy.String(), Topology: s.topology(), Logger: quietLog(t), HoldRefresh: 150 * time.Millisecond}, ob)
	run(t, r.Run)
	accepted := s.reserveAll(item.ID, users[:1])
	s.waitOrders(item.ID, 1, 20*time.Second)

	p.DropReplies(true) // publishes reach RabbitMQ, confirms never come back
	for u, ref := range s.reserveAll(item.ID, users[1:]) {
		accepted[u] = ref
	}
	testenv.Eventually(t, 10*time.Second, "two orders published", func() bool { return r.Stats().Published >= 3 })
	time.Sleep(2 * time.Second) // past --stranded-after and ClaimIdle (+ a scan)
	code, m := s.reconcileJSON("--items", fmt.Sprint(item.ID), "--stranded-after", "1s", "--dry-run")
	it := itemReport(t, m)
	if code != 3 || it["stranded"] != nil || it["waiting"] != float64(2) ||
		!strings.Contains(fmt.Sprint(m["waiting_reason"]), "relay alive") {
		t.Fatalf("held entries: exit %d, %v", code, m)
	}
	if n := ob.Stats().Reclaimed; n != 0 {
		t.Fatalf("the relay took back %d entries it holds", n)
	}
	p.DropReplies(false)
	p.CutAll() // the AMQP stream lost bytes: start over
	s.waitOrders(item.ID, 3, 30*time.Second)
	waitOutboxEmpty(t, s, item.ID)
	s.checkFinal(item, accepted)
}
