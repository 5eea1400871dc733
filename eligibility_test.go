package seckill

import (
	"testing"
	"time"
)

func TestCheckEligible(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	cutoff := start.Add(-72 * time.Hour)
	item := func(minAge time.Duration, maxNet int64) Item {
		return Item{ID: 1, StartsAt: start, EndsAt: start.Add(time.Hour),
			SaleRules: SaleRules{MinAccountAge: Duration(minAge), MaxPerNetwork: maxNet}}
	}
	for _, c := range []struct {
		name string
		it   Item
		acct Account
		ok   bool
	}{
		{"no rules, unknown account", item(0, 0), Account{ID: 1}, true},
		{"no rules, fresh account", item(0, 0), Account{ID: 1, CreatedAt: start}, true},
		{"min age, unknown account", item(72*time.Hour, 0), Account{ID: 1}, false},
		{"min age, made at the cutoff", item(72*time.Hour, 0), Account{ID: 1, CreatedAt: cutoff}, true},
		{"min age, made 1 ms after", item(72*time.Hour, 0), Account{ID: 1, CreatedAt: cutoff.Add(time.Millisecond)}, false},
		{"min age, old", item(72*time.Hour, 0), Account{ID: 1, CreatedAt: cutoff.Add(-time.Hour), Network: "192.0.2.0/24"}, true},
		{"max per network only, unknown account", item(0, 3), Account{ID: 1, Network: "192.0.2.0/24"}, false},
		{"max per network only, fresh account", item(0, 3), Account{ID: 1, CreatedAt: start}, true},
	} {
		err := CheckEligible(c.it, c.acct)
		if (err == nil) != c.ok || (err != nil && ErrorCode(err) != ENotEligible) {
			t.Errorf("%s: %v, want ok=%v (or not_eligible)", c.name, err, c.ok)
		}
	}
}
