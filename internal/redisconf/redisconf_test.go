package redisconf

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestApplyKeepsWhatTheURLSets(t *testing.T) {
	opt, err := redis.ParseURL("redis://127.0.0.1:6379/0?read_timeout=3s")
	if err != nil {
		t.Fatal(err)
	}
	Apply(opt)
	if opt.ReadTimeout != 3*time.Second || opt.MaxRetries != MaxRetries || opt.PoolTimeout != PoolTimeout ||
		opt.DialerRetries != DialerRetries || opt.PoolSize != PoolSize || !opt.ContextTimeoutEnabled {
		t.Fatalf("%+v", opt)
	}
}

func TestBlocking(t *testing.T) {
	ctx := context.Background()
	for cmd, want := range map[redis.Cmder]bool{
		redis.NewStringCmd(ctx, "get", "k"):                                        false,
		redis.NewXStreamSliceCmd(ctx, "xreadgroup", "group", "g", "c", "streams"):  false,
		redis.NewXStreamSliceCmd(ctx, "XREADGROUP", "group", "g", "c", "BLOCK", 5): true,
		redis.NewStringSliceCmd(ctx, "blpop", "k", 1):                              true,
	} {
		if got := blocking(cmd); got != want {
			t.Errorf("%v: blocking %v, want %v", cmd.Args(), got, want)
		}
	}
}

func TestBudgetKeepsAnEarlierDeadline(t *testing.T) {
	b := budget{time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	got, c2 := b.bound(ctx)
	defer c2()
	if dl, _ := got.Deadline(); time.Until(dl) > 100*time.Millisecond {
		t.Fatal("an earlier deadline was extended")
	}
	got, c3 := b.bound(context.Background())
	defer c3()
	if dl, ok := got.Deadline(); !ok || time.Until(dl) > time.Second {
		t.Fatal("no budget on a context without deadline")
	}
}
