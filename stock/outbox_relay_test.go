package stock_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/rkeys"
	"seckill/internal/testenv"
	"seckill/stock"
)

// reserveN loads item id and reserves units for users 1..n (refs ref-ID-U).
func reserveN(t *testing.T, s *stock.Store, id int64, n int) {
	t.Helper()
	ctx := context.Background()
	if err := s.LoadItem(ctx, liveItem(id, 100), nil, nil); err != nil {
		t.Fatal(err)
	}
	for u := int64(1); u <= int64(n); u++ {
		if _, err := s.Reserve(ctx, id, seckill.Account{ID: u}, "q", fmt.Sprintf("ref-%d-%d", id, u)); err != nil {
			t.Fatal(err)
		}
	}
}

func outboxKey(prefix string, id int64) string { return rkeys.Space(prefix).Item(id).Outbox }

// strand reads every new entry of an item's outbox under consumer with ">"
// and forgets the reply: exactly what a lost reply (or a retried read)
// leaves behind.
func strand(t *testing.T, rdb *redis.Client, prefix string, id int64, consumer string) int {
	t.Helper()
	res, err := rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{
		Group: "relay", Consumer: consumer, Streams: []string{outboxKey(prefix, id), ">"}, Count: 1000, Block: -1,
	}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(res[0].Messages)
}

func refs(es []seckill.OutboxEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Order.OrderRef)
	}
	sort.Strings(out)
	return out
}

// A running relay takes back its own entries stranded by a lost read reply
// once they are idle longer than ClaimIdle, not before.
func TestOutboxTakesBackOwnStrandedEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	s := stock.New(rdb, prefix)
	reserveN(t, s, 1, 0)
	ob := s.RelayOutbox("relay-a", stock.OutboxOptions{ClaimIdle: 300 * time.Millisecond, StealAfter: time.Hour})
	if got, err := ob.Claim(ctx, 100); err != nil || len(got) != 0 {
		t.Fatalf("first claim: %d %v", len(got), err) // restart recovery done: nothing
	}
	reserveN(t, s, 1, 3)
	if n := strand(t, rdb, prefix, 1, "relay-a"); n != 3 {
		t.Fatalf("stranded %d, want 3", n)
	}
	if got, err := ob.Claim(ctx, 100); err != nil || len(got) != 0 {
		t.Fatalf("claimed %d (%v) before ClaimIdle", len(got), err)
	}
	time.Sleep(350 * time.Millisecond)
	got, err := ob.Claim(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(refs(got)) != "[ref-1-1 ref-1-2 ref-1-3]" {
		t.Fatalf("taken back %v", refs(got))
	}
	if st := ob.Stats(); st.Reclaimed != 3 || st.Stolen != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Taken back, so no longer idle: not returned again at once.
	if again, _ := ob.Claim(ctx, 100); len(again) != 0 {
		t.Fatalf("claimed %d again", len(again))
	}
	if err := ob.Done(ctx, got); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Counters(ctx, 1); c.OutboxPending != 0 {
		t.Fatalf("outbox %d", c.OutboxPending)
	}
}

// A stream that answers with an error does not stop the others: Claim
// returns what it read together with the error.
func TestOutboxClaimPartialResultsWithError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	s := stock.New(rdb, prefix)
	reserveN(t, s, 1, 5)
	bogus := outboxKey(prefix, 9)
	if err := rdb.Set(ctx, bogus, "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.SAdd(ctx, rkeys.Space(prefix).Outboxes(), bogus).Err(); err != nil {
		t.Fatal(err)
	}
	ob := s.RelayOutbox("relay-a", stock.OutboxOptions{})
	var all []seckill.OutboxEntry
	for i := 0; i < 3; i++ {
		got, err := ob.Claim(ctx, 100)
		if err == nil {
			t.Fatalf("claim %d: no error from the bogus stream", i)
		}
		all = append(all, got...)
	}
	if fmt.Sprint(refs(all)) != "[ref-1-1 ref-1-2 ref-1-3 ref-1-4 ref-1-5]" {
		t.Fatalf("claimed %v", refs(all))
	}
	if st := ob.Stats(); st.ClaimErrors != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// The heartbeat exists while Keep runs and is gone after; the ages of the
// oldest pending and unread entries are measured.
func TestOutboxHeartbeatAndAges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	s := stock.New(rdb, prefix)
	reserveN(t, s, 1, 4)
	if n := strand(t, rdb, prefix, 1, "relay-x"); n != 4 {
		t.Fatal(n)
	}
	time.Sleep(200 * time.Millisecond)
	reserveN(t, s, 1, 6) // users 5 and 6 are new: unread
	ob := s.RelayOutbox("relay-k", stock.OutboxOptions{StealAfter: 7 * time.Second, HeartbeatTTL: 3 * time.Second})
	kctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); ob.Keep(kctx) }()
	testenv.Eventually(t, 5*time.Second, "heartbeat", func() bool {
		live, err := s.LiveRelays(ctx)
		return err == nil && live["relay-k"].StealAfterMs == 7000
	})
	if ttl := rdb.PTTL(ctx, rkeys.Space(prefix).RelayAlive("relay-k")).Val(); ttl <= 0 || ttl > 3*time.Second {
		t.Fatalf("heartbeat ttl %v", ttl)
	}
	testenv.Eventually(t, 5*time.Second, "ages", func() bool { return ob.Ages().OldestPending > 0 })
	a := ob.Ages()
	if a.OldestPending < 200*time.Millisecond || a.OldestUnread <= 0 || a.OldestUnread >= a.OldestPending {
		t.Fatalf("ages %+v", a)
	}
	sa, err := s.OutboxAges(ctx, 1)
	if err != nil || sa.OldestPending < 200*time.Millisecond || sa.OldestUnread <= 0 || sa.Oldest() != sa.OldestPending {
		t.Fatalf("store ages %+v %v", sa, err)
	}
	st, err := s.OutboxState(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pending) != 4 || len(st.Unread) != 2 || st.Pending[0].Consumer != "relay-x" || st.Pending[0].Ref != "ref-1-1" {
		t.Fatalf("state %+v", st)
	}
	stop()
	<-done
	if live, err := s.LiveRelays(ctx); err != nil || len(live) != 0 {
		t.Fatalf("heartbeats after stop: %v %v", live, err)
	}
}

// RequeueStranded appends a stranded entry again and removes the old one,
// once: a second run (a blind retry) does nothing; an entry not idle long
// enough is left alone.
func TestRequeueStranded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	s := stock.New(rdb, prefix)
	reserveN(t, s, 1, 2)
	strand(t, rdb, prefix, 1, "relay-a")
	st, _ := s.OutboxState(ctx, 1)
	if len(st.Pending) != 2 {
		t.Fatalf("pending %d", len(st.Pending))
	}
	old := st.Pending[0].ID
	if id, err := s.RequeueStranded(ctx, 1, old, time.Hour); err != nil || id != "" {
		t.Fatalf("requeued a fresh entry: %q %v", id, err)
	}
	time.Sleep(120 * time.Millisecond)
	id, err := s.RequeueStranded(ctx, 1, old, 100*time.Millisecond)
	if err != nil || id == "" {
		t.Fatalf("requeue: %q %v", id, err)
	}
	if again, err := s.RequeueStranded(ctx, 1, old, 100*time.Millisecond); err != nil || again != "" {
		t.Fatalf("second requeue: %q %v", again, err)
	}
	st, _ = s.OutboxState(ctx, 1)
	if len(st.Pending) != 1 || len(st.Unread) != 1 || st.Unread[0] != id {
		t.Fatalf("state after requeue %+v", st)
	}
	if c, _ := s.Counters(ctx, 1); c.OutboxPending != 2 {
		t.Fatalf("outbox holds %d, want 2", c.OutboxPending)
	}
	msgs := rdb.XRange(ctx, outboxKey(prefix, 1), id, id).Val()
	if len(msgs) != 1 || msgs[0].Values["ref"] != "ref-1-1" || msgs[0].Values["user"] != "1" {
		t.Fatalf("requeued entry %+v", msgs)
	}
}

// The outbox hands out typed orders, read from the stream's fields as the
// reservation script writes them (the format of entries already in a
// stream), and keeps an entry whose fields make no order, with its fields.
func TestOutboxTypedEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	s := stock.New(rdb, prefix)
	if err := s.LoadItem(ctx, liveItem(5, 10), nil, nil); err != nil {
		t.Fatal(err)
	}
	// An entry written by hand in the stream's field layout (an id of
	// long ago), one reserved now, and one whose fields make no order.
	good, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: outboxKey(prefix, 5), ID: "1700000000123-0",
		Values: []string{"ref", "ref-old", "user", "9", "item", "5", "req", "req-old"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	if _, err := s.Reserve(ctx, 5, seckill.Account{ID: 77}, "req-77", "ref-77"); err != nil {
		t.Fatal(err)
	}
	bad, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: outboxKey(prefix, 5),
		Values: []string{"ref", "ref-bad", "user", "nine", "item", "5"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	ob := s.Outbox("typed", time.Minute)
	es, err := ob.Claim(ctx, 10)
	if err != nil || len(es) != 3 {
		t.Fatalf("claim: %d entries, %v", len(es), err)
	}
	byID := map[string]seckill.OutboxEntry{}
	for _, e := range es {
		if e.Stream != outboxKey(prefix, 5) {
			t.Fatalf("entry %s of stream %q", e.ID, e.Stream)
		}
		byID[e.ID] = e
	}
	old := byID[good]
	want := seckill.OrderMessage{OrderRef: "ref-old", UserID: 9, ItemID: 5, RequestID: "req-old", ReservedAt: time.UnixMilli(1700000000123).UTC()}
	if old.Err != nil || old.Order != want || old.Fields != nil {
		t.Fatalf("hand-written entry: %+v, want order %+v", old, want)
	}
	b := byID[bad]
	if b.Err == nil || fmt.Sprint(b.Fields) != "map[item:5 ref:ref-bad user:nine]" {
		t.Fatalf("malformed entry: %+v", b)
	}
	for id, e := range byID {
		if id == good || id == bad {
			continue
		}
		m := e.Order
		if e.Err != nil || m.OrderRef != "ref-77" || m.UserID != 77 || m.ItemID != 5 || m.RequestID != "req-77" || m.ReservedAt.Before(before) || m.ReservedAt.After(time.Now().Add(time.Second)) {
			t.Fatalf("reserved entry: %+v", e)
		}
	}
	if err := ob.Done(ctx, es); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.XLen(ctx, outboxKey(prefix, 5)).Result(); n != 0 {
		t.Fatalf("outbox holds %d entries after Done, want 0", n)
	}
}
