package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"seckill"
	"seckill/internal/storetest"
)

// *DB stands in for *postgres.DB wherever the other packages take one
// (backend, worker, reconcile).
var _ storetest.Store = (*DB)(nil)

// open returns a DB on a fresh file database of the test's own.
func open(t testing.TB) *DB {
	t.Helper()
	return openDSN(t, filepath.Join(t.TempDir(), "seckill.db"))
}

func openDSN(t testing.TB, dsn string) *DB {
	t.Helper()
	db, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open(%q): %v", dsn, err)
	}
	t.Cleanup(db.Close)
	return db
}

func wantCode(t *testing.T, err error, code seckill.Code) {
	t.Helper()
	if got := seckill.ErrorCode(err); got != code {
		t.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

func count(t testing.TB, db *DB, query string) int {
	t.Helper()
	var n int
	if err := db.w.QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func engine(memory bool) storetest.Engine {
	files, _ := migrations.ReadDir("migrations")
	e := storetest.Engine{
		Open:       func(t testing.TB) storetest.Store { return open(t) },
		NewDSN:     func(t testing.TB) string { return filepath.Join(t.TempDir(), "seckill.db") },
		OpenDSN:    func(ctx context.Context, dsn string) (storetest.Store, error) { return Open(ctx, dsn) },
		Count:      func(t testing.TB, s storetest.Store, query string) int { t.Helper(); return count(t, s.(*DB), query) },
		Migrations: len(files),
		UTC:        true,
	}
	if memory {
		e.Open = func(t testing.TB) storetest.Store { return openDSN(t, ":memory:") }
		e.NewDSN = nil // a memory database ends with its store
	}
	return e
}

// TestStore runs the conformance suite every store passes
// (internal/storetest) on a file database and on a memory one.
func TestStore(t *testing.T) {
	t.Parallel()
	t.Run("file", func(t *testing.T) { t.Parallel(); storetest.Run(t, engine(false)) })
	t.Run("memory", func(t *testing.T) { t.Parallel(); storetest.Run(t, engine(true)) })
}

// A file database runs in WAL mode, also when opened again.
func TestWAL(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "seckill.db")
	for range 2 {
		db, err := Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		var mode string
		if err := db.r.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
			t.Errorf("journal_mode = %q, %v; want wal", mode, err)
		}
		db.Close()
	}
}

// Every connection, read-only ones included, enforces foreign keys, and
// memory databases are private to their DB but shared by its connections.
func TestPragmas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)
	var held []func() error
	for range 4 {
		c, err := db.r.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c.Close)
		var fk, busy int
		if err := c.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
			t.Errorf("read connection foreign_keys = %d, %v; want 1", fk, err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil || busy != int(BusyTimeout.Milliseconds()) {
			t.Errorf("read connection busy_timeout = %d, %v", busy, err)
		}
	}
	for _, c := range held {
		c()
	}
	if count(t, db, "PRAGMA foreign_keys") != 1 {
		t.Error("write connection has foreign_keys off")
	}
	if _, err := db.r.ExecContext(ctx, "INSERT INTO users (username, created_at) VALUES ('x', 0)"); err == nil {
		t.Error("a read connection could write")
	}

	m1, m2 := openDSN(t, ":memory:"), openDSN(t, "")
	if _, err := m1.CreateUser(ctx, "alice", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.UserByName(ctx, "alice"); err != nil {
		t.Errorf("memory database lost a user: %v", err)
	}
	if _, err := m2.UserByName(ctx, "alice"); seckill.ErrorCode(err) != seckill.ENotFound {
		t.Errorf("a second memory database sees the first one's user: %v", err)
	}
}

// BenchmarkInsertOrders: see storetest.BenchmarkInsertOrders.
func BenchmarkInsertOrders(b *testing.B) {
	b.Run("file", func(b *testing.B) { storetest.BenchmarkInsertOrders(b, open(b)) })
	b.Run("memory", func(b *testing.B) { storetest.BenchmarkInsertOrders(b, openDSN(b, ":memory:")) })
}
