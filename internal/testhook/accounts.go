// Package testhook holds what tests need from the stores and no route may
// offer: making accounts old (issue 15: a sale's min_account_age is tested
// with accounts older than it, never made through the API). Only tests
// import it; the shipped binary does not link it (deps_test.go).
package testhook

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the "sqlite" driver, as package sqlite opens it
)

// AgeAccountsPostgres sets created_at of the users ids to now - age in the
// PostgreSQL database at url (the URL the stores were opened with).
func AgeAccountsPostgres(ctx context.Context, url string, age time.Duration, ids ...int64) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connecting to postgresql: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tag, err := conn.Exec(ctx, "UPDATE users SET created_at = $1 WHERE id = ANY($2)", time.Now().Add(-age), ids)
	if err != nil {
		return fmt.Errorf("ageing accounts: %w", err)
	}
	if tag.RowsAffected() != int64(len(ids)) {
		return fmt.Errorf("ageing accounts: %d of %d users found", tag.RowsAffected(), len(ids))
	}
	return nil
}

// AgeAccountsSQLite sets created_at of the users ids to now - age in the
// SQLite database file at path (package sqlite stores microseconds), which
// a running store may hold open (WAL; a busy database is waited for).
func AgeAccountsSQLite(ctx context.Context, path string, age time.Duration, ids ...int64) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer db.Close()
	at := time.Now().Add(-age).UnixMicro()
	for _, id := range ids {
		res, err := db.ExecContext(ctx, "UPDATE users SET created_at = ? WHERE id = ?", at, id)
		if err != nil {
			return fmt.Errorf("ageing account %d: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("ageing accounts: no user %d", id)
		}
	}
	return nil
}
