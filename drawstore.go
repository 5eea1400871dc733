package seckill

import "time"

// The draw (allocation draw, issue 17) as the stores keep it. The
// algorithm itself is package draw; docs/DRAW.md writes it out.

// DrawRecord is an item's draw as stored: the secret seed and entry key
// (never published before their time: Seed once the draw is made, Key
// never), the commitment published from the start, and the entry list's
// hash once entries closed. Nothing here is ever marshalled as it is.
type DrawRecord struct {
	ItemID         int64
	Seed           []byte `json:"-"` // 32 bytes, secret until draw_at
	Key            []byte `json:"-"` // 32 bytes, the HMAC key of entry ids, never published
	Commitment     []byte // SHA-256(Seed)
	EntriesOpenAt  time.Time
	EntriesCloseAt time.Time
	// Set once, when entries close (CloseEntries): the hash of the sorted
	// entry ids and their number. Nil/0 before.
	EntriesHash []byte
	EntryCount  int64
	ClosedAt    time.Time
	CreatedAt   time.Time
}

// Closed reports whether the entry list is fixed.
func (d DrawRecord) Closed() bool { return d.EntriesHash != nil }

// DrawEntry is one account's entry in a draw.
type DrawEntry struct {
	EntryID   []byte // 32 bytes: HMAC-SHA256(key, user id)
	UserID    int64
	EnteredAt time.Time
}

// DrawRound is one round of offers, fixed once: places From .. From+Count-1
// (0-based, in the draw's order) may buy during round Round's claim window.
type DrawRound struct {
	Round int `json:"round"`
	From  int `json:"from"`
	Count int `json:"count"`
}
