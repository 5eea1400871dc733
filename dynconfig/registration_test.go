package dynconfig

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"seckill/limit"
)

// TestRegistrationSection: the optional registration section of a pushed
// configuration: absent stays nil (every edge keeps its limits file's),
// fields left out take the defaults, bad values are problems in place, and
// a version signed before the section existed still verifies and decodes.
func TestRegistrationSection(t *testing.T) {
	raw, _ := json.Marshal(goodConfig())
	if strings.Contains(string(raw), "registration") {
		t.Fatalf("a config without registration marshals it: %s", raw)
	}
	c, err := Parse(raw)
	if err != nil || c.Registration != nil {
		t.Fatalf("without the section: %+v %v, want nil", c.Registration, err)
	}
	c, err = Parse([]byte(good + "registration: {challenge: captcha, per_ip: 2, window: 1h}\n"))
	want := limit.Registration{Challenge: "captcha", Difficulty: 19, PerIP: 2, PerNetwork: 50, Window: limit.Window(time.Hour)}
	if err != nil || c.Registration == nil || *c.Registration != want {
		t.Fatalf("partial section: %+v %v, want %+v", c.Registration, err, want)
	}
	_, err = Parse([]byte(good + "registration: {challenge: sms, per_ip: -1, window: 1ms}\n"))
	ps := ProblemsOf(err)
	if len(ps) != 3 {
		t.Fatalf("bad section: %v, want 3 problems", err)
	}
	for _, p := range ps {
		if p.Place != "registration" || p.Line == 0 {
			t.Errorf("problem %+v: want place registration with its line", p)
		}
	}

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	old := Record{Version: 4, PushedBy: "ops", Config: raw}
	if err := Sign(&old, priv); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(old)
	r, c, err := DecodeRecord(data)
	if err != nil || Verify(r, []ed25519.PublicKey{pub}) != nil || c.Registration != nil {
		t.Fatalf("a version signed before registration existed: %+v %v %v", c.Registration, err, Verify(r, []ed25519.PublicKey{pub}))
	}
	withReg := goodConfig()
	withReg.Registration = &want
	raw2, _ := json.Marshal(withReg)
	rec := Record{Version: 5, PushedBy: "ops", Config: raw2}
	if err := Sign(&rec, priv); err != nil {
		t.Fatal(err)
	}
	data, _ = json.Marshal(rec)
	r, c, err = DecodeRecord(data)
	if err != nil || Verify(r, []ed25519.PublicKey{pub}) != nil || c.Registration == nil || *c.Registration != want {
		t.Fatalf("a signed version with registration: %+v %v", c.Registration, err)
	}
}
