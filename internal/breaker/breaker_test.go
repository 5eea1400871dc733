package breaker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

var errDown = errors.New("down")

func fail(cb *gobreaker.CircuitBreaker[any], err error) {
	_, _ = cb.Execute(func() (any, error) { return nil, err })
}

func TestOpensAfterConsecutiveFailures(t *testing.T) {
	cb := New("t", Config{ConsecutiveFailures: 3, OpenFor: time.Minute}, func(err error) bool { return errors.Is(err, errDown) }, nil)
	fail(cb, errDown)
	fail(cb, errDown)
	fail(cb, errors.New("a business answer")) // a success: resets the count
	fail(cb, errDown)
	fail(cb, errDown)
	if got := cb.State(); got != gobreaker.StateClosed {
		t.Fatalf("after 2 consecutive failures: %v, want closed", got)
	}
	fail(cb, errDown)
	if got := cb.State(); got != gobreaker.StateOpen {
		t.Fatalf("after 3 consecutive failures: %v, want open", got)
	}
}

func TestCancellationIsNeverAFailure(t *testing.T) {
	cb := New("t", Config{ConsecutiveFailures: 1, OpenFor: time.Minute}, nil, nil)
	for range 100 {
		fail(cb, fmt.Errorf("calling: %w", context.Canceled))
	}
	if got := cb.State(); got != gobreaker.StateClosed {
		t.Fatalf("after 100 cancellations: %v, want closed", got)
	}
	if c := cb.Counts(); c.TotalFailures != 0 || c.TotalSuccesses != 0 {
		t.Fatalf("counts %+v: a cancellation must count neither way", c)
	}
	fail(cb, errDown)
	if got := cb.State(); got != gobreaker.StateOpen {
		t.Fatalf("after a real failure: %v, want open", got)
	}
}

func TestDefaults(t *testing.T) {
	got := Config{}.WithDefaults()
	want := Config{ConsecutiveFailures: 5, OpenFor: time.Second, HalfOpenProbes: 3}
	if got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
}
