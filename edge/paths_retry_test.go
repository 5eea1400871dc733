package edge

import (
	"context"
	"testing"
	"time"

	"seckill"
	"seckill/internal/testenv"
)

// TestPathsReplyLost: every path call whose reply is lost after it ran,
// then retried by go-redis (production MaxRetries), gives the first-try
// answer: the issued path is the stored one, and a consume leaves the path
// consumed exactly once without an error.
func TestPathsReplyLost(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	p := newPaths(f.Client, f.Prefix, time.Minute)
	ctx := context.Background()
	const user, item = 5, 77

	// Issue: SET of a value chosen before the first try.
	path, err := testenv.LoseReply(t, f, func(ctx context.Context) bool {
		return f.Direct.Exists(ctx, p.key(user, item)).Val() == 1
	}, func() (string, error) {
		path, _, err := p.issue(ctx, user, item)
		return path, err
	})
	if err != nil {
		t.Fatalf("issue after a lost reply: %v", err)
	}
	if err := p.check(ctx, user, item, path); err != nil {
		t.Fatalf("the path Issue returned is not the live one: %v", err)
	}
	// Warm the consume script so the attempt below is one EVALSHA.
	if err := p.consume(ctx, user, item, "warm"); err != nil {
		t.Fatal(err)
	}

	// Consume: the first run deletes, the retry finds nothing and answers 0;
	// Consume reports success and the path is gone, once.
	_, err = testenv.LoseReply(t, f, func(ctx context.Context) bool {
		return f.Direct.Exists(ctx, p.key(user, item)).Val() == 0
	}, func() (struct{}, error) { return struct{}{}, p.consume(ctx, user, item, path) })
	if err != nil {
		t.Fatalf("consume after a lost reply: %v", err)
	}
	if code := seckill.ErrorCode(p.check(ctx, user, item, path)); code != seckill.EBadPath {
		t.Fatalf("consumed path still checks: %s", code)
	}

	// A consume retried after a newer path was issued leaves the newer one.
	newer, _, err := p.issue(ctx, user, item)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.consume(ctx, user, item, path); err != nil {
		t.Fatal(err)
	}
	if err := p.check(ctx, user, item, newer); err != nil {
		t.Fatalf("a stale consume removed the newer path: %v", err)
	}
}

// TestPathsRedisDown: with Redis refused or stalled every path call fails
// with dependency_unavailable (503), bounded in time.
func TestPathsRedisDown(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	p := newPaths(f.Client, f.Prefix, time.Minute)
	ctx := context.Background()
	path, _, err := p.issue(ctx, 5, 77)
	if err != nil {
		t.Fatal(err)
	}
	for _, fault := range []string{"down", "stalled"} {
		t.Run(fault, func(t *testing.T) {
			if fault == "down" {
				f.Proxy.Refuse(true)
				f.Proxy.CutAll()
				defer f.Proxy.Refuse(false)
			} else {
				f.Proxy.DropReplies(true)
				defer f.Proxy.DropReplies(false)
			}
			calls := map[string]func() error{
				"issue":          func() error { _, _, err := p.issue(ctx, 5, 77); return err },
				"issue shared":   func() error { _, _, err := p.issueShared(ctx, 5, 77); return err },
				"check":          func() error { return p.check(ctx, 5, 77, path) },
				"check shared":   func() error { return p.checkShared(ctx, 77, path) },
				"consume":        func() error { return p.consume(ctx, 5, 77, path) },
				"consume shared": func() error { return p.consumeShared(ctx, 77, path) },
			}
			for name, call := range calls {
				start := time.Now()
				err := call()
				if code := seckill.ErrorCode(err); code != seckill.EDependency {
					t.Errorf("%s: %v (code %s), want %s", name, err, code, seckill.EDependency)
				}
				if took := time.Since(start); took > 5*time.Second {
					t.Errorf("%s took %v", name, took)
				}
			}
		})
	}
}

// TestDedupKeepsAnsweringWhenRedisIsDown: a Bloom positive that the exact
// record cannot confirm (Redis refused) is let through, not turned into an
// error; it is counted, and confirmed again once Redis is back.
func TestDedupKeepsAnsweringWhenRedisIsDown(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	ctx := context.Background()
	buyers := buyerRecordFunc(func(ctx context.Context, itemID, userID int64) (string, bool, error) {
		v, err := f.Client.HGet(ctx, f.Prefix+"buyers", "1").Result()
		if err != nil {
			return "", false, err
		}
		return v, true, nil
	})
	if err := f.Direct.HSet(ctx, f.Prefix+"buyers", "1", "o-1").Err(); err != nil {
		t.Fatal(err)
	}
	d := newDedup(buyers, 1000)
	d.add(1, 7)
	f.Proxy.Refuse(true)
	f.Proxy.CutAll()
	ref, held, err := d.holds(ctx, 1, 7)
	if err != nil || held || ref != "" || d.unconfirmedCount() != 1 {
		t.Fatalf("Redis down: %q %v %v, %d unconfirmed; want not held, no error, 1", ref, held, err, d.unconfirmedCount())
	}
	f.Proxy.Refuse(false)
	if ref, held, err := d.holds(ctx, 1, 7); err != nil || !held || ref != "o-1" {
		t.Fatalf("Redis back: %q %v %v", ref, held, err)
	}
}

type buyerRecordFunc func(ctx context.Context, itemID, userID int64) (string, bool, error)

func (f buyerRecordFunc) Buyer(ctx context.Context, itemID, userID int64) (string, bool, error) {
	return f(ctx, itemID, userID)
}
