package seckill

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Allocation modes: how an item's units find their buyers.
const (
	AllocationRace  = "race"  // first come, first served (the default)
	AllocationQueue = "queue" // a waiting room admits users at a pace (issue 16)
	AllocationDraw  = "draw"  // entries during a window, winners drawn from a committed seed (issue 17)
)

// SaleRules say who may take part in a sale and how its units are
// allocated. Item and CreateItemRequest embed it, so its JSON fields are the
// item's own (min_account_age, allocation, ...). The stores keep it as one
// JSON document (items.rules); zero values are omitted.
//
// Each block belongs to one feature; its validate function is called by
// ValidateItem.
type SaleRules struct {
	// Eligibility (issue 15). MinAccountAge: accounts created later than
	// StartsAt - MinAccountAge cannot take part. MaxPerNetwork: at most this
	// many units per registration network (User.Network) per item; 0 means
	// no limit.
	MinAccountAge Duration `json:"min_account_age,omitzero"`
	MaxPerNetwork int64    `json:"max_per_network,omitzero"`

	// Allocation: AllocationRace (also ""), AllocationQueue or
	// AllocationDraw.
	Allocation string `json:"allocation,omitempty"`

	// Waiting room (allocation queue, issue 16), named as Cloudflare's
	// Waiting Room names them.
	QueueOpensAt      time.Time `json:"queue_opens_at,omitzero"`
	NewUsersPerMinute int64     `json:"new_users_per_minute,omitzero"`
	TotalActiveUsers  int64     `json:"total_active_users,omitzero"`
	SessionDuration   Duration  `json:"session_duration,omitzero"`
	// QueueChallenge: joining the queue takes a solved challenge
	// (POST /api/items/{id}/queue/challenge). AbandonAfter: a waiting
	// ticket not polled for this long is skipped (default
	// DefaultAbandonAfter).
	QueueChallenge bool     `json:"queue_challenge,omitempty"`
	AbandonAfter   Duration `json:"abandon_after,omitzero"`

	// Draw (allocation draw, issue 17).
	EntriesOpenAt  time.Time `json:"entries_open_at,omitzero"`
	EntriesCloseAt time.Time `json:"entries_close_at,omitzero"`
	DrawAt         time.Time `json:"draw_at,omitzero"`
	ClaimWindow    Duration  `json:"claim_window,omitzero"`
	Waitlist       int64     `json:"waitlist,omitzero"`
	// DrawCommitment is SHA-256 of the draw's secret seed (hex), made by
	// the backend when the item is created (never by the admin), so it is
	// published with the item from its creation on.
	DrawCommitment string `json:"draw_commitment,omitempty"`
}

// AllocationMode is r.Allocation with the default filled in.
func (r SaleRules) AllocationMode() string {
	if r.Allocation == "" {
		return AllocationRace
	}
	return r.Allocation
}

// validateRules checks the rules of an item an admin wants to create.
func validateRules(it *Item) error {
	r := &it.SaleRules
	switch r.Allocation {
	case "", AllocationRace, AllocationQueue, AllocationDraw:
	default:
		return Errorf(EInvalid, "allocation must be race, queue or draw")
	}
	if err := validateEligibility(it); err != nil {
		return err
	}
	if err := validateQueue(it); err != nil {
		return err
	}
	return validateDraw(it)
}

// MaxAccountAge bounds min_account_age (a year).
const MaxAccountAge = 366 * 24 * time.Hour

func validateEligibility(it *Item) error {
	r := it.SaleRules
	switch {
	case r.MinAccountAge < 0 || r.MinAccountAge.D() > MaxAccountAge:
		return Errorf(EInvalid, "min_account_age must be between 0 and %s", MaxAccountAge)
	case r.MaxPerNetwork < 0 || r.MaxPerNetwork > MaxStock:
		return Errorf(EInvalid, "max_per_network must be between 0 (no limit) and %d", MaxStock)
	}
	return nil
}

// Waiting-room defaults (a zero field takes them) and bounds.
const (
	DefaultNewUsersPerMinute = 60
	DefaultSessionDuration   = 10 * time.Minute
	DefaultAbandonAfter      = 5 * time.Minute
	MaxNewUsersPerMinute     = 6_000_000
	MinSessionDuration       = time.Second
	MaxSessionDuration       = 24 * time.Hour
	MinAbandonAfter          = 10 * time.Second
	MaxAbandonAfter          = time.Hour
)

// QueueRate is new_users_per_minute with its default.
func (r SaleRules) QueueRate() int64 {
	if r.NewUsersPerMinute <= 0 {
		return DefaultNewUsersPerMinute
	}
	return r.NewUsersPerMinute
}

// QueueSession is session_duration with its default.
func (r SaleRules) QueueSession() time.Duration {
	if r.SessionDuration <= 0 {
		return DefaultSessionDuration
	}
	return r.SessionDuration.D()
}

// QueueAbandon is abandon_after with its default.
func (r SaleRules) QueueAbandon() time.Duration {
	if r.AbandonAfter <= 0 {
		return DefaultAbandonAfter
	}
	return r.AbandonAfter.D()
}

// QueueOpens is when the waiting room opens: queue_opens_at, or the start
// of the sale (no pre-queue) when it is not set.
func (it Item) QueueOpens() time.Time {
	if it.QueueOpensAt.IsZero() {
		return it.StartsAt
	}
	return it.QueueOpensAt
}

func validateQueue(it *Item) error {
	r := it.SaleRules
	if r.AllocationMode() != AllocationQueue {
		if !r.QueueOpensAt.IsZero() || r.NewUsersPerMinute != 0 || r.TotalActiveUsers != 0 || r.SessionDuration != 0 ||
			r.QueueChallenge || r.AbandonAfter != 0 {
			return Errorf(EInvalid, "queue_opens_at, new_users_per_minute, total_active_users, session_duration, queue_challenge and abandon_after need allocation queue")
		}
		return nil
	}
	switch {
	case !r.QueueOpensAt.IsZero() && r.QueueOpensAt.After(it.StartsAt):
		return Errorf(EInvalid, "queue_opens_at must not be after starts_at")
	case r.NewUsersPerMinute < 0 || r.TotalActiveUsers < 0 || r.SessionDuration < 0 || r.AbandonAfter < 0:
		return Errorf(EInvalid, "new_users_per_minute, total_active_users, session_duration and abandon_after must not be negative")
	case r.NewUsersPerMinute > MaxNewUsersPerMinute:
		return Errorf(EInvalid, "new_users_per_minute must be at most %d", MaxNewUsersPerMinute)
	case r.TotalActiveUsers > MaxStock:
		return Errorf(EInvalid, "total_active_users must be at most %d (0: no limit but the units left)", MaxStock)
	case r.SessionDuration != 0 && (r.SessionDuration.D() < MinSessionDuration || r.SessionDuration.D() > MaxSessionDuration):
		return Errorf(EInvalid, "session_duration must be between %s and %s", MinSessionDuration, MaxSessionDuration)
	case r.AbandonAfter != 0 && (r.AbandonAfter.D() < MinAbandonAfter || r.AbandonAfter.D() > MaxAbandonAfter):
		return Errorf(EInvalid, "abandon_after must be between %s and %s", MinAbandonAfter, MaxAbandonAfter)
	}
	return nil
}

func validateDraw(it *Item) error {
	r := it.SaleRules
	if r.AllocationMode() != AllocationDraw {
		if !r.EntriesOpenAt.IsZero() || !r.EntriesCloseAt.IsZero() || !r.DrawAt.IsZero() || r.ClaimWindow != 0 || r.Waitlist != 0 || r.DrawCommitment != "" {
			return Errorf(EInvalid, "entries_open_at, entries_close_at, draw_at, claim_window and waitlist need allocation draw")
		}
		return nil
	}
	switch {
	case r.EntriesOpenAt.IsZero() || r.EntriesCloseAt.IsZero() || r.DrawAt.IsZero():
		return Errorf(EInvalid, "a draw needs entries_open_at, entries_close_at and draw_at (RFC 3339)")
	case !r.EntriesCloseAt.After(r.EntriesOpenAt):
		return Errorf(EInvalid, "entries_close_at must be after entries_open_at")
	case r.DrawAt.Before(r.EntriesCloseAt):
		return Errorf(EInvalid, "draw_at must not be before entries_close_at")
	case r.ClaimWindow < 0 || r.Waitlist < 0 || r.Waitlist > MaxStock:
		return Errorf(EInvalid, "claim_window and waitlist must not be negative (waitlist at most %d)", MaxStock)
	case r.DrawAt.Before(it.StartsAt) || !r.DrawAt.Before(it.EndsAt):
		return Errorf(EInvalid, "draw_at must be within the sale: starts_at <= draw_at < ends_at")
	case r.Waitlist > 0 && r.ClaimWindow == 0:
		return Errorf(EInvalid, "a waitlist needs a claim_window (units go to the waitlist when a window ends)")
	case r.ClaimWindow != 0 && r.ClaimWindow.D() < time.Second:
		return Errorf(EInvalid, "claim_window must be at least 1s")
	case r.DrawCommitment != "":
		return Errorf(EInvalid, "draw_commitment is made by the server")
	}
	return nil
}

// Duration is a time.Duration that reads and writes JSON as Go's duration
// text ("72h", "1h30m"); it also reads a number of seconds (259200).
type Duration time.Duration

// D is d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String is Go's duration text.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes Go's duration text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads Go's duration text or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: want Go duration text such as \"72h\" or \"90s\"", s)
		}
		*d = Duration(v)
		return nil
	}
	secs, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("duration %s: want a string such as \"72h\" or a number of seconds", b)
	}
	if secs > float64(1<<62)/1e9 || secs < -float64(1<<62)/1e9 {
		return fmt.Errorf("duration %s: out of range", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// MarshalRules is the stores' encoding of r (items.rules).
func MarshalRules(r SaleRules) (string, error) {
	b, err := json.Marshal(r)
	return string(b), err
}

// UnmarshalRules reads what MarshalRules wrote; "" reads as no rules.
func UnmarshalRules(s string) (SaleRules, error) {
	var r SaleRules
	if s == "" {
		return r, nil
	}
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return SaleRules{}, fmt.Errorf("reading sale rules: %w", err)
	}
	return r, nil
}
