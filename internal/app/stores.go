package app

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"seckill/internal/redisconf"
	"seckill/postgres"
)

// Stores are the servers a role talks to; each role uses the ones it
// needs (Validate checks only those).
type Stores struct {
	RedisURL    string // redis://host:port/db
	RedisPrefix string // prefix of every Redis key
	AMQPURL     string // amqp://user:pass@host:port/vhost
	Queue       string // RabbitMQ queue of orders (QUEUE.dead holds its dead letters)
	PGURL       string // postgres://...
}

// DefaultStores are the built-in defaults of the subcommands.
var DefaultStores = Stores{
	RedisURL:    "redis://127.0.0.1:6379/0",
	RedisPrefix: "seckill:",
	AMQPURL:     "amqp://guest:guest@127.0.0.1:5672/",
	Queue:       "seckill.orders",
	PGURL:       "postgres://postgres@127.0.0.1:5432/seckill?sslmode=disable",
}

func (s Stores) validate(ps *Problems, redisOn, amqpOn, pgOn bool) {
	if redisOn {
		if _, err := redis.ParseURL(s.RedisURL); err != nil {
			ps.add("redis-url", "%q is not a Redis URL such as redis://127.0.0.1:6379/0 (%v)", MaskURL(s.RedisURL), err)
		}
		if s.RedisPrefix == "" {
			ps.add("redis-prefix", "must not be empty (another application's keys could collide)")
		}
	}
	if amqpOn {
		if u, err := url.Parse(s.AMQPURL); err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "" {
			ps.add("amqp-url", "%q is not a RabbitMQ URL such as amqp://user:password@127.0.0.1:5672/", MaskURL(s.AMQPURL))
		}
		if s.Queue == "" {
			ps.add("queue", "must not be empty")
		}
	}
	if pgOn {
		if u, err := url.Parse(s.PGURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			ps.add("pg-url", "%q is not a PostgreSQL URL such as postgres://user@127.0.0.1:5432/seckill?sslmode=disable", MaskURL(s.PGURL))
		}
	}
}

// openDBAndRedis opens the PostgreSQL store and the Redis client of a role
// that needs both (backend, worker); gr closes each at shutdown.
func (s Stores) openDBAndRedis(ctx context.Context, gr *group) (*postgres.DB, *redis.Client, error) {
	db, err := postgres.Open(ctx, s.PGURL)
	if err != nil {
		return nil, nil, err
	}
	gr.onClose(db.Close)
	rdb, err := RedisClient(s.RedisURL)
	if err != nil {
		return nil, nil, err
	}
	gr.onClose(func() { _ = rdb.Close() })
	return db, rdb, nil
}

// RedisClient is a client with the production timeouts and retry policy
// (internal/redisconf).
func RedisClient(rawURL string) (*redis.Client, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing redis url: %w", err)
	}
	// Retries are safe because every command is idempotent per request
	// (ARCHITECTURE.md "Retry safety").
	return redisconf.New(opt), nil
}

// NoRetryRedisClient is a client that never resends a command: for the
// commands a blind retry after a lost reply would spoil (the relay's
// XREADGROUP > and XCLAIM). Their callers recover by reading state.
func NoRetryRedisClient(rawURL string, poolSize int) (*redis.Client, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing redis url: %w", err)
	}
	opt.PoolSize = poolSize
	opt.MaxRetries = -1 // redisconf keeps it: the timeouts and command budget still apply
	return redisconf.New(opt), nil
}

// MaskURL hides the password of a URL.
func MaskURL(v string) string {
	u, err := url.Parse(v)
	if err != nil {
		return v
	}
	masked := false
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			masked = true
		}
	}
	// A password may also travel as a parameter (pgx: ?password=...).
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
		masked = true
	}
	if !masked {
		return v
	}
	return strings.ReplaceAll(u.String(), "xxxxx", "****")
}
