package httpapi

import (
	"context"
	"testing"
	"time"
)

func TestReadyCacheKeepsTheVerdict(t *testing.T) {
	t.Parallel()
	calls, ok := 0, false
	r := NewReadyCache(func(context.Context) bool { calls++; return ok })
	ctx := context.Background()
	for range 10 {
		if r.Ready(ctx) {
			t.Fatal("ready")
		}
	}
	if calls != 1 {
		t.Fatalf("%d checks for 10 probes within UnreadyTTL, want 1", calls)
	}
	// Not ready is asked again after UnreadyTTL: a process that just
	// became ready says so at once.
	ok = true
	time.Sleep(UnreadyTTL + 10*time.Millisecond)
	for range 10 {
		if !r.Ready(ctx) {
			t.Fatal("not ready after UnreadyTTL")
		}
	}
	if calls != 2 {
		t.Fatalf("%d checks, want 2", calls)
	}
	// Ready is kept for ReadyTTL, unless invalidated (draining).
	ok = false
	if !r.Ready(ctx) || calls != 2 {
		t.Fatalf("ready verdict not kept (calls %d)", calls)
	}
	r.Invalidate()
	if r.Ready(ctx) || calls != 3 {
		t.Fatalf("invalidated verdict kept (calls %d)", calls)
	}
	if a, b := NewInstanceID(), NewInstanceID(); a == b || len(a) != 16 {
		t.Fatal("instance ids")
	}
}
