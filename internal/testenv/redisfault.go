package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill/internal/faultproxy"
	"seckill/internal/redisconf"
)

// FaultReadTimeout is the read timeout of the client RedisBehindProxy
// returns: short, so a lost reply is retried within a test's patience.
const FaultReadTimeout = 300 * time.Millisecond

// FaultyRedis is a Redis client configured like production (package
// redisconf: the same MaxRetries and backoffs, a short read timeout) that
// reaches the test Redis through a fault proxy, with a direct client to
// look at the server's state behind the proxy's back.
type FaultyRedis struct {
	Client *redis.Client     // through the proxy
	Proxy  *faultproxy.Proxy // the faults
	Direct *redis.Client     // straight to the server
	Prefix string            // the test's own key prefix
	Opts   *redis.Options    // Client's options
}

// RedisBehindProxy returns a FaultyRedis on the test Redis with a short
// read timeout (FaultReadTimeout). Everything is closed and the test's keys
// deleted when the test ends.
func RedisBehindProxy(t testing.TB) *FaultyRedis {
	t.Helper()
	direct, prefix := Redis(t)
	return behindProxy(t, direct, prefix, FaultReadTimeout)
}

// RedisBehindProxyProd is RedisBehindProxy with every production setting,
// the read timeout included (redisconf.ReadTimeout), for tests that bound
// how long a request waits for a stalled Redis.
func RedisBehindProxyProd(t testing.TB) *FaultyRedis {
	t.Helper()
	direct, prefix := Redis(t)
	return behindProxy(t, direct, prefix, 0)
}

// Another returns a second client of the same server and key prefix
// through a proxy of its own, so a fault can hit one process (say the
// backend's Redis connections) and not another (the edge's).
func (f *FaultyRedis) Another(t testing.TB) *FaultyRedis {
	t.Helper()
	return behindProxy(t, f.Direct, f.Prefix, f.Opts.ReadTimeout)
}

func behindProxy(t testing.TB, direct *redis.Client, prefix string, readTimeout time.Duration) *FaultyRedis {
	t.Helper()
	p, err := faultproxy.New(direct.Options().Addr)
	if err != nil {
		t.Fatalf("starting the fault proxy: %v", err)
	}
	opt, err := redis.ParseURL(RedisURL(t))
	if err != nil {
		t.Fatalf("parsing SECKILL_TEST_REDIS: %v", err)
	}
	opt.Addr = p.Addr()
	opt.ReadTimeout = readTimeout
	c := redisconf.New(opt)
	t.Cleanup(func() {
		_ = c.Close()
		_ = p.Close()
	})
	// One pooled connection past its handshake, so a fault hits a command,
	// not the connection's HELLO.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("pinging Redis through the fault proxy: %v", err)
	}
	return &FaultyRedis{Client: c, Proxy: p, Direct: direct, Prefix: prefix, Opts: opt}
}

// LoseReply runs call while the proxy drops every reply, and lets replies
// through again as soon as ran reports (reading through the direct client)
// that the command took effect on the server and a reply was dropped: the
// exact fault of a reply lost after the command ran. go-redis times out and
// sends the command again; LoseReply returns what call finally returns.
// It fails the test if the command never takes effect or call never
// returns.
func LoseReply[T any](t testing.TB, f *FaultyRedis, ran func(ctx context.Context) bool, call func() (T, error)) (T, error) {
	t.Helper()
	type result struct {
		v   T
		err error
	}
	f.Proxy.DropReplies(true)
	defer f.Proxy.DropReplies(false)
	before := f.Proxy.Dropped()
	done := make(chan result, 1)
	go func() {
		v, err := call()
		done <- result{v, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !(f.Proxy.Dropped() > before && ran(ctx)) {
		select {
		case r := <-done:
			t.Fatalf("the call returned before its reply was lost: %v, %v", r.v, r.err)
		case <-ctx.Done():
			t.Fatal("the command never took effect behind the proxy")
		case <-time.After(time.Millisecond):
		}
	}
	f.Proxy.DropReplies(false)
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not return after replies flowed again")
	}
	var zero T
	return zero, nil
}
