package chaos

import (
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	h := &History{Buyers: []*Buyer{
		{Name: "ok", Told: []string{"r1"}},
		{Name: "lost", Told: []string{"r2"}},
		{Name: "other-ref", Told: []string{"r3"}},
		{Name: "two-refs", Told: []string{"r4", "r5"}},
		{Name: "timed-out", Ambiguous: true},
		{Name: "refused"},
	}}
	st := Stored{Refs: map[string][]string{
		"ok":        {"r1"},
		"other-ref": {"r9"},
		"two-refs":  {"r4"},
		"timed-out": {"r6"},
		"refused":   {"r7"},
	}, Count: 5}
	got := Judge(h, st, 4)
	want := Verdict{Told: 4, Stored: 5, Lost: 2, Unexpected: 1, Oversold: 1, Doubled: 1, Indeterminate: 1}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestTimings(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var acc []time.Time
	for s := 0.0; s < 3; s += 0.01 { // 100/s before the fault at 3 s
		acc = append(acc, at(s))
	}
	for s := 6.5; s < 9; s += 0.01 { // back 1.5 s after the probe at 5 s
		acc = append(acc, at(s))
	}
	tm := Timings(acc, at(3), at(5), false)
	if tm.PreRate < 99 || tm.PreRate > 101 {
		t.Fatalf("pre-fault rate %v, want 100", tm.PreRate)
	}
	if d := tm.Freeze - 1500*time.Millisecond; d < -20*time.Millisecond || d > 20*time.Millisecond {
		t.Fatalf("freeze %v, want 1.5s", tm.Freeze)
	}
	if d := tm.Flow - 1500*time.Millisecond; d < -20*time.Millisecond || d > 20*time.Millisecond {
		t.Fatalf("flow %v, want 1.5s", tm.Flow)
	}
	if d := tm.MaxGap - 3510*time.Millisecond; d < -20*time.Millisecond || d > 20*time.Millisecond {
		t.Fatalf("longest gap %v, want 3.51s", tm.MaxGap)
	}
	// Never paused: flowing at the probe.
	var steady []time.Time
	for s := 0.0; s < 9; s += 0.01 {
		steady = append(steady, at(s))
	}
	if tm := Timings(steady, at(3), at(5), false); tm.Flow != 0 || tm.Freeze != 0 {
		t.Fatalf("steady sale: flow %v freeze %v, want 0 0", tm.Flow, tm.Freeze)
	}
	// Sold out during the fault without a pause: flowing, sold out first.
	if tm := Timings(steady[:400], at(3), at(5), true); tm.Flow != 0 || !tm.SoldOutFirst {
		t.Fatalf("sold out during the fault: %+v", tm)
	}
	if g := longestGap(acc, at(3), at(5)); g < 1990*time.Millisecond {
		t.Fatalf("longest gap in the fault %v, want 2s", g)
	}
}
