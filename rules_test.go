package seckill

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestItemJSONFlattensRules(t *testing.T) {
	in := `{"name":"x","stock":3,"starts_at":"2026-12-01T10:00:00Z","ends_at":"2026-12-01T11:00:00Z",
		"min_account_age":"72h","max_per_network":2,"allocation":"queue","queue_opens_at":"2026-12-01T09:00:00Z",
		"new_users_per_minute":60,"total_active_users":10,"session_duration":300}`
	var req CreateItemRequest
	if err := json.Unmarshal([]byte(in), &req); err != nil {
		t.Fatal(err)
	}
	it := req.Item()
	if err := ValidateItem(&it); err != nil {
		t.Fatalf("ValidateItem: %v", err)
	}
	if it.MinAccountAge.D() != 72*time.Hour || it.MaxPerNetwork != 2 || it.AllocationMode() != AllocationQueue ||
		it.SessionDuration.D() != 5*time.Minute || it.NewUsersPerMinute != 60 || it.TotalActiveUsers != 10 {
		t.Errorf("rules = %+v", it.SaleRules)
	}
	out, err := json.Marshal(it)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"min_account_age":"72h0m0s"`, `"allocation":"queue"`, `"session_duration":"5m0s"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("%s lacks %s", out, want)
		}
	}
	plain, _ := json.Marshal(Item{Name: "p"})
	for _, absent := range []string{"min_account_age", "allocation", "draw_at", "queue_opens_at"} {
		if strings.Contains(string(plain), absent) {
			t.Errorf("an item without rules writes %s: %s", absent, plain)
		}
	}
}

func TestValidateRules(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	base := Item{Name: "x", Stock: 1, StartsAt: start, EndsAt: start.Add(time.Hour)}
	for _, c := range []struct {
		name string
		r    SaleRules
		ok   bool
	}{
		{"none", SaleRules{}, true},
		{"unknown allocation", SaleRules{Allocation: "lottery"}, false},
		{"negative age", SaleRules{MinAccountAge: -1}, false},
		{"negative per network", SaleRules{MaxPerNetwork: -1}, false},
		{"queue field on a race", SaleRules{NewUsersPerMinute: 5}, false},
		{"queue opens after start", SaleRules{Allocation: AllocationQueue, QueueOpensAt: start.Add(time.Minute)}, false},
		{"queue", SaleRules{Allocation: AllocationQueue, QueueOpensAt: start.Add(-time.Hour)}, true},
		{"draw without times", SaleRules{Allocation: AllocationDraw}, false},
		{"draw closing before opening", SaleRules{Allocation: AllocationDraw, EntriesOpenAt: start, EntriesCloseAt: start, DrawAt: start}, false},
		{"draw before close", SaleRules{Allocation: AllocationDraw, EntriesOpenAt: start, EntriesCloseAt: start.Add(time.Hour), DrawAt: start}, false},
		{"draw", SaleRules{Allocation: AllocationDraw, EntriesOpenAt: start.Add(-time.Hour), EntriesCloseAt: start, DrawAt: start}, true},
		{"draw at the end", SaleRules{Allocation: AllocationDraw, EntriesOpenAt: start, EntriesCloseAt: start.Add(time.Hour), DrawAt: start.Add(time.Hour)}, false},
		{"draw before the sale", SaleRules{Allocation: AllocationDraw, EntriesOpenAt: start.Add(-2 * time.Hour), EntriesCloseAt: start.Add(-time.Hour), DrawAt: start.Add(-time.Minute)}, false},
		{"draw waitlist without window", SaleRules{Allocation: AllocationDraw, EntriesOpenAt: start.Add(-time.Hour), EntriesCloseAt: start, DrawAt: start, Waitlist: 2}, false},
		{"draw with waitlist", SaleRules{Allocation: AllocationDraw, EntriesOpenAt: start.Add(-time.Hour), EntriesCloseAt: start, DrawAt: start, Waitlist: 2, ClaimWindow: Duration(time.Minute)}, true},
		{"draw commitment from the admin", SaleRules{Allocation: AllocationDraw, EntriesOpenAt: start.Add(-time.Hour), EntriesCloseAt: start, DrawAt: start, DrawCommitment: "00"}, false},
		{"draw field on a race", SaleRules{Waitlist: 3}, false},
	} {
		it := base
		it.SaleRules = c.r
		err := ValidateItem(&it)
		if (err == nil) != c.ok {
			t.Errorf("%s: ValidateItem = %v, want ok %v", c.name, err, c.ok)
		}
		if err != nil && ErrorCode(err) != EInvalid {
			t.Errorf("%s: code %s, want invalid", c.name, ErrorCode(err))
		}
	}
}

func TestDurationJSON(t *testing.T) {
	for in, want := range map[string]time.Duration{`"90s"`: 90 * time.Second, `3600`: time.Hour, `1.5`: 1500 * time.Millisecond} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || d.D() != want {
			t.Errorf("%s: %v, %v; want %v", in, d, err, want)
		}
	}
	for _, bad := range []string{`"soon"`, `true`, `1e300`} {
		var d Duration
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("%s accepted as %v", bad, d)
		}
	}
}
