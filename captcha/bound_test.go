package captcha

import (
	"context"
	"testing"
	"time"
)

// TestBoundChallenges: a registration challenge is bound to its network,
// single use, burned by a wrong answer, and never crosses with an item's
// challenge, on real Redis.
func TestBoundChallenges(t *testing.T) {
	s := newStore(t, time.Minute)
	ctx := context.Background()
	const here, there = "register 192.0.2.0/24", "register 198.51.100.0/24"
	for _, kind := range []string{KindPoW, KindCaptcha} {
		c, err := s.IssueBound(ctx, kind, here, 8)
		if err != nil {
			t.Fatal(err)
		}
		good := right(t, s, c)
		if err := s.VerifyBound(ctx, c.ID, here, good); err != nil {
			t.Fatalf("%s: right answer from its network: %v", kind, err)
		}
		wantFailed(t, s.VerifyBound(ctx, c.ID, here, good), "already used")

		c, _ = s.IssueBound(ctx, kind, here, 8)
		wantFailed(t, s.VerifyBound(ctx, c.ID, there, right(t, s, c)), "another network")
		wantFailed(t, s.VerifyBound(ctx, c.ID, here, "1"), "already used") // burned by the other network's answer

		c, _ = s.IssueBound(ctx, kind, here, 8)
		wantFailed(t, s.VerifyBound(ctx, c.ID, here, wrong(t, s, c)), "wrong answer")
	}
	// An item's challenge is no registration challenge, and the reverse.
	item, _ := s.Issue(ctx, KindPoW, 7, 9, 4)
	wantFailed(t, s.VerifyBound(ctx, item.ID, here, right(t, s, item)), "another network")
	reg, _ := s.IssueBound(ctx, KindPoW, here, 4)
	wantFailed(t, s.Verify(ctx, reg.ID, 7, 9, right(t, s, reg)), "another purpose")
	if _, err := s.IssueBound(ctx, KindPoW, "42", 4); err == nil {
		t.Fatal("a numeric binding (a user id) was accepted")
	}
}
