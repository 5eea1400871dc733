package backoff

import (
	"testing"
	"time"
)

func TestDoublesToMaxAndResets(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("wait %d: %v, want %v", i, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != 100*time.Millisecond {
		t.Fatalf("after Reset: %v, want 100ms", got)
	}
}

func TestJitterStaysInItsBand(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Second, Jitter: 0.2}
	for range 1000 {
		if d := b.Next(); d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("wait %v outside 1s ±20%%", d)
		}
	}
}
