// Package seckill holds the domain vocabulary shared by every part of the
// flash-sale system: items, order messages, order status, the contract
// between the edge and the backend (contract.go) and the error type whose
// code decides the HTTP status (in one place: httpapi.Status). It imports
// no transport and no store.
package seckill

import (
	"errors"
	"fmt"
	"time"
)

// Item is one thing on sale. Stock is the total number of units ever offered.
type Item struct {
	ID         int64     `json:"id"`
	Name       string    `json:"name"`
	PriceCents int64     `json:"price_cents"`
	Stock      int64     `json:"stock"`
	StartsAt   time.Time `json:"starts_at"`
	EndsAt     time.Time `json:"ends_at"`
	// Challenge names the human challenge the edge asks for: "captcha",
	// "pow" or "none". The backend stores it and does not interpret it.
	Challenge string    `json:"challenge"`
	CreatedAt time.Time `json:"created_at"`
	// SaleRules: eligibility and allocation (rules.go); its JSON fields
	// are the item's own.
	SaleRules
}

// OrderMessage is what a successful reservation appends to the outbox and
// what travels through RabbitMQ to the worker. It is the whole order: the
// worker needs nothing else to store it. Its encodings belong to the
// adapters: the outbox stream's fields to stock, the JSON on RabbitMQ to
// queue (message.go).
type OrderMessage struct {
	OrderRef   string
	UserID     int64
	ItemID     int64
	RequestID  string
	ReservedAt time.Time
}

// Validate reports whether a message decoded from outside is usable.
func (m OrderMessage) Validate() error {
	switch {
	case m.OrderRef == "":
		return Errorf(EInvalid, "order_ref is empty")
	case m.UserID <= 0:
		return Errorf(EInvalid, "user_id must be positive")
	case m.ItemID <= 0:
		return Errorf(EInvalid, "item_id must be positive")
	}
	return nil
}

// Order is a stored order.
type Order struct {
	ID         int64     `json:"order_id"`
	OrderRef   string    `json:"order_ref"`
	UserID     int64     `json:"user_id"`
	ItemID     int64     `json:"item_id"`
	ReservedAt time.Time `json:"reserved_at"`
	CreatedAt  time.Time `json:"created_at"`
}

// OrderStatus is where one user's order for one item stands.
type OrderStatus string

const (
	StatusNone      OrderStatus = "none"      // the user holds no unit
	StatusQueued    OrderStatus = "queued"    // a unit is reserved, the order is on its way to the database
	StatusConfirmed OrderStatus = "confirmed" // the order is stored
	StatusFailed    OrderStatus = "failed"    // the order could not be stored; its unit went back to stock
)

// Stats are the counters of one item. StockTotal = StockLeft + Reserved
// always holds in Redis; Reserved = Orders + OutboxPending + in flight.
type Stats struct {
	ItemID        int64 `json:"item_id"`
	StockTotal    int64 `json:"stock_total"`
	StockLeft     int64 `json:"stock_left"`
	Reserved      int64 `json:"reserved"`
	Orders        int64 `json:"orders"`
	OutboxPending int64 `json:"outbox_pending"`
	Failed        int64 `json:"failed"`
	// Ages of the oldest orders waiting in the outbox, since their
	// reservation (Redis's clock), in ms; 0 when there are none. Pending:
	// handed to a relay, not yet confirmed by RabbitMQ. Unread: no relay
	// has read it yet. Oldest: the larger of the two.
	OutboxOldestAgeMs     int64 `json:"outbox_oldest_age_ms"`
	OutboxOldestPendingMs int64 `json:"outbox_oldest_pending_ms"`
	OutboxOldestUnreadMs  int64 `json:"outbox_oldest_unread_ms"`
}

// Code is a machine-readable error code. The values are part of the public
// contract (docs/API.md): clients match on them.
type Code string

// Error codes.
const (
	EInvalid         Code = "invalid"
	ETooLarge        Code = "too_large"
	EUnknownItem     Code = "unknown_item"
	ENotFound        Code = "not_found"
	ENotLive         Code = "not_live"
	ESoldOut         Code = "sold_out"
	EAlreadyBought   Code = "already_bought"
	EConflict        Code = "conflict"
	EUsernameTaken   Code = "username_taken"
	EUnauthorized    Code = "unauthenticated"
	EForbidden       Code = "forbidden"
	EMethod          Code = "method_not_allowed"
	EUnavailable     Code = "backend_unavailable"
	EOverloaded      Code = "overloaded"
	ERateLimited     Code = "rate_limited"
	EInternal        Code = "internal"
	EChallengeFailed Code = "challenge_failed"
	EBadPath         Code = "bad_path"
	EBadCredentials  Code = "bad_credentials"
	EDependency      Code = "dependency_unavailable" // a store the server needs (Redis) is down or did not answer in time
)

// Codes of the edge's browser checks (issue 13 M1).
const (
	ECrossOrigin Code = "cross_origin"           // a browser request from another site (CSRF)
	EMediaType   Code = "unsupported_media_type" // a browser request whose body is not application/json
)

// ENotEligible: the account may not take part in this sale (its
// eligibility rules: min_account_age, max_per_network; issue 15).
const ENotEligible Code = "not_eligible"

// ENotAdmitted: a sale with a waiting room (allocation queue) hands out a
// challenge, a path or a purchase only with a valid admission pass (issue 16).
const ENotAdmitted Code = "not_admitted"

// Error is an error with a machine-readable code.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf returns an *Error with the given code.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Unavailable returns an error with code EDependency: a dependency (Redis)
// failed. The cause is kept for logs and errors.Is/As; clients see only the
// message.
func Unavailable(cause error, format string, args ...any) error {
	return &causedError{coded: Errorf(EDependency, format, args...), cause: cause}
}

// causedError is a coded error with the error that caused it.
type causedError struct {
	coded *Error
	cause error
}

func (e *causedError) Error() string   { return e.coded.Error() + ": " + e.cause.Error() }
func (e *causedError) Unwrap() []error { return []error{e.coded, e.cause} }

// ErrorCode returns the code of err, or EInternal when err carries none.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the message meant for users; internal errors are
// never shown as they are.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
