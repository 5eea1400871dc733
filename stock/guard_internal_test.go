package stock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"seckill"
)

type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

// TestGuardFailedMapsErrors: what a guarded reservation answers for each
// kind of Redis failure. Only a bug (an unexpected error reply, an error
// that is not a failure of Redis) is a 500.
func TestGuardFailedMapsErrors(t *testing.T) {
	g := NewGuard(New(nil, "t:"), GuardConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	g.frozen.Store(false)
	g.initial = false
	cases := []struct {
		err    error
		code   seckill.Code
		freeze bool
	}{
		{replyErr("NOSCRIPT No matching script. Please use EVAL."), seckill.EUnavailable, true},
		{replyErr("LOADING Redis is loading the dataset in memory"), seckill.EUnavailable, false},
		{replyErr("MISCONF Errors writing to the AOF file"), seckill.EUnavailable, false},
		{replyErr("BUSY Redis is busy running a script"), seckill.EUnavailable, false},
		{replyErr("ERR max number of clients reached"), seckill.EUnavailable, false},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, seckill.EUnavailable, false},
		{fmt.Errorf("wrapped: %w", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}), seckill.EUnavailable, false},
		{io.EOF, seckill.EUnavailable, false},
		{context.DeadlineExceeded, seckill.EUnavailable, false},
		{redis.ErrPoolTimeout, seckill.EUnavailable, false},
		{redis.ErrClosed, seckill.EUnavailable, false},
		{errors.New("redis: connection not available"), seckill.EUnavailable, false},
		{errors.New("redis: can't parse reply"), seckill.EInternal, false},
		{replyErr("BUSYGROUP Consumer Group name already exists"), seckill.EInternal, false},
		{replyErr("WRONGTYPE Operation against a key holding the wrong kind of value"), seckill.EInternal, false},
		{context.Canceled, seckill.EInternal, false},
	}
	for _, c := range cases {
		g.frozen.Store(false)
		got := g.failed(c.err)
		if code := seckill.ErrorCode(got); code != c.code {
			t.Errorf("%v: code %s, want %s", c.err, code, c.code)
		}
		if g.Frozen() != c.freeze {
			t.Errorf("%v: frozen %v, want %v", c.err, g.Frozen(), c.freeze)
		}
	}
}

// TestUnavailableKeepsTheCause: a Redis failure outside reservations gets
// code dependency_unavailable and still wraps its cause; anything else is
// returned as it is.
func TestUnavailableKeepsTheCause(t *testing.T) {
	cause := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	err := fmt.Errorf("reading counters of item 1: %w", unavailable(cause))
	if seckill.ErrorCode(err) != seckill.EDependency || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("%v: code %s", err, seckill.ErrorCode(err))
	}
	bug := replyErr("WRONGTYPE Operation against a key holding the wrong kind of value")
	if got := unavailable(bug); got != error(bug) {
		t.Fatalf("a bug became %v", got)
	}
	if unavailable(nil) != nil {
		t.Fatal("nil became an error")
	}
}
