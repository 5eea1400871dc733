package edge_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/edge"
)

// evalCounter counts the scripts a Redis client sends (EVALSHA, EVAL).
type evalCounter struct{ n atomic.Int64 }

func (c *evalCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *evalCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c *evalCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// queueSale creates a waiting-room sale starting in an hour (everyone in
// the pre-queue), joins users, and returns the base path, each user's
// poll token and exact position (asked of Redis).
func (env *outageEnv) queueSale(t *testing.T, users []int64) (string, map[int64]string, map[int64]float64) {
	t.Helper()
	now := time.Now()
	cr := env.admin(t, "POST", "/admin/items", map[string]any{
		"name": "queued", "stock": 5, "starts_at": now.Add(time.Hour), "ends_at": now.Add(2 * time.Hour), "challenge": "none",
		"allocation": "queue", "queue_opens_at": now.Add(-time.Minute)})
	if cr.status != 201 {
		t.Fatalf("creating a queue sale: %d %v", cr.status, cr.body)
	}
	base := fmt.Sprintf("/api/items/%d", int64(cr.body["id"].(float64)))
	testenvEventually(t, func() bool { return env.do(t, "GET", base, 0, nil).status == 200 })
	tokens, positions := map[int64]string{}, map[int64]float64{}
	for _, u := range users {
		j := env.do(t, "POST", base+"/queue", u, nil)
		tokens[u], _ = j.body["poll_token"].(string)
		if j.status != 200 || tokens[u] == "" {
			t.Fatalf("join of %d: %d %v", u, j.status, j.body)
		}
	}
	for _, u := range users {
		p := env.do(t, "GET", base+"/queue", u, nil)
		positions[u], _ = p.body["position"].(float64)
	}
	return base, tokens, positions
}

// TestQueuePollTokenRedisStalled: Redis stalls (every byte delayed a
// minute, as a SIGSTOPped server). Polls with tokens are answered from the
// view while it is younger than --queue-view-stale, then 503 with
// Retry-After, never 500; while the refresh is stuck, they do not pile
// onto Redis with a script each (before the fix every poll past stale
// sent its own script and waited the whole command budget, 4 s, and the
// poll that ran the failed refresh waited two). Redis back: the polls are
// answered from the view again, the positions exact.
func TestQueuePollTokenRedisStalled(t *testing.T) {
	const stale = 300 * time.Millisecond
	env := newOutageEnv(t, func(c *edge.Config) { c.QueueViewStale = stale })
	var users []int64
	for u := int64(71); u <= 82; u++ {
		users = append(users, u)
	}
	base, tokens, positions := env.queueSale(t, users)
	var behind []int64 // not the head: the view answers them
	for _, u := range users {
		if positions[u] > 1 {
			behind = append(behind, u)
		}
	}
	if p, _ := env.sendToken(t, base+"/queue", behind[0], tokens[behind[0]], false); p.status != 200 || p.body["position"] != positions[behind[0]] {
		t.Fatalf("poll with the token, Redis up: %d %v", p.status, p.body)
	}
	cnt := &evalCounter{}
	env.edgeRedis.Client.AddHook(cnt)
	stalled := time.Now()
	env.edgeRedis.Proxy.SetLatency(time.Minute)
	// Polls one after another until one is refused: 200 only while the
	// view may answer.
	var refusedAt time.Duration
	for i := 0; refusedAt == 0; i++ {
		u := behind[i%len(behind)]
		sent := time.Since(stalled)
		p, _ := env.sendToken(t, base+"/queue", u, tokens[u], false)
		switch {
		case p.status == 200 && sent <= stale:
		case p.status == 503 && p.code == string(seckill.EDependency) && p.retryAfter != "":
			refusedAt = time.Since(stalled)
		default:
			t.Fatalf("poll %d, sent %v after Redis stalled (stale %v): %d %v (Retry-After %q)", i, sent, stale, p.status, p.body, p.retryAfter)
		}
		if time.Since(stalled) > 20*time.Second {
			t.Fatal("no 503 in 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Many polls at once while Redis is still stalled: all 503, with no
	// script of their own.
	before := cnt.n.Load()
	var wg sync.WaitGroup
	replies := make([]reply, len(behind))
	for i, u := range behind {
		wg.Go(func() { replies[i], _ = env.sendToken(t, base+"/queue", u, tokens[u], false) })
	}
	wg.Wait()
	for i, p := range replies {
		if p.status != 503 || p.code != string(seckill.EDependency) || p.retryAfter == "" {
			t.Fatalf("poll of %d with Redis stalled: %d %v (Retry-After %q)", behind[i], p.status, p.body, p.retryAfter)
		}
	}
	sent := cnt.n.Load() - before
	t.Logf("first 503 %v after the stall; %d polls at once sent %d scripts", refusedAt, len(behind), sent)
	if sent > 1 {
		t.Errorf("%d polls with tokens sent %d scripts to a stalled Redis, want at most one (the refresh)", len(behind), sent)
	}
	env.edgeRedis.Proxy.SetLatency(0)
	env.edgeRedis.Proxy.CutAll()
	testenvEventually(t, func() bool {
		p, _ := env.sendToken(t, base+"/queue", behind[0], tokens[behind[0]], false)
		return p.status == 200 && p.body["position"] == positions[behind[0]]
	})
}

// TestQueuePollTokenAbuse: tokens that must not be answered from the view
// (another item's, another user's, a changed byte, another secret's, huge
// or malformed, as the header or the cookie) are ignored: the poll is
// answered by Redis (200, the exact position and a freshly signed token of
// its own), never 4xx/5xx; the own token is answered from the view (it is
// echoed back).
func TestQueuePollTokenAbuse(t *testing.T) {
	env := newOutageEnv(t)
	users := []int64{91, 92, 93}
	base, tokens, positions := env.queueSale(t, users)
	_, tokens2, _ := env.queueSale(t, users)
	var u, other int64 // u behind the head
	for _, x := range users {
		if positions[x] > 1 && u == 0 {
			u = x
		} else if other == 0 {
			other = x
		}
	}
	own, _ := env.sendToken(t, base+"/queue", u, tokens[u], false)
	if own.status != 200 || own.body["poll_token"] != tokens[u] || own.body["position"] != positions[u] {
		t.Fatalf("the own token: %d %v", own.status, own.body)
	}
	changed := []byte(tokens[u])
	changed[len(changed)-3] ^= 1
	for _, c := range []struct {
		name, token string
		cookie      bool
	}{
		{"another item's token", tokens2[u], false},
		{"another user's token", tokens[other], false},
		{"a changed byte", string(changed), false},
		{"huge", strings.Repeat(tokens[u], 200), false},
		{"huge cookie", strings.Repeat("A", 3000), true},
		{"no signature", strings.Split(tokens[u], ".")[0], false},
		{"dots", "....", false},
		{"not base64", "!!!.???", true},
		{"empty parts", ".", true},
	} {
		p, _ := env.sendToken(t, base+"/queue", u, c.token, c.cookie)
		if p.status != 200 || p.body["state"] != "waiting" || p.body["position"] != positions[u] || p.body["poll_token"] == c.token || p.body["poll_token"] == "" {
			t.Errorf("%s: %d %v", c.name, p.status, p.body)
		}
	}
	t.Logf("own token at position %v: answered from the view; %d abusive tokens answered by Redis", own.body["position"], 9)
}
