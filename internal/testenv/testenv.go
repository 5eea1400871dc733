// Package testenv gives tests the real servers started by scripts/testenv.sh,
// each test with its own Redis key prefix, RabbitMQ queue names and
// PostgreSQL database so packages can run in parallel.
//
// The script exports:
//
//	SECKILL_TEST_REDIS     redis://127.0.0.1:6390/0
//	SECKILL_TEST_AMQP      amqp://guest:guest@127.0.0.1:5680/
//	SECKILL_TEST_PG        postgres://postgres@127.0.0.1:5440/postgres?sslmode=disable
//	SECKILL_TEST_ZK        127.0.0.1:2191
//	SECKILL_TEST_SERVICES  path of scripts/services.sh (to start private servers)
//
// When a variable is missing the test is skipped, unless CI=true, where a
// missing server is a failure.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

func need(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v != "" {
		return v
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set: run the tests through `make test` (scripts/testenv.sh)", name)
	}
	t.Skipf("%s is not set: run the tests through `make test` to use the real servers", name)
	return ""
}

var unsafe = regexp.MustCompile(`[^a-z0-9]+`)

// Name returns a name unique to this test run, made of the test's name and
// random bits, safe as a Redis prefix, queue name or database name.
func Name(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := unsafe.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(n) > 30 {
		n = n[:30]
	}
	return "t_" + n + "_" + hex.EncodeToString(b[:])
}

// RedisURL returns the URL of the test Redis.
func RedisURL(t testing.TB) string { return need(t, "SECKILL_TEST_REDIS") }

// Redis returns a client of the test Redis and a key prefix of the test's
// own; keys under the prefix are deleted when the test ends.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	opt, err := redis.ParseURL(RedisURL(t))
	if err != nil {
		t.Fatalf("parsing SECKILL_TEST_REDIS: %v", err)
	}
	opt.PoolSize = 64
	rdb := redis.NewClient(opt)
	prefix := Name(t) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		_ = rdb.Close()
	})
	return rdb, prefix
}

// AMQPURL returns the URL of the test RabbitMQ.
func AMQPURL(t testing.TB) string { return need(t, "SECKILL_TEST_AMQP") }

// ZooKeeper returns the address of the test ZooKeeper.
func ZooKeeper(t testing.TB) string { return need(t, "SECKILL_TEST_ZK") }

// ServicesScript returns the path of scripts/services.sh.
func ServicesScript(t testing.TB) string { return need(t, "SECKILL_TEST_SERVICES") }

// Postgres creates a fresh database for the test and returns its URL. The
// database is dropped when the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	admin := need(t, "SECKILL_TEST_PG")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connecting to the test PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	name := Name(t)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parsing SECKILL_TEST_PG: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Eventually polls cond every 20ms until it holds or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
