package captcha

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"seckill"
	"seckill/captcha/pow"
	"seckill/internal/testenv"
)

func newStore(t testing.TB, ttl time.Duration) *Store {
	rdb, prefix := testenv.Redis(t)
	return NewStore(rdb, prefix, Options{TTL: ttl})
}

// wantFailed checks err is a challenge_failed error whose message contains detail.
func wantFailed(t *testing.T, err error, detail string) {
	t.Helper()
	var e *seckill.Error
	if !errors.As(err, &e) || e.Code != seckill.EChallengeFailed {
		t.Fatalf("error = %v, want code %s", err, seckill.EChallengeFailed)
	}
	if !strings.Contains(e.Message, detail) {
		t.Fatalf("message %q does not say %q", e.Message, detail)
	}
}

// right returns the right answer of c.
func right(t *testing.T, s *Store, c Challenge) string {
	t.Helper()
	if c.Kind == KindPoW {
		return pow.Solve(c.Seed, c.Difficulty)
	}
	a, err := s.AnswerForTest(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func wrong(t *testing.T, s *Store, c Challenge) string {
	t.Helper()
	if c.Kind == KindPoW {
		for n := 0; ; n++ {
			if a := strconv.Itoa(n); !pow.Check(c.Seed, a, c.Difficulty) {
				return a
			}
		}
	}
	n, _ := strconv.Atoi(right(t, s, c))
	return strconv.Itoa(n + 1)
}

type answer struct {
	user, item int64
	value      string // "right", "wrong" or literal
	fail       string // "" to pass, else the expected detail
}

func TestVerify(t *testing.T) {
	t.Parallel()
	const u, i = 7, 11
	cases := []struct {
		name    string
		answers []answer
	}{
		{"right once", []answer{{u, i, "right", ""}}},
		{"right twice", []answer{{u, i, "right", ""}, {u, i, "right", "already used"}}},
		{"wrong then right", []answer{{u, i, "wrong", "wrong answer"}, {u, i, "right", "already used"}}},
		{"other user", []answer{{u + 1, i, "right", "another user"}, {u, i, "right", "already used"}}},
		{"other item", []answer{{u, i + 1, "right", "another item"}, {u, i, "right", "already used"}}},
		{"spaces trimmed", []answer{{u, i, " right\t", ""}}},
		{"malformed", []answer{{u, i, "12abc", "malformed answer"}, {u, i, "right", "already used"}}},
		{"empty", []answer{{u, i, "", "malformed answer"}}},
		{"overlong", []answer{{u, i, strings.Repeat("9", 100), "malformed answer"}}},
	}
	for _, kind := range []string{KindCaptcha, KindPoW} {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t, time.Minute)
				ctx := context.Background()
				c, err := s.Issue(ctx, kind, u, i, 8)
				if err != nil {
					t.Fatal(err)
				}
				r, w := right(t, s, c), wrong(t, s, c)
				for n, a := range tc.answers {
					v := strings.NewReplacer("right", r, "wrong", w).Replace(a.value)
					err := s.Verify(ctx, c.ID, a.user, a.item, v)
					if a.fail == "" {
						if err != nil {
							t.Fatalf("answer %d (%q): %v, want success", n, v, err)
						}
						continue
					}
					wantFailed(t, err, a.fail)
					// The messages' own numbers ("up to 20 digits") are not a
					// leak even when the answer happens to be one of them.
					msg := strings.NewReplacer("up to 20 decimal digits", "").Replace(err.Error())
					if strings.Contains(msg, r) && !strings.Contains(v, r) {
						t.Fatalf("error %q leaks the answer %q", err, r)
					}
				}
			})
		}
	}
}

// TestVerifyCaptchaAnswerForm: the answer is the integer a person types
// (four or five digits since the answer space widened: never negative),
// spaces around it ignored; its negation or a neighbour is wrong.
func TestVerifyCaptchaAnswerForm(t *testing.T) {
	t.Parallel()
	s := newStore(t, time.Minute)
	ctx := context.Background()
	for i := range 20 {
		c, err := s.Issue(ctx, KindCaptcha, 1, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		a := right(t, s, c)
		n, err := strconv.Atoi(a)
		if err != nil || n < 1000-81 || n > 9999+81 {
			t.Fatalf("answer %q out of the space", a)
		}
		switch i % 3 {
		case 0:
			if err := s.Verify(ctx, c.ID, 1, 1, " "+a+" "); err != nil {
				t.Fatalf("answer %q: %v", a, err)
			}
		case 1:
			wantFailed(t, s.Verify(ctx, c.ID, 1, 1, "-"+a), "wrong answer")
		default:
			wantFailed(t, s.Verify(ctx, c.ID, 1, 1, strconv.Itoa(n+1)), "wrong answer")
		}
	}
}

func TestVerifyUnknown(t *testing.T) {
	t.Parallel()
	s := newStore(t, time.Minute)
	for _, id := range []string{"", "nosuchchallengeid0000000", "../../etc", strings.Repeat("a", 200), "a b"} {
		wantFailed(t, s.Verify(context.Background(), id, 1, 1, "1"), "unknown or expired")
	}
}

func TestVerifyExpired(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{KindCaptcha, KindPoW} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, 100*time.Millisecond)
			ctx := context.Background()
			c, err := s.Issue(ctx, kind, 1, 2, 4)
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Until(c.ExpiresAt); d <= 0 || d > 100*time.Millisecond {
				t.Fatalf("expires in %v, want about 100ms", d)
			}
			r := right(t, s, c)
			time.Sleep(300 * time.Millisecond)
			wantFailed(t, s.Verify(ctx, c.ID, 1, 2, r), "unknown or expired")
		})
	}
}

func TestVerifyConcurrent(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{KindCaptcha, KindPoW} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, time.Minute)
			ctx := context.Background()
			c, err := s.Issue(ctx, kind, 3, 4, 8)
			if err != nil {
				t.Fatal(err)
			}
			r := right(t, s, c)
			const n = 50
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for k := range n {
				wg.Go(func() {
					<-start
					errs[k] = s.Verify(ctx, c.ID, 3, 4, r)
				})
			}
			close(start)
			wg.Wait()
			passed := 0
			for _, err := range errs {
				if err == nil {
					passed++
				} else if seckill.ErrorCode(err) != seckill.EChallengeFailed {
					t.Fatalf("unexpected error: %v", err)
				}
			}
			if passed != 1 {
				t.Fatalf("%d of %d concurrent right answers passed, want exactly 1", passed, n)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	t.Parallel()
	s := newStore(t, 0)
	ctx := context.Background()
	c, err := s.Issue(ctx, KindPoW, 1, 2, 12)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ID) < 22 || !validID(c.ID) || c.Seed == "" || c.Difficulty != 12 || c.Image != nil {
		t.Fatalf("bad pow challenge %+v", c)
	}
	if d := time.Until(c.ExpiresAt); d < DefaultTTL-5*time.Second || d > DefaultTTL {
		t.Fatalf("expires in %v, want %v", d, DefaultTTL)
	}
	if _, err := s.AnswerForTest(ctx, c.ID); seckill.ErrorCode(err) != seckill.EInvalid {
		t.Fatalf("AnswerForTest of a pow: %v, want %s", err, seckill.EInvalid)
	}
	c, err = s.Issue(ctx, KindCaptcha, 1, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Image) == 0 || c.Seed != "" || c.Difficulty != 0 {
		t.Fatalf("bad captcha challenge %+v", c)
	}
	for _, tc := range []struct {
		kind       string
		user, item int64
		difficulty int
	}{
		{"none", 1, 2, 8},
		{KindPoW, 1, 2, -1},
		{KindPoW, 1, 2, pow.MaxDifficulty + 1},
		{KindPoW, 0, 2, 8},
		{KindCaptcha, 1, -1, 0},
	} {
		if _, err := s.Issue(ctx, tc.kind, tc.user, tc.item, tc.difficulty); seckill.ErrorCode(err) != seckill.EInvalid {
			t.Errorf("Issue(%q, %d, %d, %d) = %v, want %s", tc.kind, tc.user, tc.item, tc.difficulty, err, seckill.EInvalid)
		}
	}
}

// Difficulty 0 (items that ask for no challenge) accepts any decimal
// answer, once.
func TestPoWDifficultyZero(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, time.Minute)
	ch, err := s.Issue(ctx, KindPoW, 1, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, ch.ID, 1, 2, "0"); err != nil {
		t.Fatalf("any answer: %v", err)
	}
	if err := s.Verify(ctx, ch.ID, 1, 2, "0"); seckill.ErrorCode(err) != seckill.EChallengeFailed {
		t.Fatalf("replay: %v", err)
	}
}

func TestAnswerForTestDoesNotBurn(t *testing.T) {
	t.Parallel()
	s := newStore(t, time.Minute)
	ctx := context.Background()
	c, err := s.Issue(ctx, KindCaptcha, 5, 6, 0)
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := s.AnswerForTest(ctx, c.ID)
	a2, _ := s.AnswerForTest(ctx, c.ID)
	if a1 != a2 || a1 == "" {
		t.Fatalf("answers %q, %q", a1, a2)
	}
	if err := s.Verify(ctx, c.ID, 5, 6, a1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AnswerForTest(ctx, c.ID); seckill.ErrorCode(err) != seckill.EChallengeFailed {
		t.Fatalf("AnswerForTest after use: %v", err)
	}
}

func FuzzVerifyAnswer(f *testing.F) {
	for _, s := range []string{"", "0", "-3", " 12 ", "--1", "+5", "999999999", "9999999999", "-", "1e3", "٣", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := parseIntAnswer(s)
		if tr := strings.TrimSpace(s); ok {
			m, err := strconv.Atoi(tr)
			if err != nil || m != n || len(strings.TrimPrefix(tr, "-")) > 9 || strings.HasPrefix(tr, "+") {
				t.Fatalf("parseIntAnswer(%q) = %d, accepted", s, n)
			}
		}
		_, _ = evalExpression(s)
		_ = pow.Check("seed", strings.TrimSpace(s), 4)
	})
}

func BenchmarkIssuePoW(b *testing.B) {
	s := newStore(b, time.Minute)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Issue(ctx, KindPoW, 1, 2, 16); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssueCaptcha(b *testing.B) {
	s := newStore(b, time.Minute)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Issue(ctx, KindCaptcha, 1, 2, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	s := newStore(b, time.Minute)
	ctx := context.Background()
	ids := make([]string, b.N)
	answers := make([]string, b.N)
	for k := range b.N {
		c, err := s.Issue(ctx, KindPoW, 1, 2, 1)
		if err != nil {
			b.Fatal(err)
		}
		ids[k], answers[k] = c.ID, pow.Solve(c.Seed, c.Difficulty)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for k := range b.N {
		if err := s.Verify(ctx, ids[k], 1, 2, answers[k]); err != nil {
			b.Fatal(err)
		}
	}
}
