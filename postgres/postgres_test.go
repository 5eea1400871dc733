package postgres

import (
	"context"
	"strings"
	"testing"

	"seckill"
	"seckill/internal/storetest"
	"seckill/internal/testenv"
)

// *DB is every store the other packages take (backend, worker, reconcile).
var _ storetest.Store = (*DB)(nil)

// open returns a DB on a fresh database of the test's own.
func open(t testing.TB) *DB {
	t.Helper()
	db, err := Open(context.Background(), testenv.Postgres(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(db.Close)
	return db
}

func engine() storetest.Engine {
	files, _ := migrations.ReadDir("migrations")
	return storetest.Engine{
		Open:    func(t testing.TB) storetest.Store { return open(t) },
		NewDSN:  func(t testing.TB) string { return testenv.Postgres(t) },
		OpenDSN: func(ctx context.Context, dsn string) (storetest.Store, error) { return Open(ctx, dsn) },
		Count: func(t testing.TB, s storetest.Store, query string) int {
			t.Helper()
			var n int
			if err := s.(*DB).Pool().QueryRow(context.Background(), query).Scan(&n); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			return n
		},
		Migrations: len(files),
	}
}

// TestStore runs the conformance suite every store passes (internal/storetest).
func TestStore(t *testing.T) {
	t.Parallel()
	storetest.Run(t, engine())
}

func TestMaxConns(t *testing.T) {
	t.Parallel()
	url := testenv.Postgres(t)
	db, err := Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	if got := db.Pool().Config().MaxConns; got != DefaultMaxConns {
		t.Errorf("MaxConns = %d, want %d", got, DefaultMaxConns)
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	small, err := Open(context.Background(), url+sep+"pool_max_conns=5")
	if err != nil {
		t.Fatalf("Open with pool_max_conns: %v", err)
	}
	defer small.Close()
	if got := small.Pool().Config().MaxConns; got != 5 {
		t.Errorf("MaxConns = %d, want 5", got)
	}
}

// Passwords are bcrypt hashes checked in constant time; an empty hash
// never matches, and a password bcrypt would truncate is refused.
func TestPasswords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)
	hash, err := HashPassword("s3cret")
	if err != nil {
		t.Fatalf("HashPassword: %v", err)
	}
	if _, err := db.CreateUser(ctx, "alice", hash, ""); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	u, err := db.UserByName(ctx, "alice")
	if err != nil || u.PasswordHash != hash {
		t.Fatalf("UserByName = %+v, %v; want the hash", u, err)
	}
	if !CheckPassword(u.PasswordHash, "s3cret") {
		t.Error("CheckPassword rejects the right password")
	}
	if CheckPassword(u.PasswordHash, "wrong") {
		t.Error("CheckPassword accepts a wrong password")
	}
	if CheckPassword("", "") {
		t.Error("CheckPassword accepts an empty hash")
	}
	_, err = HashPassword(strings.Repeat("x", 73))
	if got := seckill.ErrorCode(err); got != seckill.EInvalid {
		t.Fatalf("HashPassword(73 bytes) = %v, code %q; want %q", err, got, seckill.EInvalid)
	}
}

func BenchmarkInsertOrders(b *testing.B) {
	storetest.BenchmarkInsertOrders(b, open(b))
}
