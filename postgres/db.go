// Package postgres is the system of record: users, items, stored orders and
// the orders that could not be stored. Redis decides who gets a unit; this
// package only makes the decision durable, so every write is idempotent and
// set-based, built for the worker to store whole batches of messages at once.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"seckill"
)

// DefaultMaxConns is the pool size when the URL has no pool_max_conns. The
// pgx default (the number of CPUs) is too small for a service whose requests
// mostly wait on the network.
const DefaultMaxConns = 32

// migrationLockKey is the pg_advisory_lock key that serialises migrations
// between processes starting at the same time (advisory locks are scoped to
// the current database, so tests in separate databases do not contend).
const migrationLockKey int64 = 0x5ec_1d11_0001

//go:embed migrations/*.sql
var migrations embed.FS

// DB is a pool of connections to the seckill database. It is safe for
// concurrent use.
type DB struct {
	pool       *pgxpool.Pool
	collisions []UsernameCollision // found at Open by fillUsernameKeys
}

// Open connects to the database at url, checks that it answers and applies
// the migrations it has not seen yet. The pool size comes from the URL's
// pool_max_conns parameter, DefaultMaxConns otherwise.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing database URL: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating connection pool: %w", err)
	}
	db := &DB{pool: pool}
	if err := db.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := db.fillUsernameKeys(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// Close waits for the connections in use to be released and closes them all.
func (db *DB) Close() { db.pool.Close() }

// Pool returns the underlying pool, for the few callers (reconcile, tests)
// that need queries this package does not offer.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Ping checks that the database answers; readiness probes use it.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pinging database: %w", unavailable(err))
	}
	return nil
}

// migrate applies, in file name order, every embedded migration not yet
// recorded in schema_migrations, each in its own transaction with its
// record. A session-level advisory lock held on one connection for the
// whole run makes a second process wait and then find nothing left to do,
// instead of racing on CREATE TABLE.
func (db *DB) migrate(ctx context.Context) (err error) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquiring connection for migrations: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
		conn.Release()
		return fmt.Errorf("taking migration lock: %w", err)
	}
	defer func() {
		// Unlock even when ctx is done; if that fails too, close the
		// connection rather than return it to the pool still holding the
		// lock, which would block every later Open forever.
		uctx := context.WithoutCancel(ctx)
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrationLockKey); uerr != nil {
			_ = conn.Hijack().Close(uctx)
			return
		}
		conn.Release()
	}()

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    text        PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return fmt.Errorf("reading applied migrations: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("reading applied migrations: %w", err)
	}
	applied := make(map[string]bool, len(versions))
	for _, v := range versions {
		applied[v] = true
	}

	files, err := fs.Glob(migrations, "migrations/*.sql") // sorted by name
	if err != nil {
		return fmt.Errorf("listing migrations: %w", err)
	}
	for _, file := range files {
		version := strings.TrimSuffix(strings.TrimPrefix(file, "migrations/"), ".sql")
		if applied[version] {
			continue
		}
		sql, err := migrations.ReadFile(file)
		if err != nil {
			return fmt.Errorf("reading migration %s: %w", version, err)
		}
		// Exec without arguments uses the simple protocol, which runs
		// a file of several statements as it is.
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", version)
			return err
		})
		if err != nil {
			return fmt.Errorf("applying migration %s: %w", version, err)
		}
	}
	return nil
}

// PostgreSQL error codes this package maps to seckill codes.
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
	checkViolation      = "23514"
	notNullViolation    = "23502"
)

// invalidData turns an integrity error caused by the data given (a failed
// CHECK, a missing referenced row, a NULL) into an error whose code is
// seckill.EInvalid and that still wraps the PostgreSQL error, so callers
// can match on either. Any other error is returned as it is.
func invalidData(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case checkViolation, foreignKeyViolation, notNullViolation:
		what := pgErr.ConstraintName
		if what == "" {
			what = pgErr.ColumnName
		}
		return fmt.Errorf("%w: %w", seckill.Errorf(seckill.EInvalid, "violates %s", what), err)
	}
	return err
}

// isCode reports whether err is a PostgreSQL error with the given code.
func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
