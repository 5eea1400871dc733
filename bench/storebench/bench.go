// Package storebench measures the purchase pipeline of seckill end to end
// (Redis reservation, outbox relay to RabbitMQ, worker into PostgreSQL) and
// the raw ceilings of the three servers it runs on, in the same run and on
// the same servers, so the pipeline figures can be read as a fraction of
// what the servers can do at all.
//
// Every run works in its own PostgreSQL database, Redis key prefix and
// RabbitMQ queues, and removes them when it ends.
//
// It is the part of `seckill bench` that links the store clients (go-redis,
// amqp091-go, pgx); package bench, the edge benchmarks that lab also uses,
// links none.
package storebench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"seckill/internal/redisconf"
)

// Config is what every benchmark needs.
type Config struct {
	RedisURL string // Redis URL
	AMQPURL  string // RabbitMQ URL
	PGURL    string // admin URL of PostgreSQL: a fresh database is created next to it
	Keep     bool   // keep the database (and print its URL) instead of dropping it

	// Pipeline.
	Units       int           // units of the item, one per user (default 100000)
	Concurrency int           // goroutines calling Reserve (default 128)
	Relays      int           // in-process relays (default 1)
	Workers     int           // in-process consumers+workers (default 1)
	Timeout     time.Duration // longest wait for PostgreSQL to hold every order (default 5m)

	// Tuning of the relay and consumer; zero keeps the package defaults.
	RelayBatch       int
	RelayMaxInFlight int
	Prefetch         int
	WorkerBatch      int
	WorkerFlush      time.Duration

	// Ceilings.
	Duration        time.Duration // how long each ceiling runs (default 3s)
	Count           int           // when > 0, each ceiling runs this many operations instead
	RedisGoroutines int           // default 50
	AMQPWindow      int           // confirms outstanding (default 512)
	PGBatch         int           // rows per insert (default 500)
	PGConns         []int         // parallel connections to measure (default 1 and 4)

	Logger   *slog.Logger // warnings of the relay and consumers (discarded when nil)
	Progress io.Writer    // progress lines (none when nil)
}

func (c *Config) defaults() {
	if c.Units <= 0 {
		c.Units = 100000
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 128
	}
	if c.Relays <= 0 {
		c.Relays = 1
	}
	if c.Workers <= 0 {
		c.Workers = 1
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.Duration <= 0 {
		c.Duration = 3 * time.Second
	}
	if c.RedisGoroutines <= 0 {
		c.RedisGoroutines = 50
	}
	if c.AMQPWindow <= 0 {
		c.AMQPWindow = 512
	}
	if c.PGBatch <= 0 {
		c.PGBatch = 500
	}
	if len(c.PGConns) == 0 {
		c.PGConns = []int{1, 4}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

func (c *Config) progress(format string, args ...any) {
	fmt.Fprintf(c.Progress, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// uniqueName returns bench_<what>_<random hex>, safe as a database name,
// Redis prefix or queue name.
func uniqueName(what string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "bench_" + what + "_" + hex.EncodeToString(b[:])
}

// tempDB is a database created for one run.
type tempDB struct {
	admin, name, url string
}

func createDB(ctx context.Context, admin, name string) (*tempDB, error) {
	u, err := url.Parse(admin)
	if err != nil {
		return nil, fmt.Errorf("parsing --pg-url: %w", err)
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL (admin URL): %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("creating database %s: %w", name, err)
	}
	u.Path = "/" + name
	return &tempDB{admin: admin, name: name, url: u.String()}, nil
}

func (d *tempDB) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.name}.Sanitize()+" WITH (FORCE)")
	return err
}

func redisClient(rawURL string, pool int) (*redis.Client, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing redis url: %w", err)
	}
	if opt.PoolSize < pool {
		opt.PoolSize = pool
	}
	return redisconf.New(opt), nil // as every seckill process: timeouts and retries
}

// deleteKeys deletes every Redis key under prefix.
func deleteKeys(rdb redis.UniversalClient, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return err
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := rdb.Del(ctx, keys[:n]...).Err(); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}
