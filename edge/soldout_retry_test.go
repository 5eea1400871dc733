package edge_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestSoldOutRetryOfAnAttemptThatTookTheUnit: a buyer's purchase took the
// last unit in Redis, but the backend's reply was lost (503), and the sale
// then sold out at the edge. The buyer retries with the same path (the
// idempotency key, as docs/API.md says after a 503): the answer is 202
// with the order it holds, never 410 from the edge's sold-out marker
// (which told a buyer holding a unit that there was none: the fault
// matrix's redis-kill row, "1 unexpected").
func TestSoldOutRetryOfAnAttemptThatTookTheUnit(t *testing.T) {
	env := newOutageEnv(t)
	ctx := context.Background()
	item := env.soldOut // 1 unit
	pathOf := func(user int64) string {
		t.Helper()
		r := env.do(t, "POST", fmt.Sprintf("/api/items/%d/challenge", item), user, nil)
		if r.status != 200 {
			t.Fatalf("challenge: %d %v", r.status, r.body)
		}
		r = env.do(t, "POST", fmt.Sprintf("/api/items/%d/path", item), user, map[string]any{"challenge_id": r.body["challenge_id"], "answer": "0"})
		if r.status != 200 {
			t.Fatalf("path: %d %v", r.status, r.body)
		}
		return r.body["path"].(string)
	}
	buy := func(user int64, path string) reply {
		return env.do(t, "POST", fmt.Sprintf("/api/items/%d/buy/%s", item, path), user, nil)
	}
	const alice, bob, carol = 501, 502, 503
	// Carol buys something else first, so the reservation script is in
	// Redis's cache (go-redis sends EVALSHA first; with every reply lost it
	// would never learn NOSCRIPT and never send the script at all).
	if r := env.buy(t, carol, env.pathFor(t, carol, env.challenge(t, carol))); r.status != 202 {
		t.Fatalf("warm-up buy: %d %v", r.status, r.body)
	}
	pa, pb := pathOf(alice), pathOf(bob)

	// Alice's reservation runs in Redis; every reply to the backend is lost.
	env.beRedis.Proxy.DropReplies(true)
	r := buy(alice, pa)
	env.beRedis.Proxy.DropReplies(false)
	if r.status != 503 || r.retryAfter == "" {
		t.Fatalf("buy with the backend's Redis replies lost: %d %v (Retry-After %q)", r.status, r.body, r.retryAfter)
	}
	held, err := env.beRedis.Direct.HGet(ctx, fmt.Sprintf("%sitem:{%d}:buyers", env.beRedis.Prefix, item), fmt.Sprint(alice)).Result()
	if err != nil {
		t.Fatalf("alice holds no unit in Redis (%v): the test did not lose a reply after the reservation ran", err)
	}
	ref, _, _ := strings.Cut(held, "|")

	// Bob finds it sold out: the edge now holds the sold-out marker.
	if r := buy(bob, pb); r.status != 410 || r.code != "sold_out" {
		t.Fatalf("bob: %d %v, want 410 sold_out", r.status, r.body)
	}
	if r := env.do(t, "GET", fmt.Sprintf("/api/items/%d", item), 0, nil); r.status != 200 || r.body["item"].(map[string]any)["state"] != "sold_out" {
		t.Fatalf("item after the last unit: %d %v", r.status, r.body)
	}

	// Alice retries her attempt: she is told the unit she holds.
	r = buy(alice, pa)
	if r.status != 202 || r.body["order_ref"] != ref {
		t.Fatalf("alice's retry after sold out: %d %v, want 202 with order_ref %s", r.status, r.body, ref)
	}
	// A buy without a valid path still gets 410 from the marker.
	if r := buy(bob, pb); r.status != 410 || r.code != "sold_out" {
		t.Fatalf("bob again (path consumed): %d %v, want 410", r.status, r.body)
	}
}
