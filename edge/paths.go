package edge

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/rkeys"
)

// paths issues and checks hidden purchase paths. A path is 128 random bits,
// bound to one user and one item, lives in Redis (so any edge can check it)
// and expires. It is consumed by the first buy that gets a final answer.
//
// Every call is safe to retry after a lost reply (ARCHITECTURE.md "Retry
// safety"): Issue sets a value it chose before the first try, Check and
// checkShared only read, and consume deletes only the path it names, so
// running it twice leaves what running it once leaves. A Redis failure is a
// seckill.Unavailable error (dependency_unavailable, 503).
type paths struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
}

// newPaths returns a path store.
func newPaths(rdb redis.UniversalClient, prefix string, ttl time.Duration) *paths {
	if ttl <= 0 {
		ttl = 60 * time.Second
	}
	return &paths{rdb: rdb, prefix: prefix, ttl: ttl}
}

func (p *paths) key(userID, itemID int64) string {
	return rkeys.Space(p.prefix).Path(itemID, userID)
}

// issue makes a new path for user and item, replacing any earlier one.
func (p *paths) issue(ctx context.Context, userID, itemID int64) (string, time.Time, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", time.Time{}, err
	}
	path := hex.EncodeToString(b[:])
	if err := p.rdb.Set(ctx, p.key(userID, itemID), path, p.ttl).Err(); err != nil {
		return "", time.Time{}, pathsUnavailable(fmt.Errorf("storing path: %w", err))
	}
	return path, time.Now().Add(p.ttl), nil
}

func (p *paths) sharedKey(itemID int64, path string) string {
	return rkeys.Space(p.prefix).SharedPath(itemID, path)
}

// issueShared makes a path valid for any user of the item: what the edge
// hands out when the path-binding defence is switched off (teaching).
func (p *paths) issueShared(ctx context.Context, userID, itemID int64) (string, time.Time, error) {
	path, exp, err := p.issue(ctx, userID, itemID)
	if err != nil {
		return "", time.Time{}, err
	}
	if err := p.rdb.Set(ctx, p.sharedKey(itemID, path), userID, p.ttl).Err(); err != nil {
		return "", time.Time{}, pathsUnavailable(fmt.Errorf("storing path: %w", err))
	}
	return path, exp, nil
}

// checkShared reports whether path was issued for the item to anyone.
func (p *paths) checkShared(ctx context.Context, itemID int64, path string) error {
	if len(path) == 32 {
		n, err := p.rdb.Exists(ctx, p.sharedKey(itemID, path)).Result()
		if err != nil {
			return pathsUnavailable(fmt.Errorf("reading path: %w", err))
		}
		if n == 1 {
			return nil
		}
	}
	return seckill.Errorf(seckill.EBadPath, "this purchase path is not for this item, used or expired")
}

// consumeShared removes a shared path.
func (p *paths) consumeShared(ctx context.Context, itemID int64, path string) error {
	if err := p.rdb.Del(ctx, p.sharedKey(itemID, path)).Err(); err != nil {
		return pathsUnavailable(fmt.Errorf("consuming path: %w", err))
	}
	return nil
}

// check reports whether path is the live path of user and item.
func (p *paths) check(ctx context.Context, userID, itemID int64, path string) error {
	bad := seckill.Errorf(seckill.EBadPath, "this purchase path is not yours, not for this item, used or expired")
	if len(path) != 32 {
		return bad
	}
	want, err := p.rdb.Get(ctx, p.key(userID, itemID)).Result()
	if errors.Is(err, redis.Nil) {
		return bad
	}
	if err != nil {
		return pathsUnavailable(fmt.Errorf("reading path: %w", err))
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(path)) != 1 {
		return bad
	}
	return nil
}

func (p *paths) attemptKey(userID, itemID int64) string {
	return rkeys.Space(p.prefix).PathAttempt(itemID, userID)
}

// checkAttemptScript is Check for a purchase, in one round trip: when the
// path is the live one it also records that a purchase was attempted with
// it (a second key, same hash slot, expiring with the path). Safe to retry:
// a second run sets the same value.
//
// KEYS: path, attempt mark; ARGV: path
var checkAttemptScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl) end
return 1`)

// checkAttempt is check for a buy: it also marks the path as used by a
// purchase attempt, so that after the item sells out a retry of that
// attempt (whose answer was lost: the reservation may have run) still
// reaches the backend (Attempted).
func (p *paths) checkAttempt(ctx context.Context, userID, itemID int64, path string) error {
	bad := seckill.Errorf(seckill.EBadPath, "this purchase path is not yours, not for this item, used or expired")
	if len(path) != 32 {
		return bad
	}
	ok, err := checkAttemptScript.Run(ctx, p.rdb, []string{p.key(userID, itemID), p.attemptKey(userID, itemID)}, path).Int()
	if err != nil {
		return pathsUnavailable(fmt.Errorf("reading path: %w", err))
	}
	if ok != 1 {
		return bad
	}
	return nil
}

// attempted reports whether path is still the live path of user and item
// and a purchase was attempted with it (CheckAttempt) without a final
// answer (the final answer consumes the path).
func (p *paths) attempted(ctx context.Context, userID, itemID int64, path string) (bool, error) {
	if len(path) != 32 {
		return false, nil
	}
	v, err := p.rdb.MGet(ctx, p.key(userID, itemID), p.attemptKey(userID, itemID)).Result()
	if err != nil {
		return false, pathsUnavailable(fmt.Errorf("reading path: %w", err))
	}
	live, _ := v[0].(string)
	mark, _ := v[1].(string)
	return live != "" && subtle.ConstantTimeCompare([]byte(live), []byte(path)) == 1 && mark == live, nil
}

// consumeScript deletes the path only if it is still the live one (a newer
// path issued meanwhile stays). Its reply (1 deleted, 0 not) is not used: a
// retry after a lost reply answers 0 where the first run answered 1, and
// leaves the same state, which is all Consume promises.
var consumeScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// consume removes the path if it is still the live one. After it returns
// nil the path is gone, whether this call or an earlier one removed it.
func (p *paths) consume(ctx context.Context, userID, itemID int64, path string) error {
	if err := consumeScript.Run(ctx, p.rdb, []string{p.key(userID, itemID)}, path).Err(); err != nil {
		return pathsUnavailable(fmt.Errorf("consuming path: %w", err))
	}
	return nil
}

// pathsUnavailable marks a Redis failure: 503 dependency_unavailable.
func pathsUnavailable(err error) error {
	return seckill.Unavailable(err, "purchase paths cannot be reached right now; retry shortly")
}
