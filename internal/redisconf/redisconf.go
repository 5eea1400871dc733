// Package redisconf is the one place that decides how every seckill
// process talks to Redis: timeouts and the retry policy. cmd/seckill (every
// subcommand on a real Redis), seckill bench and the retry tests build
// their clients with it, so a test that loses a reply sees exactly what
// production sees.
//
// go-redis retries a command after a read timeout, EOF or a reset, even
// when the command already reached the server and ran. That is safe only
// because every command seckill sends is idempotent or made idempotent per
// request: ARCHITECTURE.md, "Retry safety", lists each one and why.
//
// The timeouts bound how long one command can take when Redis is down or
// stalls (SIGSTOP, a fork, a lost network): each attempt waits at most one
// ReadTimeout (or PoolTimeout, or DialTimeout), and the whole command,
// retries included, at most CommandBudget: that is the longest a command
// can take however Redis fails (down, stalled, unreachable). The go-redis
// defaults (5 s read timeout, 5 dial attempts, no overall bound) let one
// command wait 20 s before the edge could answer 503.
package redisconf

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The production policy. A value set in the Redis URL (for example
// ?read_timeout=2s&max_retries=5) takes precedence; every command stays
// safe to retry whatever MaxRetries is.
const (
	// MaxRetries is how many times go-redis sends a command again after a
	// network error or a timeout: 4 attempts in all.
	MaxRetries = 3
	// ReadTimeout bounds the wait for one reply. A Lua script of ours runs
	// in microseconds; a reply later than this means Redis is stalled (or
	// this process starved of CPU: not much shorter, or a busy machine
	// times out by itself). Blocking reads (XREADGROUP BLOCK) get their
	// block time on top.
	ReadTimeout = 2 * time.Second
	// WriteTimeout bounds one write of a command to the socket.
	WriteTimeout = 2 * time.Second
	// DialTimeout bounds one connection attempt.
	DialTimeout = time.Second
	// DialerRetries is the number of connection attempts per command
	// attempt (go-redis retries the command itself MaxRetries times).
	DialerRetries = 1
	// PoolTimeout bounds the wait for a free pooled connection: all busy
	// during a stall, or a burst of buyers queueing for PoolSize
	// connections. CommandBudget bounds it too.
	PoolTimeout = 4 * time.Second
	// MinRetryBackoff and MaxRetryBackoff bound the exponential backoff
	// between attempts.
	MinRetryBackoff = 8 * time.Millisecond
	MaxRetryBackoff = 256 * time.Millisecond
	// PoolSize is the least number of pooled connections a process keeps.
	PoolSize = 128
	// CommandBudget bounds one command or pipeline, every retry included:
	// go-redis's own bound depends on how many stale pooled connections and
	// failed handshakes it meets (8.2 s measured for a MULTI/EXEC against
	// a stalled Redis with 1 s timeouts), so the client adds this deadline to
	// any context that has none or a later one (ContextTimeoutEnabled).
	// Blocking reads (XREADGROUP BLOCK, BLPOP...) are exempt: their own
	// block time bounds them.
	CommandBudget = 4 * time.Second
)

// Apply sets the production policy on opt wherever opt leaves a setting at
// its zero value (so a URL parameter wins) and raises PoolSize to at least
// PoolSize. It turns ContextTimeoutEnabled on, so a context's deadline
// bounds socket reads and writes (New adds CommandBudget as that deadline).
func Apply(opt *redis.Options) {
	opt.ContextTimeoutEnabled = true
	if opt.PoolSize < PoolSize {
		opt.PoolSize = PoolSize
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = MaxRetries
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = ReadTimeout
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = WriteTimeout
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = DialTimeout
	}
	if opt.DialerRetries == 0 {
		opt.DialerRetries = DialerRetries
	}
	if opt.PoolTimeout == 0 {
		opt.PoolTimeout = PoolTimeout
	}
	if opt.MinRetryBackoff == 0 {
		opt.MinRetryBackoff = MinRetryBackoff
	}
	if opt.MaxRetryBackoff == 0 {
		opt.MaxRetryBackoff = MaxRetryBackoff
	}
}

// New applies the production policy to opt and returns a client that
// bounds every non-blocking command by CommandBudget.
func New(opt *redis.Options) *redis.Client {
	Apply(opt)
	c := redis.NewClient(opt)
	c.AddHook(budget{CommandBudget})
	return c
}

// NewClient parses a redis:// URL and returns New's client.
func NewClient(rawURL string) (*redis.Client, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return New(opt), nil
}

// budget is the go-redis hook that bounds each command and pipeline.
type budget struct{ d time.Duration }

func (b budget) DialHook(next redis.DialHook) redis.DialHook { return next }

func (b budget) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if blocking(cmd) {
			return next(ctx, cmd)
		}
		ctx, cancel := b.bound(ctx)
		defer cancel()
		return next(ctx, cmd)
	}
}

func (b budget) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if blocking(c) {
				return next(ctx, cmds)
			}
		}
		ctx, cancel := b.bound(ctx)
		defer cancel()
		return next(ctx, cmds)
	}
}

func (b budget) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= b.d {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.d)
}

// blockingCmds wait on the server by design; their block time bounds them.
var blockingCmds = map[string]bool{
	"blpop": true, "brpop": true, "brpoplpush": true, "blmove": true, "blmpop": true,
	"bzpopmin": true, "bzpopmax": true, "bzmpop": true, "wait": true, "waitaof": true,
}

func blocking(cmd redis.Cmder) bool {
	name := strings.ToLower(cmd.Name())
	if blockingCmds[name] {
		return true
	}
	if name == "xread" || name == "xreadgroup" {
		for _, a := range cmd.Args() {
			if s, ok := a.(string); ok && strings.EqualFold(s, "block") {
				return true
			}
		}
	}
	return false
}
