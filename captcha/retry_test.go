package captcha

import (
	"context"
	"testing"
	"time"

	"seckill"
	"seckill/internal/testenv"
)

// TestVerifyReplyLost is D9: the burn's reply is lost after it ran, go-redis
// (MaxRetries as in production) sends it again, and the right answer must
// still be accepted, exactly once.
func TestVerifyReplyLost(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	s := NewStore(f.Client, f.Prefix, Options{})
	ctx := context.Background()
	for _, kind := range []string{KindPoW, KindCaptcha} {
		t.Run(kind, func(t *testing.T) {
			// Warm up: the script is cached, so the attempt below is one EVALSHA.
			warm, err := s.Issue(ctx, kind, 7, 9, 4)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Verify(ctx, warm.ID, 7, 9, right(t, s, warm)); err != nil {
				t.Fatal(err)
			}

			c, err := s.Issue(ctx, kind, 7, 9, 4)
			if err != nil {
				t.Fatal(err)
			}
			answer := right(t, s, c)
			burned := func(ctx context.Context) bool {
				return f.Direct.HExists(ctx, s.key(c.ID), "used").Val()
			}
			start := time.Now()
			_, err = testenv.LoseReply(t, f, burned, func() (struct{}, error) {
				return struct{}{}, s.Verify(ctx, c.ID, 7, 9, answer)
			})
			if err != nil {
				t.Fatalf("right answer refused after a lost reply: %v", err)
			}
			if took := time.Since(start); took < testenv.FaultReadTimeout {
				t.Fatalf("answered in %v: the reply was not lost", took)
			}
			// Exactly once: any later attempt, right or not, is refused.
			wantFailed(t, s.Verify(ctx, c.ID, 7, 9, answer), "already used")
		})
	}
}

// TestVerifyReplyLostWrongAnswer: a wrong answer whose reply was lost is
// still wrong (the retry does not turn into "already used" either), and
// the challenge stays burned.
func TestVerifyReplyLostWrongAnswer(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	s := NewStore(f.Client, f.Prefix, Options{})
	ctx := context.Background()
	warm, _ := s.Issue(ctx, KindPoW, 7, 9, 4)
	_ = s.Verify(ctx, warm.ID, 7, 9, "1")
	c, err := s.Issue(ctx, KindPoW, 7, 9, 4)
	if err != nil {
		t.Fatal(err)
	}
	bad := wrong(t, s, c)
	_, err = testenv.LoseReply(t, f, func(ctx context.Context) bool {
		return f.Direct.HExists(ctx, s.key(c.ID), "used").Val()
	}, func() (struct{}, error) { return struct{}{}, s.Verify(ctx, c.ID, 7, 9, bad) })
	wantFailed(t, err, "wrong answer")
	wantFailed(t, s.Verify(ctx, c.ID, 7, 9, right(t, s, c)), "already used")
}

// TestRedisDownIsDependencyUnavailable: with Redis unreachable, Issue and
// Verify fail with dependency_unavailable (503), within the bound of the
// client's retries, never as an internal error or a challenge failure.
func TestRedisDownIsDependencyUnavailable(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	s := NewStore(f.Client, f.Prefix, Options{})
	ctx := context.Background()
	c, err := s.Issue(ctx, KindPoW, 7, 9, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, fault := range []string{"down", "stalled"} {
		t.Run(fault, func(t *testing.T) {
			if fault == "down" {
				f.Proxy.Refuse(true)
				f.Proxy.CutAll()
				defer f.Proxy.Refuse(false)
			} else {
				f.Proxy.DropReplies(true)
				defer f.Proxy.DropReplies(false)
			}
			start := time.Now()
			_, err := s.Issue(ctx, KindPoW, 7, 9, 4)
			if code := seckill.ErrorCode(err); code != seckill.EDependency {
				t.Fatalf("issue: %v (code %s)", err, code)
			}
			err = s.Verify(ctx, c.ID, 7, 9, right(t, s, c))
			if code := seckill.ErrorCode(err); code != seckill.EDependency {
				t.Fatalf("verify: %v (code %s)", err, code)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("two calls took %v", took)
			}
		})
	}
}
