// Package sqlite is the system of record of the embedded, all-in-one mode
// (seckill dev): the same store as package postgres — users, items, stored
// orders and the orders that could not be stored — on SQLite, in pure Go
// (modernc.org/sqlite). Its DB has the methods of postgres.DB, with the same
// signatures, semantics and error codes, except Pool.
//
// SQLite has one writer at a time. Every write goes through a pool of a
// single connection, so writers queue in database/sql (honouring their
// context) instead of failing with SQLITE_BUSY; reads of a file database use
// a separate pool of read-only connections, which WAL lets run alongside the
// writer. An in-memory database has no WAL, and its shared cache would fail
// reads that meet a write with SQLITE_LOCKED, so there reads use the single
// connection too.
//
// Times are stored as INTEGER microseconds since the Unix epoch, the
// precision PostgreSQL keeps, and read back as UTC time.Time values.
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"

	sqlite3 "modernc.org/sqlite"
	sqlite3lib "modernc.org/sqlite/lib"

	"seckill"
)

// BusyTimeout is how long a connection waits for a lock held by another
// process on the same file before failing with SQLITE_BUSY. Within one
// process writes never contend: they share one connection.
const BusyTimeout = 10 * time.Second

//go:embed migrations/*.sql
var migrations embed.FS

// DB is a database of seckill. It is safe for concurrent use.
type DB struct {
	w      *sql.DB // the one write connection; also the reads of a memory database
	r      *sql.DB // read-only connections; w itself for a memory database
	keeper *sql.Conn
	keepDB *sql.DB

	insertOrder *sql.Stmt // on w

	collisions []UsernameCollision // found at Open by fillUsernameKeys
}

// Open opens the database dsn, a file path (created if missing) or
// ":memory:" (or "") for a private in-memory database that lives until
// Close, and applies the migrations it has not seen yet. A path may also be
// a "file:" URI; it should not set the parameters Open sets itself
// (_pragma, _txlock, mode, cache).
func Open(ctx context.Context, dsn string) (*DB, error) {
	db := &DB{}
	if dsn == "" || dsn == ":memory:" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		uri := "file:seckill-" + hex.EncodeToString(b[:]) + "?mode=memory&cache=shared" +
			"&_pragma=foreign_keys(1)" +
			fmt.Sprintf("&_pragma=busy_timeout(%d)", BusyTimeout.Milliseconds())
		// The keeper holds the shared-cache database open until Close,
		// even if database/sql ever drops and reopens the working
		// connection; the last connection closing would free the data.
		keep, err := sql.Open("sqlite", uri)
		if err != nil {
			return nil, fmt.Errorf("opening database: %w", err)
		}
		keep.SetMaxOpenConns(1)
		db.keepDB = keep
		if db.keeper, err = keep.Conn(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("opening database: %w", err)
		}
		if db.w, err = sql.Open("sqlite", uri); err != nil {
			db.Close()
			return nil, fmt.Errorf("opening database: %w", err)
		}
		db.r = db.w
	} else {
		base, sep := dsn, "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		common := fmt.Sprintf("_pragma=foreign_keys(1)&_pragma=busy_timeout(%d)", BusyTimeout.Milliseconds())
		var err error
		// journal_mode is persistent in the file: setting it on the
		// write connection, which opens first, is enough, but setting it
		// on every connection is harmless and keeps a fresh file right.
		if db.w, err = sql.Open("sqlite", base+sep+common+"&_pragma=journal_mode(WAL)&_txlock=immediate"); err != nil {
			return nil, fmt.Errorf("opening database: %w", err)
		}
		if db.r, err = sql.Open("sqlite", base+sep+common+"&_pragma=query_only(1)"); err != nil {
			db.Close()
			return nil, fmt.Errorf("opening database: %w", err)
		}
		db.r.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
		db.r.SetMaxIdleConns(max(4, runtime.GOMAXPROCS(0)))
	}
	db.w.SetMaxOpenConns(1)
	db.w.SetMaxIdleConns(1)
	db.w.SetConnMaxLifetime(0)
	db.w.SetConnMaxIdleTime(0)

	// The write connection first: it creates the file and turns WAL on
	// before a read-only connection looks at it. Switching a fresh file to
	// WAL can answer SQLITE_BUSY at once, without waiting busy_timeout,
	// while another process opens the same file: try again for a while.
	for deadline := time.Now().Add(BusyTimeout); ; {
		err := db.w.PingContext(ctx)
		if err == nil {
			break
		}
		if c := sqliteCode(err); c < 0 || c&0xff != sqlite3lib.SQLITE_BUSY || time.Now().After(deadline) {
			db.Close()
			return nil, fmt.Errorf("pinging database: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.fillUsernameKeys(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.Ping(ctx); err != nil {
		db.Close()
		return nil, err
	}
	var err error
	if db.insertOrder, err = db.w.PrepareContext(ctx, insertOrderSQL); err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing statements: %w", err)
	}
	return db, nil
}

// Close closes every connection; calls in flight finish first.
func (db *DB) Close() {
	if db.insertOrder != nil {
		db.insertOrder.Close()
	}
	if db.r != nil && db.r != db.w {
		db.r.Close()
	}
	if db.w != nil {
		db.w.Close()
	}
	if db.keeper != nil {
		db.keeper.Close()
	}
	if db.keepDB != nil {
		db.keepDB.Close()
	}
}

// Ping checks that the database answers; readiness probes use it.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.w.PingContext(ctx); err != nil {
		return fmt.Errorf("pinging database: %w", unavailable(err))
	}
	if db.r != db.w {
		if err := db.r.PingContext(ctx); err != nil {
			return fmt.Errorf("pinging database: %w", unavailable(err))
		}
	}
	return nil
}

// migrate applies, in file name order, every embedded migration not yet
// recorded in schema_migrations, each in its own IMMEDIATE transaction with
// its record. The transaction takes the write lock before it checks the
// record, so a second process opening the same file at the same time waits
// (busy_timeout) and then finds nothing left to do.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    TEXT    PRIMARY KEY NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	files, err := fs.Glob(migrations, "migrations/*.sql") // sorted by name
	if err != nil {
		return fmt.Errorf("listing migrations: %w", err)
	}
	for _, file := range files {
		version := strings.TrimSuffix(strings.TrimPrefix(file, "migrations/"), ".sql")
		script, err := migrations.ReadFile(file)
		if err != nil {
			return fmt.Errorf("reading migration %s: %w", version, err)
		}
		err = db.writeTx(ctx, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations WHERE version = ?", version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, string(script)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", version, micros(time.Now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("applying migration %s: %w", version, err)
		}
	}
	return nil
}

// writeTx runs f in a transaction on the write connection and commits it,
// or rolls it back when f fails.
func (db *DB) writeTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return unavailable(err)
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return unavailable(tx.Commit())
}

// micros is t as stored: microseconds since the Unix epoch, truncated as
// pgx truncates when it sends a timestamptz.
func micros(t time.Time) int64 { return t.UnixMicro() }

// fromMicros is the inverse of micros, in UTC.
func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// checkText refuses what PostgreSQL refuses in a text value and SQLite would
// store: invalid UTF-8 and NUL bytes. As in package postgres the error has
// no code.
func checkText(ss ...string) error {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("invalid byte sequence for encoding UTF8 in %q", s)
		}
	}
	return nil
}

// sqliteCode returns the extended result code of err, or -1 when err is not
// an SQLite error.
func sqliteCode(err error) int {
	var e *sqlite3.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return -1
}

// isUnique reports whether err is a violated UNIQUE or PRIMARY KEY
// constraint.
func isUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3lib.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3lib.SQLITE_CONSTRAINT_PRIMARYKEY
}

// invalidData turns an integrity error caused by the data given (a failed
// CHECK, a missing referenced row, a NULL) into an error whose code is
// seckill.EInvalid and that still wraps the SQLite error, as package
// postgres does. Any other error is returned as it is.
func invalidData(err error) error {
	var what string
	switch sqliteCode(err) {
	case sqlite3lib.SQLITE_CONSTRAINT_CHECK, sqlite3lib.SQLITE_CONSTRAINT_NOTNULL:
		// "CHECK constraint failed: items_stock_check",
		// "NOT NULL constraint failed: items.name"
		what = err.Error()
		if i := strings.LastIndex(what, "failed: "); i >= 0 {
			what = what[i+len("failed: "):]
		}
		what = strings.TrimSuffix(what, ")")
		if i := strings.LastIndex(what, " ("); i >= 0 {
			what = what[:i]
		}
	case sqlite3lib.SQLITE_CONSTRAINT_FOREIGNKEY:
		what = "a foreign key" // SQLite does not say which
	default:
		return err
	}
	return fmt.Errorf("%w: %w", seckill.Errorf(seckill.EInvalid, "violates %s", what), err)
}
