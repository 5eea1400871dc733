package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"seckill"
)

// TestUnavailableWhileLocked: another process holds the write lock of the
// file; a write that cannot get it before its deadline is
// dependency_unavailable (503), as a PostgreSQL outage is, never a 500. A
// plain error stays internal.
func TestUnavailableWhileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seckill.db")
	db, other := openDSN(t, path), openDSN(t, path)
	ctx := context.Background()
	tx, err := other.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, "DELETE FROM failed_orders"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = db.CreateUser(wctx, "locked_out", "", "")
	t.Logf("write against a locked file after %v: %v", time.Since(t0).Round(time.Millisecond), err)
	wantCode(t, err, seckill.EDependency)
	if code := seckill.ErrorCode(unavailable(errors.New("scanning: bad column"))); code != seckill.EInternal {
		t.Fatalf("a plain error became %s", code)
	}
}
