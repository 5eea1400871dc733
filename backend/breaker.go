package backend

import "context"

type breakerOffKey struct{}

// WithoutBreaker marks a call that must go around every circuit breaker
// (a sale whose breaker defence is switched off for teaching): the edge
// sets it, the balancer that keeps the breakers honours it.
func WithoutBreaker(ctx context.Context) context.Context {
	return context.WithValue(ctx, breakerOffKey{}, true)
}

// BreakerOff reports whether ctx was marked by WithoutBreaker.
func BreakerOff(ctx context.Context) bool {
	off, _ := ctx.Value(breakerOffKey{}).(bool)
	return off
}
