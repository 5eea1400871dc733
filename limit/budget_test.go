package limit

import (
	"strings"
	"testing"
	"time"
)

// TestParseLimitsRegistration: the limits file's optional registration
// section: absent is nil, fields left out keep the defaults, bad values
// are refused naming the field; ParseRules still reads such a file.
func TestParseLimitsRegistration(t *testing.T) {
	const rules = "rules:\n  - {name: r, class: register, key: ip, rate: 1, burst: 2}\n"
	if _, reg, err := ParseLimits([]byte(rules)); err != nil || reg != nil {
		t.Fatalf("without the section: %+v %v", reg, err)
	}
	r, reg, err := ParseLimits([]byte(rules + "registration:\n  per_ip: 3\n  window: 1h\n"))
	want := DefaultRegistration
	want.PerIP, want.Window = 3, Window(time.Hour)
	if err != nil || len(r) != 1 || reg == nil || *reg != want {
		t.Fatalf("partial section: %v %+v %v, want %+v", r, reg, err, want)
	}
	if r, err := ParseRules([]byte(rules + "registration: {per_network: 0}\n")); err != nil || len(r) != 1 {
		t.Fatalf("ParseRules with a registration section: %v %v", r, err)
	}
	for bad, says := range map[string]string{
		"registration: {challenge: sms}\n": "challenge",
		"registration: {difficulty: 40}\n": "difficulty",
		"registration: {per_ip: -1}\n":     "per_ip",
		"registration: {window: 10ms}\n":   "window",
		"registration: {window: 24}\n":     "window",
		"registration: {perip: 3}\n":       "perip",
	} {
		if _, _, err := ParseLimits([]byte(rules + bad)); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%q: %v, want an error naming %s", bad, err, says)
		}
	}
	q := DefaultRegistration.Quotas("192.0.2.1", "192.0.2.0/24")
	if len(q) != 2 || q[0].Limit != 5 || q[1].Limit != 50 || q[0].Window != 24*time.Hour || q[0].Key != "192.0.2.1" || q[1].Key != "192.0.2.0/24" {
		t.Fatalf("default quotas %+v", q)
	}
	off := DefaultRegistration
	off.PerIP = 0
	if q := off.Quotas("a", "b"); len(q) != 1 || q[0].Name != "accounts-per-network" {
		t.Fatalf("per_ip 0: %+v", q)
	}
}
