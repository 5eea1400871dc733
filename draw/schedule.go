package draw

import "time"

// Settle is the pause between the end of one claim window and the start of
// the next. A purchase let through just before a window closed reaches
// Redis within the backend's Redis budget (4 s); the units left are
// counted for the next round only after it.
const Settle = 5 * time.Second

// Schedule is the timetable of a draw's claim windows. Round 0 offers the
// first stock places from DrawAt; round r ≥ 1 offers the next places, as
// many as units were left unclaimed, from DrawAt + r·(Window + Settle).
// Each window lasts Window, cut at EndsAt; no round starts at or after
// EndsAt.
type Schedule struct {
	DrawAt, EndsAt time.Time
	Window         time.Duration // claim_window; 0 means until EndsAt
}

func (s Schedule) window() time.Duration {
	if s.Window > 0 {
		return s.Window
	}
	return s.EndsAt.Sub(s.DrawAt)
}

// Start returns when round r opens.
func (s Schedule) Start(r int) time.Time {
	return s.DrawAt.Add(time.Duration(r) * (s.window() + Settle))
}

// WindowOf returns round r's claim window [from, until), and false when the
// round would start at or after EndsAt.
func (s Schedule) WindowOf(r int) (from, until time.Time, ok bool) {
	from = s.Start(r)
	if r < 0 || !from.Before(s.EndsAt) {
		return time.Time{}, time.Time{}, false
	}
	until = from.Add(s.window())
	if until.After(s.EndsAt) {
		until = s.EndsAt
	}
	return from, until, true
}

// RoundAt returns the last round that has started at t (-1 before DrawAt;
// never beyond the last round before EndsAt).
func (s Schedule) RoundAt(t time.Time) int {
	if t.Before(s.DrawAt) {
		return -1
	}
	r := int(t.Sub(s.DrawAt) / (s.window() + Settle))
	for r > 0 && !s.Start(r).Before(s.EndsAt) {
		r--
	}
	return r
}
