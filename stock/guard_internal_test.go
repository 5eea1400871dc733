package stock

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"seckill"
)

type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

// TestGuardFailedMapsErrors: what a guarded reservation answers for each
// kind of Redis failure. Only a bug (an unexpected error reply) is a 500.
func TestGuardFailedMapsErrors(t *testing.T) {
	g := NewGuard(New(nil, "t:"), GuardConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	g.frozen.Store(false)
	g.initial = false
	cases := []struct {
		err    error
		code   string
		freeze bool
	}{
		{replyErr("NOSCRIPT No matching script. Please use EVAL."), seckill.EUnavailable, true},
		{replyErr("LOADING Redis is loading the dataset in memory"), seckill.EUnavailable, false},
		{replyErr("MISCONF Errors writing to the AOF file"), seckill.EUnavailable, false},
		{replyErr("BUSY Redis is busy running a script"), seckill.EUnavailable, false},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), seckill.EUnavailable, false},
		{io.EOF, seckill.EUnavailable, false},
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
