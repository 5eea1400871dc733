package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"seckill"
)

var _ seckill.OrderHandler = (*Worker)(nil)

type fakeStore struct {
	mu       sync.Mutex
	poison   map[string]bool
	batchErr error
	batches  int
	single   []string
	stored   map[string]bool
	failed   []string
	failErr  error
	calls    []string
}

func (s *fakeStore) InsertOrders(_ context.Context, msgs []seckill.OrderMessage) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches++
	if s.batchErr != nil {
		return 0, s.batchErr
	}
	for _, m := range msgs {
		if s.poison[m.OrderRef] {
			return 0, seckill.Errorf(seckill.EInvalid, "row error")
		}
	}
	var n int64
	for _, m := range msgs {
		if !s.stored[m.OrderRef] {
			s.stored[m.OrderRef] = true
			n++
		}
	}
	return n, nil
}

func (s *fakeStore) InsertOrder(_ context.Context, m seckill.OrderMessage) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.single = append(s.single, m.OrderRef)
	if s.poison[m.OrderRef] {
		return false, seckill.Errorf(seckill.EInvalid, "row error")
	}
	if s.stored[m.OrderRef] {
		return false, nil
	}
	s.stored[m.OrderRef] = true
	return true, nil
}

func (s *fakeStore) RecordFailed(_ context.Context, m seckill.OrderMessage, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "record:"+m.OrderRef+":"+reason)
	if s.failErr != nil {
		return s.failErr
	}
	s.failed = append(s.failed, m.OrderRef)
	return nil
}

type fakeReleaser struct {
	st    *fakeStore
	err   error
	calls int
}

func (r *fakeReleaser) Release(_ context.Context, itemID, userID int64, ref string) (bool, error) {
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	r.calls++
	r.st.calls = append(r.st.calls, fmt.Sprintf("release:%d:%d:%s", itemID, userID, ref))
	return r.err == nil, r.err
}

func newFake() *fakeStore {
	return &fakeStore{poison: map[string]bool{}, stored: map[string]bool{}}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func msgs(n int) []seckill.OrderMessage {
	out := make([]seckill.OrderMessage, n)
	for i := range out {
		out[i] = seckill.OrderMessage{OrderRef: fmt.Sprintf("r%d", i), UserID: int64(i + 1), ItemID: 7}
	}
	return out
}

func TestStoreBatchPath(t *testing.T) {
	st := newFake()
	w := New(st, nil, quiet())
	errs := w.Store(context.Background(), msgs(10))
	if len(errs) != 10 {
		t.Fatalf("got %d errors, want 10", len(errs))
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if st.batches != 1 || len(st.single) != 0 || len(st.stored) != 10 {
		t.Fatalf("batches=%d single=%d stored=%d", st.batches, len(st.single), len(st.stored))
	}
}

func TestStoreFallbackIsolatesPoison(t *testing.T) {
	st := newFake()
	st.poison["r3"] = true
	w := New(st, nil, quiet())
	ms := msgs(6)
	errs := w.Store(context.Background(), ms)
	for i, err := range errs {
		if (i == 3) != (err != nil) {
			t.Fatalf("message %d: err=%v", i, err)
		}
	}
	if st.batches != 1 || len(st.single) != 6 || len(st.stored) != 5 {
		t.Fatalf("batches=%d single=%d stored=%d", st.batches, len(st.single), len(st.stored))
	}
	// Already stored counts as success (idempotent redelivery).
	errs = w.Store(context.Background(), ms[:3])
	if slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
		t.Fatalf("redelivery of stored messages failed: %v", errs)
	}
}

func TestStoreBatchErrorEverywhere(t *testing.T) {
	st := newFake()
	st.poison["r0"], st.poison["r1"] = true, true
	w := New(st, nil, quiet())
	errs := w.Store(context.Background(), msgs(2))
	if errs[0] == nil || errs[1] == nil {
		t.Fatalf("want both failed, got %v", errs)
	}
}

// An outage is waited out, never nacked: nacks would spend the delivery
// limit of good orders.
func TestStoreRetriesThroughOutage(t *testing.T) {
	st := newFake()
	st.batchErr = errors.New("db down")
	w := New(st, nil, quiet())
	// The outage ends 300 ms after the first failed batch (timed from
	// the start instead, a Store call late by 300 ms on a busy machine
	// found no outage at all: one batch).
	go func() {
		for {
			st.mu.Lock()
			n := st.batches
			st.mu.Unlock()
			if n > 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		st.mu.Lock()
		st.batchErr = nil
		st.mu.Unlock()
	}()
	errs := w.Store(context.Background(), msgs(4))
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if st.batches < 2 || len(st.single) != 0 || len(st.stored) != 4 {
		t.Fatalf("batches=%d single=%d stored=%d", st.batches, len(st.single), len(st.stored))
	}
}

func TestStoreOutageUntilShutdown(t *testing.T) {
	st := newFake()
	st.batchErr = errors.New("db down")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	errs := New(st, nil, quiet()).Store(ctx, msgs(2))
	if errs[0] == nil || errs[1] == nil || len(st.single) != 0 {
		t.Fatalf("want both failed without fallback, got %v (single %d)", errs, len(st.single))
	}
}

func TestStoreCancelledContextSkipsFallback(t *testing.T) {
	st := newFake()
	st.batchErr = context.Canceled
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs := New(st, nil, quiet()).Store(ctx, msgs(3))
	if len(st.single) != 0 {
		t.Fatalf("fallback ran with a cancelled context")
	}
	for _, err := range errs {
		if err == nil {
			t.Fatal("want errors")
		}
	}
}

func TestFailedRecordsThenReleases(t *testing.T) {
	st := newFake()
	st.poison["x"] = true
	rel := &fakeReleaser{st: st}
	w := New(st, rel, quiet())
	m := seckill.OrderMessage{OrderRef: "x", UserID: 5, ItemID: 9}
	if err := w.Failed(context.Background(), m, "delivery_limit"); err != nil {
		t.Fatal(err)
	}
	want := []string{"record:x:delivery_limit: invalid: row error", "release:9:5:x"}
	if !slices.Equal(st.calls, want) {
		t.Fatalf("calls %v, want %v", st.calls, want)
	}
}

// A dead letter whose order can be stored (an earlier delivery was stored
// and its ack lost, or redeliveries spent the limit) is not a failure: its
// unit must stay sold.
func TestFailedStorableOrderIsNotFailed(t *testing.T) {
	st := newFake()
	rel := &fakeReleaser{st: st}
	m := seckill.OrderMessage{OrderRef: "ok", UserID: 5, ItemID: 9}
	for range 2 { // stored now, then already stored
		if err := New(st, rel, quiet()).Failed(context.Background(), m, "delivery_limit"); err != nil {
			t.Fatal(err)
		}
	}
	if !st.stored["ok"] || len(st.failed) != 0 || rel.calls != 0 {
		t.Fatalf("stored=%v failed=%v releases=%d", st.stored["ok"], st.failed, rel.calls)
	}
}

func TestFailedRecordErrorDoesNotRelease(t *testing.T) {
	st := newFake()
	st.poison["x"] = true
	st.failErr = errors.New("db down")
	rel := &fakeReleaser{st: st}
	w := New(st, rel, quiet())
	if err := w.Failed(context.Background(), seckill.OrderMessage{OrderRef: "x", UserID: 5, ItemID: 9}, "r"); err == nil {
		t.Fatal("want error")
	}
	if rel.calls != 0 {
		t.Fatal("released although the failure was not recorded")
	}
}

func TestFailedReleaseErrorIsReturned(t *testing.T) {
	st := newFake()
	st.poison["x"] = true
	rel := &fakeReleaser{st: st, err: errors.New("redis down")}
	w := New(st, rel, quiet())
	if err := w.Failed(context.Background(), seckill.OrderMessage{OrderRef: "x", UserID: 5, ItemID: 9}, "r"); err == nil {
		t.Fatal("want error so the dead message is retried")
	}
	if len(st.failed) != 1 {
		t.Fatal("failure not recorded")
	}
}

func TestFailedMalformedAndNilReleaser(t *testing.T) {
	st := newFake()
	rel := &fakeReleaser{st: st}
	if err := New(st, rel, quiet()).Failed(context.Background(), seckill.OrderMessage{OrderRef: "bad"}, "malformed"); err != nil {
		t.Fatal(err)
	}
	if rel.calls != 0 || len(st.failed) != 1 {
		t.Fatalf("release calls %d, recorded %d", rel.calls, len(st.failed))
	}
	st.poison["y"] = true
	if err := New(st, nil, quiet()).Failed(context.Background(), seckill.OrderMessage{OrderRef: "y", UserID: 1, ItemID: 1}, "r"); err != nil {
		t.Fatal(err)
	}
}
