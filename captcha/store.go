// Package captcha issues and verifies the human challenges the edge asks for
// before it reveals an item's hidden purchase path: an image of a small math
// expression (like the original miaosha) or a proof of work.
//
// Challenge state lives in Redis, so any edge can verify a challenge another
// edge issued. A challenge is bound to one user and one item, short lived,
// and burned by its first answer, right or wrong. When Redis is down or
// stalls, Issue and Verify fail with code dependency_unavailable (503).
//
// Neither kind stops a determined bot: math captchas are read by OCR (OWASP
// OAT-009) and proof of work only adds cost. Keep per-user and per-IP limits
// behind them.
package captcha

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"time"

	"seckill/captcha/pow"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/rkeys"
)

// Kinds of challenge.
const (
	KindCaptcha = "captcha"
	KindPoW     = "pow"
)

// DefaultTTL is how long a challenge lives when Options.TTL is zero.
const DefaultTTL = 120 * time.Second

// maxAnswerLen bounds the answers Verify looks at; longer ones are malformed.
const maxAnswerLen = 64

// Challenge is what the edge sends to the client.
type Challenge struct {
	ID         string    `json:"challenge_id"` // 128 random bits, base64url
	Kind       string    `json:"kind"`
	ExpiresAt  time.Time `json:"expires_at"`
	Seed       string    `json:"seed,omitempty"`       // pow
	Difficulty int       `json:"difficulty,omitempty"` // pow: leading zero bits of SHA-256(seed + ":" + answer)
	Image      []byte    `json:"-"`                    // captcha: PNG
}

// Options tune a Store.
type Options struct {
	TTL  time.Duration // lifetime of a challenge; DefaultTTL when zero
	Rand io.Reader     // source of ids, seeds and expressions; crypto/rand when nil
}

// Store issues challenges and verifies answers; state is in Redis under
// <prefix>ch:<id>, a hash with fields kind, user, item and answer (captcha)
// or seed and difficulty (pow), expiring after the TTL.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	rand   io.Reader
}

// NewStore returns a Store keeping its state in rdb under prefix.
func NewStore(rdb redis.UniversalClient, prefix string, opt Options) *Store {
	if opt.TTL <= 0 {
		opt.TTL = DefaultTTL
	}
	if opt.Rand == nil {
		opt.Rand = rand.Reader
	}
	return &Store{rdb: rdb, prefix: prefix, ttl: opt.TTL, rand: opt.Rand}
}

func (s *Store) key(id string) string { return rkeys.Space(s.prefix).Challenge(id) }

func (s *Store) randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.rand, b); err != nil {
		return "", fmt.Errorf("captcha: reading random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Issue creates a challenge of kind KindCaptcha or KindPoW for userID and
// itemID. difficulty is the number of leading zero bits a proof of work
// needs (0 to pow.MaxDifficulty; 0 accepts any decimal answer: items that ask
// for no challenge keep the same flow); it is ignored for captchas.
func (s *Store) Issue(ctx context.Context, kind string, userID, itemID int64, difficulty int) (Challenge, error) {
	if userID <= 0 || itemID <= 0 {
		return Challenge{}, seckill.Errorf(seckill.EInvalid, "user and item ids must be positive")
	}
	return s.issue(ctx, kind, []any{"kind", kind, "user", userID, "item", itemID}, difficulty)
}

// IssueBound creates a challenge bound to a string instead of a user and an
// item: registration binds it to "register <network>" (the client's /24 or
// /48), so only a client of that network can answer it; a waiting room's
// join to "queue <user> <item>", so it is good for that join only. It is
// stored with the binding in the user field and no item, so it never
// passes Verify (an item's challenge) and an item's challenge never passes
// VerifyBound.
func (s *Store) IssueBound(ctx context.Context, kind, binding string, difficulty int) (Challenge, error) {
	if binding == "" || strings.TrimLeft(binding, "0123456789") == "" {
		return Challenge{}, seckill.Errorf(seckill.EInvalid, "a challenge binding must not be empty or a number")
	}
	return s.issue(ctx, kind, []any{"kind", kind, "user", binding}, difficulty)
}

func (s *Store) issue(ctx context.Context, kind string, fields []any, difficulty int) (Challenge, error) {
	id, err := s.randomString(16)
	if err != nil {
		return Challenge{}, err
	}
	c := Challenge{ID: id, Kind: kind}
	switch kind {
	case KindCaptcha:
		var seed [32]byte
		if _, err := io.ReadFull(s.rand, seed[:]); err != nil {
			return Challenge{}, fmt.Errorf("captcha: reading random bytes: %w", err)
		}
		rng := mrand.New(mrand.NewChaCha8(seed))
		text, answer := NewMathExpression(rng)
		img, err := RenderPNG(text, rng)
		if err != nil {
			return Challenge{}, err
		}
		c.Image = img
		fields = append(fields, "answer", strconv.Itoa(answer))
	case KindPoW:
		if difficulty < 0 || difficulty > pow.MaxDifficulty {
			return Challenge{}, seckill.Errorf(seckill.EInvalid, "difficulty must be between 0 and %d", pow.MaxDifficulty)
		}
		seed, err := s.randomString(16)
		if err != nil {
			return Challenge{}, err
		}
		c.Seed, c.Difficulty = seed, difficulty
		fields = append(fields, "seed", seed, "difficulty", difficulty)
	default:
		return Challenge{}, seckill.Errorf(seckill.EInvalid, "challenge kind must be %q or %q", KindCaptcha, KindPoW)
	}
	k := s.key(id)
	c.ExpiresAt = time.Now().Add(s.ttl)
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, k, fields...)
		p.PExpire(ctx, k, s.ttl)
		return nil
	})
	if err != nil {
		return Challenge{}, seckill.Unavailable(fmt.Errorf("captcha: storing challenge: %w", err), "challenges cannot be issued right now; retry shortly")
	}
	return c, nil
}

// burn marks a challenge used and returns what it held, atomically: of
// several concurrent calls for one id, exactly one gets the fields. The
// used mark names the attempt that burned it (ARGV[1], a nonce made per
// Verify call), so the same attempt sent again (go-redis retries a script
// whose reply was lost) gets the same fields back instead of "already
// used": the first answer is the only answer (ARCHITECTURE.md "Retry
// safety"). Another attempt is told "already used". The key keeps its
// fields until the challenge would have expired; nothing reads them but a
// retry of the attempt that burned it. Returns 0 for a missing key, 1 for a
// key used by another attempt, else the fields.
var burn = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local by = redis.call('HGET', KEYS[1], 'used')
if by and by ~= ARGV[1] then return 1 end
if not by then redis.call('HSET', KEYS[1], 'used', ARGV[1]) end
return redis.call('HMGET', KEYS[1], 'kind', 'user', 'item', 'answer', 'seed', 'difficulty')
`)

func failed(detail string) error { return seckill.Errorf(seckill.EChallengeFailed, "%s", detail) }

// validID reports whether id looks like an id Issue returns, so that junk
// never reaches Redis as part of a key.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Verify checks answer to challenge id for userID and itemID. The first
// answer burns the challenge, right or wrong, whoever sends it. Every
// failure is a *seckill.Error with code challenge_failed whose message says
// which check failed (never the right answer). A Redis failure is a
// seckill.Unavailable error (dependency_unavailable, 503); the burn is safe
// to retry, so a reply lost after it ran never turns a right answer into
// "already used".
func (s *Store) Verify(ctx context.Context, id string, userID, itemID int64, answer string) error {
	return s.verify(ctx, id, strconv.FormatInt(userID, 10), strconv.FormatInt(itemID, 10), answer)
}

// VerifyBound checks answer to a challenge of IssueBound for binding, with
// the same rules as Verify: the first answer burns it, right or wrong; an
// answer for another binding (another network, another user's join,
// another purpose) is challenge_failed.
func (s *Store) VerifyBound(ctx context.Context, id, binding, answer string) error {
	return s.verify(ctx, id, binding, "", answer)
}

func (s *Store) verify(ctx context.Context, id, wantUser, wantItem, answer string) error {
	if !validID(id) {
		return failed("unknown or expired challenge")
	}
	attempt, err := s.randomString(12)
	if err != nil {
		return err
	}
	res, err := burn.Run(ctx, s.rdb, []string{s.key(id)}, attempt).Result()
	if err != nil {
		return seckill.Unavailable(fmt.Errorf("captcha: verifying challenge: %w", err), "challenges cannot be checked right now; retry shortly")
	}
	v, ok := res.([]any)
	if !ok {
		if n, _ := res.(int64); n == 1 {
			return failed("challenge already used")
		}
		return failed("unknown or expired challenge")
	}
	if len(v) != 6 {
		return fmt.Errorf("captcha: verifying challenge: unexpected reply %v", res)
	}
	str := func(i int) string { s, _ := v[i].(string); return s }
	kind, user, item, want, seed, diff := str(0), str(1), str(2), str(3), str(4), str(5)
	switch {
	case user != wantUser && wantItem == "":
		return failed("challenge was issued to another network or user, or for another purpose")
	case item == "" && wantItem != "": // one of IssueBound (registration, a waiting room's join) shown to Verify
		return failed("challenge was issued for another purpose")
	case user != wantUser:
		return failed("challenge was issued to another user")
	case item != wantItem:
		return failed("challenge was issued for another item")
	}
	if len(answer) > maxAnswerLen {
		return failed("malformed answer")
	}
	switch kind {
	case KindCaptcha:
		got, ok := parseIntAnswer(answer)
		if !ok {
			return failed("malformed answer: expected an integer")
		}
		w, err := strconv.Atoi(want)
		if err != nil {
			return fmt.Errorf("captcha: stored answer %q is not an integer", want)
		}
		if got != w {
			return failed("wrong answer")
		}
		return nil
	case KindPoW:
		d, err := strconv.Atoi(diff)
		if err != nil || seed == "" {
			return fmt.Errorf("captcha: stored proof of work is corrupt (difficulty %q)", diff)
		}
		a := strings.TrimSpace(answer)
		if !isDigits(a, pow.MaxAnswerLen) {
			return failed("malformed answer: expected up to 20 decimal digits")
		}
		if !pow.Check(seed, a, d) {
			return failed("wrong answer")
		}
		return nil
	default:
		return fmt.Errorf("captcha: stored challenge has unknown kind %q", kind)
	}
}

// AnswerForTest returns the expected answer of a captcha challenge without
// burning it. It is a TEST HOOK: browser and end-to-end tests read the
// answer through it because they cannot read the image. Never expose it on
// a production route. It fails with challenge_failed for an unknown,
// expired or used challenge and with invalid for a proof of work (solve
// those with pow.Solve).
func (s *Store) AnswerForTest(ctx context.Context, id string) (string, error) {
	if !validID(id) {
		return "", failed("unknown or expired challenge")
	}
	v, err := s.rdb.HMGet(ctx, s.key(id), "kind", "answer", "used").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", seckill.Unavailable(fmt.Errorf("captcha: reading challenge: %w", err), "challenges cannot be read right now; retry shortly")
	}
	kind, _ := v[0].(string)
	answer, _ := v[1].(string)
	used, _ := v[2].(string)
	switch {
	case kind == "":
		return "", failed("unknown or expired challenge")
	case used != "":
		return "", failed("challenge already used")
	case kind != KindCaptcha:
		return "", seckill.Errorf(seckill.EInvalid, "challenge is not a captcha")
	}
	return answer, nil
}
