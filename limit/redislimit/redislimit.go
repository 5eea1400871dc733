// Package redislimit is limit.Budget in Redis: every edge on one Redis
// shares the counts. Each quota is a sorted set of the attempt ids that
// took from it, scored by the Redis server's clock in milliseconds (one
// clock for every edge); one Lua script drops the takes older than the
// window, checks every quota and takes from all of them or from none.
//
// Retry safety (ARCHITECTURE.md "Retry safety"): go-redis resends a script
// whose reply was lost. The script finds the attempt id already in the
// first quota's set and answers "allowed" again without counting it twice;
// an id that was refused took nothing, so its retry is judged afresh and a
// full budget stays full. Give removes the id (ZREM twice = once).
package redislimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill/internal/rkeys"
	"seckill/limit"
)

// Budget is a limit.Budget kept in Redis under a key prefix.
type Budget struct {
	rdb    redis.UniversalClient
	prefix string
}

var _ limit.Budget = (*Budget)(nil)

// New returns a Budget on rdb, its keys under prefix (internal/rkeys).
func New(rdb redis.UniversalClient, prefix string) *Budget {
	return &Budget{rdb: rdb, prefix: prefix}
}

// takeScript: KEYS[i] is quota i's sorted set; ARGV[1] the attempt id
// ("" for Peek: judge, take nothing), ARGV[2i] quota i's limit and
// ARGV[2i+1] its window in ms. Returns
// {allowed 0|1, quota index (1-based), remaining, ms}: when refused, ms is
// the wait until the refusing quota (the longest wait of all) frees a
// take; when allowed, the time until the quota with the fewest takes left
// is whole again. Nothing is written before every check passed, except
// dropping takes older than their window (which no decision can see).
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local n = #KEYS
local counts = {}
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[2*i+1]))
  counts[i] = redis.call('ZCARD', KEYS[i])
end
if id == '' or not redis.call('ZSCORE', KEYS[1], id) then
  local rule, wait = 0, -1
  for i = 1, n do
    local lim = tonumber(ARGV[2*i])
    if counts[i] >= lim then
      local e = redis.call('ZRANGE', KEYS[i], counts[i] - lim, counts[i] - lim, 'WITHSCORES')
      local w = tonumber(e[2]) + tonumber(ARGV[2*i+1]) - now
      if w > wait then rule, wait = i, w end
    end
  end
  if rule > 0 then return {0, rule, 0, wait} end
  for i = 1, n do
    if id ~= '' then
      redis.call('ZADD', KEYS[i], now, id)
      redis.call('PEXPIRE', KEYS[i], ARGV[2*i+1])
    end
    counts[i] = counts[i] + 1
  end
end
local best, left, reset = 0, 0, 0
for i = 1, n do
  local l = tonumber(ARGV[2*i]) - counts[i]
  if best == 0 or l < left then
    local e = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local first = now
    if e[2] then first = tonumber(e[2]) end
    best, left, reset = i, l, first + tonumber(ARGV[2*i+1]) - now
  end
end
return {1, best, left, reset}
`)

func (b *Budget) keys(scope string, qs []limit.Quota) []string {
	sp := rkeys.Space(b.prefix)
	keys := make([]string, len(qs))
	for i, q := range qs {
		keys[i] = sp.Budget(scope, q.Name, q.Key)
	}
	return keys
}

// Take takes one from every quota for id, or from none (limit.Budget).
func (b *Budget) Take(ctx context.Context, scope, id string, qs ...limit.Quota) (limit.Decision, error) {
	if id == "" {
		return limit.Decision{}, fmt.Errorf("redislimit: an attempt id is needed")
	}
	return b.run(ctx, scope, id, qs)
}

// Peek says what a Take would answer now, taking nothing (limit.Budget).
func (b *Budget) Peek(ctx context.Context, scope string, qs ...limit.Quota) (limit.Decision, error) {
	return b.run(ctx, scope, "", qs)
}

func (b *Budget) run(ctx context.Context, scope, id string, qs []limit.Quota) (limit.Decision, error) {
	if len(qs) == 0 {
		return limit.Decision{Allowed: true}, nil
	}
	args := make([]any, 0, 1+2*len(qs))
	args = append(args, id)
	for _, q := range qs {
		if q.Limit < 1 || q.Window < time.Millisecond {
			return limit.Decision{}, fmt.Errorf("redislimit: quota %q: limit %d and window %v must be positive", q.Name, q.Limit, q.Window)
		}
		args = append(args, q.Limit, q.Window.Milliseconds())
	}
	res, err := takeScript.Run(ctx, b.rdb, b.keys(scope, qs), args...).Int64Slice()
	if err != nil {
		return limit.Decision{}, fmt.Errorf("taking from budget %s: %w", scope, err)
	}
	if len(res) != 4 || res[1] < 1 || int(res[1]) > len(qs) {
		return limit.Decision{}, fmt.Errorf("taking from budget %s: unexpected reply %v", scope, res)
	}
	q := qs[res[1]-1]
	ms := time.Duration(max(res[3], 0)) * time.Millisecond
	d := limit.Decision{Allowed: res[0] == 1, Rule: q.Name, Limit: q.Limit, Window: q.Window, Remaining: int(max(res[2], 0)), Reset: ms}
	if !d.Allowed {
		d.RetryAfter = ms
	}
	return d, nil
}

// Give returns what id took from every quota (limit.Budget).
func (b *Budget) Give(ctx context.Context, scope, id string, qs ...limit.Quota) error {
	if len(qs) == 0 {
		return nil
	}
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range b.keys(scope, qs) {
			p.ZRem(ctx, k, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("giving back to budget %s: %w", scope, err)
	}
	return nil
}

// Count returns how many takes quota q holds in scope now, for tests and
// operators (a read: it drops nothing).
func (b *Budget) Count(ctx context.Context, scope string, q limit.Quota) (int64, error) {
	k := b.keys(scope, []limit.Quota{q})[0]
	n, err := b.rdb.ZCount(ctx, k, "("+strconv.FormatInt(time.Now().Add(-q.Window).UnixMilli(), 10), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("counting budget %s: %w", scope, err)
	}
	return n, nil
}
