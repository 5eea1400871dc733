package seckill

import (
	"context"
	"errors"
	"net/netip"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"seckill/username"
)

// The contract between the edge and the purchase backend: what one asks
// and the other answers, whichever way the call travels (HTTP through
// package backendclient, or in process). Neither side owns it, so neither
// imports the other.

// ItemState names where a sale stands at a time. The values are part of
// the public contract (docs/API.md).
type ItemState string

// Item states.
const (
	StateUpcoming ItemState = "upcoming"
	StateLive     ItemState = "live"
	StateSoldOut  ItemState = "sold_out"
	StateEnded    ItemState = "ended"
)

// StateAt names where the sale of it stands at now with left units left.
func StateAt(it Item, left int64, now time.Time) ItemState {
	switch {
	case now.Before(it.StartsAt):
		return StateUpcoming
	case !now.Before(it.EndsAt):
		return StateEnded
	case left <= 0:
		return StateSoldOut
	}
	return StateLive
}

// ItemView is an item as shoppers see it.
type ItemView struct {
	Item
	StockLeft int64     `json:"stock_left"`
	State     ItemState `json:"state"`
}

// Account is what the edge knows of a buyer without asking anybody: the
// user id and the facts a sale's eligibility rules (rules.go) need, from
// the signed session token. The backend's login returns it; the edge
// passes it with every reservation.
type Account struct {
	ID int64 `json:"user_id"`
	// CreatedAt is when the account was made; zero when unknown (a session
	// token signed before tokens carried it). A sale with eligibility
	// rules refuses an unknown account.
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Network is the registration network (User.Network); "" for
	// accounts made in bulk, which count as a network of their own.
	Network string `json:"network,omitempty"`
}

// Known reports whether the account's facts are known.
func (a Account) Known() bool { return !a.CreatedAt.IsZero() }

// Reservation is the answer to a successful purchase attempt.
type Reservation struct {
	Status    OrderStatus `json:"status"`
	OrderRef  string      `json:"order_ref"`
	StockLeft int64       `json:"stock_left"`
}

// OrderState is where one user's order for one item stands.
type OrderState struct {
	Status   OrderStatus `json:"status"`
	OrderRef string      `json:"order_ref,omitempty"`
	OrderID  int64       `json:"order_id,omitempty"`
	// Degraded: PostgreSQL did not answer; the status is what Redis knows
	// (queued may in fact be confirmed already, none may be failed).
	Degraded bool `json:"degraded,omitempty"`
}

// CreateItemRequest is the body of POST /admin/items (edge) and
// POST /v1/admin/items (backend).
type CreateItemRequest struct {
	Name       string    `json:"name"`
	PriceCents int64     `json:"price_cents"`
	Stock      int64     `json:"stock"`
	StartsAt   time.Time `json:"starts_at"`
	EndsAt     time.Time `json:"ends_at"`
	Challenge  string    `json:"challenge"`
	SaleRules
}

// Item returns the item the request asks for.
func (r CreateItemRequest) Item() Item {
	return Item{Name: r.Name, PriceCents: r.PriceCents, Stock: r.Stock, StartsAt: r.StartsAt, EndsAt: r.EndsAt, Challenge: r.Challenge, SaleRules: r.SaleRules}
}

// Challenge kinds an item may ask for.
const (
	ChallengeCaptcha = "captcha"
	ChallengePoW     = "pow"
	ChallengeNone    = "none"
)

// Limits on what an admin may create.
const (
	MaxStock   = 10_000_000
	MaxNameLen = 200
)

// ValidateItem checks an item an admin wants to create, trimming its name
// and giving it the default challenge (pow).
func ValidateItem(it *Item) error {
	it.Name = strings.TrimSpace(it.Name)
	if it.Challenge == "" {
		it.Challenge = ChallengePoW
	}
	switch {
	case it.Name == "" || utf8.RuneCountInString(it.Name) > MaxNameLen:
		return Errorf(EInvalid, "name must be 1 to %d characters", MaxNameLen)
	case it.PriceCents < 0:
		return Errorf(EInvalid, "price_cents must not be negative")
	case it.Stock < 0 || it.Stock > MaxStock:
		return Errorf(EInvalid, "stock must be between 0 and %d", MaxStock)
	case it.StartsAt.IsZero() || it.EndsAt.IsZero():
		return Errorf(EInvalid, "starts_at and ends_at are required (RFC 3339)")
	case !it.EndsAt.After(it.StartsAt):
		return Errorf(EInvalid, "ends_at must be after starts_at")
	case it.Challenge != ChallengeCaptcha && it.Challenge != ChallengePoW && it.Challenge != ChallengeNone:
		return Errorf(EInvalid, "challenge must be captcha, pow or none")
	}
	return validateRules(it)
}

// Limits on what a user may choose, and on one admin call.
const (
	MinPassword    = 8
	MaxPassword    = 72 // bcrypt reads no further
	MaxEnsureUsers = 10000
)

var usernameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{3,32}$`)

// ValidateNetwork checks the registration network the edge sends with a
// new account: "" (unknown: tools, accounts made in bulk) or an IP prefix in
// its canonical masked form, such as "203.0.113.0/24" or "2001:db8:1::/48"
// (clientip.Network).
func ValidateNetwork(network string) error {
	if network == "" {
		return nil
	}
	p, err := netip.ParsePrefix(network)
	if err != nil || len(network) > 64 || p.Masked() != p || p.String() != network {
		return Errorf(EInvalid, "network must be an IP prefix such as 203.0.113.0/24")
	}
	return nil
}

// ValidateUsername checks a username: 3 to 32 of A-Z a-z 0-9 _ . - after
// NFKC (username.Normalize: a full-width "ａｌｉｃｅ" is "alice").
func ValidateUsername(name string) error {
	if !usernameRE.MatchString(username.Normalize(name)) {
		return Errorf(EInvalid, "username must be 3 to 32 characters of A-Z, a-z, 0-9, '_', '.', '-'")
	}
	return nil
}

// ValidatePassword checks the length of a new password.
func ValidatePassword(password string) error {
	if len(password) < MinPassword || len(password) > MaxPassword {
		return Errorf(EInvalid, "password must be %d to %d bytes", MinPassword, MaxPassword)
	}
	return nil
}

// HeldError is the answer already_bought: the user holds a unit of the
// item, and OrderRef names the order. It keeps this one shape from the
// backend's reservation through its client and the edge to the public
// answer (problem+json with the header X-Order-Ref, written by package
// httpapi).
type HeldError struct {
	Err      *Error // code EAlreadyBought
	OrderRef string
}

// Held returns an already_bought error naming the order held.
func Held(orderRef, format string, args ...any) *HeldError {
	return &HeldError{Err: Errorf(EAlreadyBought, format, args...), OrderRef: orderRef}
}

func (e *HeldError) Error() string { return e.Err.Error() }
func (e *HeldError) Unwrap() error { return e.Err }

// UnavailableError means the backend gave no business answer: a network
// error, a 5xx, garbage, or no backend at all. Circuit breakers count it
// as the backend's failure; the edge answers 503 backend_unavailable.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "backend unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// BackendFailure reports whether err is the backend's failure: it gave no
// business answer (UnavailableError) or did not answer in time. A business
// answer and the caller's own cancellation (a client that hung up) are
// never the backend's failure. Every breaker in front of backends (the
// edge's guard, the balancer's per-backend breakers) counts with this one
// rule, and a safe call is retried on another backend only for it.
func BackendFailure(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var ue *UnavailableError
	return errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded)
}

type breakerOffKey struct{}

// WithoutBreaker marks a call that must go around every circuit breaker
// (a sale whose breaker defence is switched off for teaching): the edge
// sets it, whatever keeps the breakers (the edge's guard, the balancer)
// honours it.
func WithoutBreaker(ctx context.Context) context.Context {
	return context.WithValue(ctx, breakerOffKey{}, true)
}

// BreakerOff reports whether ctx was marked by WithoutBreaker.
func BreakerOff(ctx context.Context) bool {
	off, _ := ctx.Value(breakerOffKey{}).(bool)
	return off
}
