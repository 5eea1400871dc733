package edge

import (
	"context"
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"

	"seckill"
	"seckill/httpapi"
	"seckill/internal/breaker"
)

// BreakerConfig tunes the circuit breaker around the backend (the one
// configuration of every breaker: internal/breaker).
type BreakerConfig = breaker.Config

// callClass names a kind of backend call. Each class has its own breaker,
// so reads that fail on a store purchases do not need (PostgreSQL behind a
// status poll) never refuse a purchase.
type callClass int

const (
	// callReserve is a purchase (needs only Redis in the backend).
	callReserve callClass = iota
	// callRead is everything else: order status, accounts.
	callRead
	callClasses
)

func (c callClass) String() string {
	if c == callReserve {
		return "reserve"
	}
	return "read"
}

// Guard protects the backend: a bound on requests in flight (load
// shedding: over it, 503 overloaded at once, before any work is queued),
// then a circuit breaker per call class (open: 503 backend_unavailable at
// once, without touching the backend; half-open probes; recovery without
// a restart). Only failures of the backend itself count against a
// breaker: a business answer such as sold_out is a success, and a client
// that hangs up (context.Canceled) counts for nothing, or anybody could
// open the breaker for everybody by hanging up.
//
// A guard made with breakers off (the backend has breakers of its own, one
// per backend: discovery.Balancer) only sheds load: two breakers in series
// would double the time to recover, and the inner one's refusals would
// count as failures in the outer one.
type Guard struct {
	slots    chan struct{}
	cbs      [callClasses]*gobreaker.CircuitBreaker[any]
	breaking bool
	openFor  time.Duration
}

// NewGuard returns a guard with at most maxInFlight backend calls at once.
func NewGuard(maxInFlight int, cfg BreakerConfig, onState func(name string, from, to gobreaker.State)) *Guard {
	return newGuard(maxInFlight, cfg, true, onState)
}

func newGuard(maxInFlight int, cfg BreakerConfig, breaking bool, onState func(name string, from, to gobreaker.State)) *Guard {
	if maxInFlight <= 0 {
		maxInFlight = 512
	}
	cfg = cfg.WithDefaults()
	g := &Guard{slots: make(chan struct{}, maxInFlight), openFor: cfg.OpenFor, breaking: breaking}
	for c := range callClasses {
		g.cbs[c] = breaker.New("backend-"+c.String(), cfg, seckill.BackendFailure, onState)
	}
	return g
}

// InFlight returns the backend calls in flight and the bound.
func (g *Guard) InFlight() (int, int) { return len(g.slots), cap(g.slots) }

// State returns the state of the purchases' breaker (closed when the guard
// does not break).
func (g *Guard) State() gobreaker.State { return g.classState(callReserve) }

// classState returns the state of one class's breaker.
func (g *Guard) classState(c callClass) gobreaker.State {
	if !g.breaking {
		return gobreaker.StateClosed
	}
	return g.cbs[c].State()
}

// isBreaking reports whether the guard has breakers of its own.
func (g *Guard) isBreaking() bool { return g.breaking }

// do runs f against the backend under the guard.
func do[T any](ctx context.Context, g *Guard, class callClass, f func(ctx context.Context) (T, error)) (T, error) {
	return doWith(ctx, g, class, allOn, f)
}

// doWith runs f under the guard, skipping load shedding or the breaker
// when the sale's defences say so (teaching switches).
func doWith[T any](ctx context.Context, g *Guard, class callClass, d Defences, f func(ctx context.Context) (T, error)) (T, error) {
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
	switch {
	case d.Breaker && g.breaking:
		v, err = g.cbs[class].Execute(func() (any, error) { return f(ctx) })
	case d.Breaker:
		v, err = f(ctx)
	default:
		// Teaching switch off: no breaker anywhere, the balancer's included.
		v, err = f(seckill.WithoutBreaker(ctx))
	}
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return zero, &httpapi.RetryError{Err: seckill.Errorf(seckill.EUnavailable, "the backend is unavailable; retry shortly"), After: g.openFor}
	}
	t, _ := v.(T)
	return t, unavailable(err)
}
