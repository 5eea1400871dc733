package reconcile

import (
	"strings"
	"testing"
)

func TestPrintTellsStrandedFromWaiting(t *testing.T) {
	rep := Report{
		Items: []ItemReport{
			{ItemID: 1, StockTotal: 10, StockLeft: 8, Reserved: 2, Orders: 1, OutboxPending: 1, Loaded: true, Stranded: []string{"ref-a"}, OldestWaitingMs: 12500},
			{ItemID: 2, StockTotal: 5, StockLeft: 5, Loaded: true, Waiting: 3, OldestWaitingMs: 40000},
		},
		RelaysAlive: []string{"relay-a"}, StrandedAfterMs: 10000,
	}
	var b strings.Builder
	Print(&b, rep)
	out := b.String()
	for _, want := range []string{"order ref-a stranded", "relays alive: relay-a",
		"backlog: 3 orders waiting in the outbox longer than 10s (relay alive: broker down or relay behind)", "reconcile: MISMATCH"} {
		if !strings.Contains(out, want) {
			t.Fatalf("report lacks %q:\n%s", want, out)
		}
	}
	if rep.OK() || rep.Waiting() != 3 {
		t.Fatalf("ok %v waiting %d", rep.OK(), rep.Waiting())
	}
	rep.Items = rep.Items[1:]
	rep.RelaysAlive = nil
	b.Reset()
	Print(&b, rep)
	if !rep.OK() || !strings.Contains(b.String(), "no relay alive: relay down") || !strings.Contains(b.String(), "orders are waiting") {
		t.Fatalf("backlog only:\n%s", b.String())
	}
	t.Logf("\n%s", out)
}
