package seckill

import "time"

// The draw's part of the contract between edge and backend (allocation
// draw, issue 17; docs/API.md "The draw" and docs/DRAW.md).

// EntryStatus is where one account stands in a draw. The values are part
// of the public contract.
type EntryStatus string

// Entry states.
const (
	EntryNone       EntryStatus = "none"       // no entry
	EntryEntered    EntryStatus = "entered"    // entered; the draw is not made yet
	EntryWon        EntryStatus = "won"        // may buy one unit from ClaimFrom until ClaimUntil
	EntryWaitlisted EntryStatus = "waitlisted" // on the waitlist: may get a unit nobody claimed
	EntryLost       EntryStatus = "lost"       // not drawn, or the waitlist never reached this place
)

// EntryState is the answer of POST and GET /api/items/{id}/entry.
type EntryState struct {
	State   EntryStatus `json:"state"`
	EntryID string      `json:"entry_id,omitempty"` // the pseudonymous id in the published list (hex)
	// EnteredAt is when the entry was taken (the database's clock).
	EnteredAt time.Time `json:"entered_at,omitzero"`
	// Place is 1-based in the draw's order (winners first, then the
	// waitlist); 0 before the draw and for places beyond the waitlist.
	Place int `json:"place,omitempty"`
	// The claim window of a place that has been offered a unit (won):
	// buy from ClaimFrom until ClaimUntil through the usual purchase path.
	ClaimFrom  time.Time `json:"claim_from,omitzero"`
	ClaimUntil time.Time `json:"claim_until,omitzero"`
	// Created: this call made the entry (201); a repeat answers 200
	// without it.
	Created bool `json:"created,omitempty"`
}

// DrawState names where a draw stands.
type DrawState string

// Draw states.
const (
	DrawUpcoming DrawState = "upcoming" // entries not open yet
	DrawOpen     DrawState = "open"     // taking entries
	DrawClosed   DrawState = "closed"   // entry list fixed and its hash published; seed still secret
	DrawDrawn    DrawState = "drawn"    // seed revealed, winners known
)

// DrawRoundView is one fixed round of offers with its claim window.
type DrawRoundView struct {
	DrawRound
	ClaimFrom  time.Time `json:"claim_from"`
	ClaimUntil time.Time `json:"claim_until"`
}

// DrawView is the public state of an item's draw (GET /api/items/{id}/draw
// and, with the same fields, GET /admin/items/{id}/draw). The seed is in it
// only once the draw is made.
type DrawView struct {
	ItemID         int64     `json:"item_id"`
	State          DrawState `json:"state"`
	Now            time.Time `json:"now"`
	EntriesOpenAt  time.Time `json:"entries_open_at"`
	EntriesCloseAt time.Time `json:"entries_close_at"`
	DrawAt         time.Time `json:"draw_at"`
	ClaimWindow    Duration  `json:"claim_window"`
	Stock          int64     `json:"stock"`
	Waitlist       int64     `json:"waitlist"`
	Commitment     string    `json:"commitment"`             // SHA-256(seed), hex, from the item's creation
	Entries        int64     `json:"entries"`                // accounts entered (fixed once closed)
	EntriesHash    string    `json:"entries_hash,omitempty"` // once closed
	ClosedAt       time.Time `json:"closed_at,omitzero"`
	Seed           string    `json:"seed,omitempty"` // once drawn
	// Order is the draw's order once drawn: the entry ids of the first
	// stock + waitlist places (winners first).
	Order     []string        `json:"order,omitempty"`
	Rounds    []DrawRoundView `json:"rounds,omitempty"`
	StockLeft int64           `json:"stock_left"`
}

// EntryList is the exported entry list of a closed draw: the sorted
// pseudonymous ids whose hash is EntriesHash.
type EntryList struct {
	ItemID      int64    `json:"item_id"`
	EntriesHash string   `json:"entries_hash"`
	Entries     []string `json:"entries"`
}

// ENotDrawn refuses a purchase of a draw item by an account whose place
// has no open claim window: no entry, not drawn, waitlisted and not
// offered yet, or outside its window (409).
const ENotDrawn Code = "not_drawn"
