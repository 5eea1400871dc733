package edge

import (
	"context"
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"

	"seckill"
	"seckill/backend"
	"seckill/httpapi"
)

// BreakerConfig tunes the circuit breaker around the backend.
type BreakerConfig struct {
	// ConsecutiveFailures opens the breaker (default 5).
	ConsecutiveFailures uint32 `yaml:"consecutive_failures" json:"consecutive_failures"`
	// OpenFor is how long it stays open before half-open probes (default 2s).
	OpenFor time.Duration `yaml:"open_for" json:"open_for"`
	// HalfOpenProbes is how many requests may probe while half-open (default 3).
	HalfOpenProbes uint32 `yaml:"half_open_probes" json:"half_open_probes"`
}

func (b *BreakerConfig) defaults() {
	if b.ConsecutiveFailures == 0 {
		b.ConsecutiveFailures = 5
	}
	if b.OpenFor <= 0 {
		b.OpenFor = 2 * time.Second
	}
	if b.HalfOpenProbes == 0 {
		b.HalfOpenProbes = 3
	}
}

// Guard protects the backend: a bound on requests in flight (load
// shedding: over it, 503 overloaded at once, before any work is queued),
// then a circuit breaker (open: 503 backend_unavailable at once, without
// touching the backend; half-open probes; recovery without a restart).
// Only failures of the backend itself count against the breaker: a
// business answer such as sold_out is a success.
type Guard struct {
	slots   chan struct{}
	cb      *gobreaker.CircuitBreaker[any]
	openFor time.Duration
	onState func(from, to gobreaker.State)
}

// NewGuard returns a guard with at most maxInFlight backend calls at once.
func NewGuard(maxInFlight int, cfg BreakerConfig, onState func(name string, from, to gobreaker.State)) *Guard {
	if maxInFlight <= 0 {
		maxInFlight = 512
	}
	cfg.defaults()
	g := &Guard{slots: make(chan struct{}, maxInFlight), openFor: cfg.OpenFor}
	g.cb = gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:        "backend",
		MaxRequests: cfg.HalfOpenProbes,
		Timeout:     cfg.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.ConsecutiveFailures },
		IsSuccessful: func(err error) bool {
			var ue *backend.UnavailableError
			return !errors.As(err, &ue) && !errors.Is(err, context.DeadlineExceeded)
		},
		OnStateChange: onState,
	})
	return g
}

// InFlight returns the backend calls in flight and the bound.
func (g *Guard) InFlight() (int, int) { return len(g.slots), cap(g.slots) }

// State returns the breaker state.
func (g *Guard) State() gobreaker.State { return g.cb.State() }

// Do runs f against the backend under the guard.
func Do[T any](ctx context.Context, g *Guard, f func(ctx context.Context) (T, error)) (T, error) {
	return DoWith(ctx, g, AllOn, f)
}

// DoWith runs f under the guard, skipping load shedding or the breaker
// when the sale's defences say so (teaching switches).
func DoWith[T any](ctx context.Context, g *Guard, d Defences, f func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	if d.Shedding {
		select {
		case g.slots <- struct{}{}:
		default:
			return zero, &httpapi.RetryError{Err: seckill.Errorf(seckill.EOverloaded, "too many purchases in progress; retry shortly"), After: time.Second}
		}
		defer func() { <-g.slots }()
	}
	var v any
	var err error
	if d.Breaker {
		v, err = g.cb.Execute(func() (any, error) { return f(ctx) })
	} else {
		v, err = f(ctx)
	}
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return zero, &httpapi.RetryError{Err: seckill.Errorf(seckill.EUnavailable, "the backend is unavailable; retry shortly"), After: g.openFor}
	}
	var ue *backend.UnavailableError
	if errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) {
		return zero, &httpapi.RetryError{Err: seckill.Errorf(seckill.EUnavailable, "the backend did not answer; retry shortly"), After: time.Second}
	}
	if err != nil {
		if t, ok := v.(T); ok {
			return t, err
		}
		return zero, err
	}
	return v.(T), nil
}
