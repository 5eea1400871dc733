package lab

import (
	"strings"
	"testing"
)

func TestDrawScenario(t *testing.T) {
	sc, err := Load("../configs/lab/scalpers-draw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !sc.isDraw() || len(sc.Seeds) < 10 || sc.Honest.Users != 1000 || sc.Units != 100 {
		t.Errorf("scalpers-draw: %+v", sc)
	}
	base := "name: x\nunits: 1\nduration: 40s\nhonest: {users: 1, arrival: uniform, over: 5s}\n"
	for _, c := range []struct{ yaml, err string }{
		{base + "entry_window: 10s\n", "need allocation: draw"},
		{base + "allocation: draw\n", "entry_window"},
		{base + "allocation: draw\nentry_window: 4s\n", "must fit in entry_window"},
		{base + "allocation: draw\nentry_window: 10s\nwaitlist: 2\n", "claim_window"},
		{base + "allocation: draw\nentry_window: 30s\nclaim_window: 20s\n", "duration"},
		{base + "allocation: queue\n", "race or draw"},
	} {
		if _, err := Parse([]byte(c.yaml)); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: %v, want an error about %q", c.yaml, err, c.err)
		}
	}
	if _, err := Parse([]byte(base + "allocation: draw\nentry_window: 10s\nclaim_window: 5s\nwaitlist: 2\n")); err != nil {
		t.Errorf("a valid draw scenario: %v", err)
	}
}
