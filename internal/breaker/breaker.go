// Package breaker builds the circuit breakers of the edge and of the
// discovery balancer: one configuration, one constructor, one rule about
// what counts as a failure.
//
// The rule: only a failure of the thing guarded counts against it (the
// caller's classifier decides, for example "the backend did not answer"),
// and a caller that went away (context.Canceled) counts for nothing: it is
// neither a success nor a failure, or any client could open a breaker for
// everybody by hanging up.
package breaker

import (
	"context"
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Defaults of Config.
const (
	DefaultConsecutiveFailures = 5
	DefaultOpenFor             = time.Second
	DefaultHalfOpenProbes      = 3
)

// Config tunes a breaker. Zero fields take the defaults.
type Config struct {
	// ConsecutiveFailures opens the breaker (default 5).
	ConsecutiveFailures uint32 `yaml:"consecutive_failures" json:"consecutive_failures"`
	// OpenFor is how long it stays open before half-open probes (default 1s).
	OpenFor time.Duration `yaml:"open_for" json:"open_for"`
	// HalfOpenProbes is how many requests may probe while half-open (default 3).
	HalfOpenProbes uint32 `yaml:"half_open_probes" json:"half_open_probes"`
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if c.OpenFor <= 0 {
		c.OpenFor = DefaultOpenFor
	}
	if c.HalfOpenProbes == 0 {
		c.HalfOpenProbes = DefaultHalfOpenProbes
	}
	return c
}

// New returns a breaker named name. failure says whether an error is a
// failure of the thing guarded (nil: every error is); a context.Canceled
// error is excluded whatever failure says. onState (may be nil) is called
// on every state change.
func New(name string, cfg Config, failure func(error) bool, onState func(name string, from, to gobreaker.State)) *gobreaker.CircuitBreaker[any] {
	cfg = cfg.WithDefaults()
	if failure == nil {
		failure = func(err error) bool { return err != nil }
	}
	return gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:         name,
		MaxRequests:  cfg.HalfOpenProbes,
		Timeout:      cfg.OpenFor,
		ReadyToTrip:  func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.ConsecutiveFailures },
		IsSuccessful: func(err error) bool { return err == nil || !failure(err) },
		// A caller that went away says nothing about the thing guarded.
		IsExcluded:    Cancelled,
		OnStateChange: onState,
	})
}

// Cancelled reports whether err is the caller's own cancellation.
func Cancelled(err error) bool { return errors.Is(err, context.Canceled) }
