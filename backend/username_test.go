package backend_test

import (
	"testing"
)

// TestUsernamesNormalisedOverHTTP (issue 13): through the backend API on a
// real PostgreSQL, "Alice", "aIice" (capital I) and the full-width name
// cannot register beside "alice", and log in to alice's account.
func TestUsernamesNormalisedOverHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	code, m, _ := e.do(t, "POST", "/v1/users", `{"username":"alice","password":"alice-password"}`, true)
	if code != 201 {
		t.Fatalf("register alice: %d %v", code, m)
	}
	id := m["user_id"]
	for _, n := range []string{"Alice", "ALICE", "aIice", "al1ce", "ａｌｉｃｅ"} {
		code, m, _ := e.do(t, "POST", "/v1/users", `{"username":"`+n+`","password":"other-password"}`, true)
		if code != 409 || m["code"] != "username_taken" {
			t.Errorf("register %q beside alice: %d %v, want 409 username_taken", n, code, m)
		}
		code, m, _ = e.do(t, "POST", "/v1/users/login", `{"username":"`+n+`","password":"alice-password"}`, true)
		if code != 200 || m["user_id"] != id {
			t.Errorf("login as %q: %d %v, want alice's id %v", n, code, m, id)
		}
	}
	// Not everything is alice.
	if code, m, _ := e.do(t, "POST", "/v1/users", `{"username":"alex","password":"alex-password"}`, true); code != 201 {
		t.Fatalf("register alex: %d %v", code, m)
	}
}
