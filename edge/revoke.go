package edge

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
)

// revocations is the in-memory set every edge checks tokens against:
// revoked token ids (until the token would have expired anyway) and
// per-user not-before times ("log out everywhere"). Reading it is a map
// lookup; no request calls Redis to check a token.
type revocations struct {
	mu        sync.RWMutex
	ids       map[string]int64 // token id -> token expiry (unix s)
	notBefore map[int64]int64  // user id -> unix ms; tokens issued earlier are refused
}

func newRevocations() *revocations {
	return &revocations{ids: map[string]int64{}, notBefore: map[int64]int64{}}
}

func (r *revocations) revoked(ses Session) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if ses.ID != "" {
		if _, ok := r.ids[ses.ID]; ok {
			return true
		}
	}
	nb, ok := r.notBefore[ses.UserID]
	return ok && ses.IssuedAt < nb
}

// add records a revoked token id; reports whether it was new.
func (r *revocations) add(id string, exp int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.ids[id]; ok {
		return false
	}
	r.ids[id] = exp
	return true
}

// setNotBefore raises a user's not-before; reports whether it rose.
func (r *revocations) setNotBefore(user, ms int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.notBefore[user] >= ms {
		return false
	}
	r.notBefore[user] = ms
	return true
}

// prune forgets revocations of tokens that have expired anyway.
func (r *revocations) prune(now time.Time, ttl time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, exp := range r.ids {
		if exp <= now.Unix() {
			delete(r.ids, id)
		}
	}
	oldest := now.Add(-ttl).UnixMilli()
	for u, nb := range r.notBefore {
		if nb < oldest { // every token issued before it has expired
			delete(r.notBefore, u)
		}
	}
}

// revoker keeps an edge's revocations in step with every other edge's
// through Redis: a revocation is written to Redis (the record a restarted
// or reconnected edge loads) and published on the edges' event channel
// (every edge applies it within milliseconds). Every few seconds each edge
// reads one version counter and reloads the record when it moved, which
// covers any message missed while its subscription was down.
type revoker struct {
	rdb      redis.UniversalClient
	prefix   string
	channel  string
	sessions *Sessions
	ttl      time.Duration
	log      *slog.Logger
	mu       sync.Mutex
	version  int64     // last version loaded; -1: never
	pruned   time.Time // last prune of the in-memory set
	// tried: the first load was attempted (done or failed). The edge is
	// not ready before: it would accept tokens revoked before it started.
	tried atomic.Bool
}

func (v *revoker) idsKey() string       { return v.prefix + "edge:revoked" }
func (v *revoker) notBeforeKey() string { return v.prefix + "edge:notbefore" }
func (v *revoker) versionKey() string   { return v.prefix + "edge:revoked:version" }

// revokeToken revokes one token on this edge at once and on every edge
// through Redis.
func (v *revoker) revokeToken(ctx context.Context, ses Session) error {
	if ses.ID == "" {
		// A token from before token ids: only "everything issued before
		// now" can name it.
		return v.revokeUser(ctx, ses.UserID, v.sessions.now())
	}
	v.applyToken(ses.ID, ses.Expires)
	_, err := v.rdb.TxPipelined(context.WithoutCancel(ctx), func(p redis.Pipeliner) error {
		p.ZAdd(ctx, v.idsKey(), redis.Z{Score: float64(ses.Expires), Member: ses.ID})
		p.Incr(ctx, v.versionKey())
		p.Publish(ctx, v.channel, "revoke "+ses.ID+" "+strconv.FormatInt(ses.Expires, 10))
		return nil
	})
	if err != nil {
		return seckill.Unavailable(fmt.Errorf("recording a revoked session: %w", err),
			"the logout reached this edge only (Redis is unavailable); retry shortly")
	}
	return nil
}

// revokeUser refuses every token of a user issued before at.
func (v *revoker) revokeUser(ctx context.Context, user int64, at time.Time) error {
	ms := at.UnixMilli()
	v.applyNotBefore(user, ms)
	_, err := v.rdb.TxPipelined(context.WithoutCancel(ctx), func(p redis.Pipeliner) error {
		p.HSet(ctx, v.notBeforeKey(), strconv.FormatInt(user, 10), ms)
		p.Incr(ctx, v.versionKey())
		p.Publish(ctx, v.channel, "notbefore "+strconv.FormatInt(user, 10)+" "+strconv.FormatInt(ms, 10))
		return nil
	})
	if err != nil {
		return seckill.Unavailable(fmt.Errorf("recording a user's not-before: %w", err),
			"the logout reached this edge only (Redis is unavailable); retry shortly")
	}
	return nil
}

func (v *revoker) applyToken(id string, exp int64) {
	if v.sessions.rev.add(id, exp) {
		v.sessions.purgeID(id)
	}
}

func (v *revoker) applyNotBefore(user, ms int64) {
	if v.sessions.rev.setNotBefore(user, ms) {
		v.sessions.purgeUser(user)
	}
}

// event applies a "revoke ID EXP" or "notbefore USER MS" message.
func (v *revoker) event(kind, arg string) {
	a, b, _ := strings.Cut(arg, " ")
	n, err := strconv.ParseInt(b, 10, 64)
	if err != nil {
		return
	}
	switch kind {
	case "revoke":
		v.applyToken(a, n)
	case "notbefore":
		if u, err := strconv.ParseInt(a, 10, 64); err == nil {
			v.applyNotBefore(u, n)
		}
	}
}

// sync loads the record when its version moved (always when force).
func (v *revoker) sync(ctx context.Context, force bool) error {
	ver, err := v.rdb.Get(ctx, v.versionKey()).Int64()
	if err != nil && err != redis.Nil {
		return fmt.Errorf("reading the revocation version: %w", err)
	}
	v.mu.Lock()
	same := v.version == ver
	v.mu.Unlock()
	now := v.sessions.now()
	if same && !force {
		v.prune(now)
		return nil
	}
	live := &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now.Unix(), 10), Max: "+inf"}
	var idsCmd *redis.ZSliceCmd
	var nbCmd *redis.MapStringStringCmd
	_, err = v.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, v.idsKey(), "-inf", strconv.FormatInt(now.Unix(), 10))
		idsCmd = p.ZRangeByScoreWithScores(ctx, v.idsKey(), live)
		nbCmd = p.HGetAll(ctx, v.notBeforeKey())
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading revocations: %w", err)
	}
	ids, nbs := idsCmd.Val(), nbCmd.Val()
	// Merged, never replaced: a revocation is never undone, and one heard
	// on the channel meanwhile must not be lost.
	for _, z := range ids {
		if id, ok := z.Member.(string); ok {
			v.applyToken(id, int64(z.Score))
		}
	}
	var stale []string
	oldest := now.Add(-v.ttl).UnixMilli()
	for k, s := range nbs {
		u, err1 := strconv.ParseInt(k, 10, 64)
		ms, err2 := strconv.ParseInt(s, 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if ms < oldest {
			stale = append(stale, k)
			continue
		}
		v.applyNotBefore(u, ms)
	}
	if len(stale) > 0 {
		_ = v.rdb.HDel(ctx, v.notBeforeKey(), stale...).Err()
	}
	v.prune(now)
	v.mu.Lock()
	v.version = ver
	v.mu.Unlock()
	return nil
}

// prune drops expired revocations from memory, at most every 30 s (it
// walks the whole set under the lock every check reads).
func (v *revoker) prune(now time.Time) {
	v.mu.Lock()
	due := now.Sub(v.pruned) >= 30*time.Second
	if due {
		v.pruned = now
	}
	v.mu.Unlock()
	if due {
		v.sessions.rev.prune(now, v.ttl)
	}
}

func (v *revoker) syncWithin(ctx context.Context, force bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return v.sync(ctx, force)
}

// run loads the record at once, then checks its version every interval
// until ctx ends.
func (v *revoker) run(ctx context.Context, every time.Duration) {
	// Bounded: with Redis away at start the edge gets ready after 2 s
	// with what it has (nothing), and keeps trying.
	err := v.syncWithin(ctx, true)
	v.tried.Store(true)
	failing := err != nil
	if err != nil && ctx.Err() == nil {
		v.log.Warn("loading revoked sessions (retrying)", "err", err)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// After a failure (Redis away, so maybe our subscription too),
		// reload everything once it answers again.
		err := v.syncWithin(ctx, failing)
		if err != nil && ctx.Err() == nil && !failing {
			v.log.Warn("checking revoked sessions (this edge keeps its copy)", "err", err)
		}
		failing = err != nil
	}
}
