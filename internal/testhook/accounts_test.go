package testhook_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"seckill/internal/testenv"
	"seckill/internal/testhook"
	"seckill/postgres"
	"seckill/sqlite"
)

// ages is what both stores must do: the account reads back as old as asked,
// its other fields untouched, and an unknown id is an error.
func ages(t *testing.T, db interface {
	CreateUser(ctx context.Context, name, hash, network string) (int64, error)
	UserByName(ctx context.Context, name string) (postgres.User, error)
}, age func(ctx context.Context, d time.Duration, ids ...int64) error) {
	t.Helper()
	ctx := context.Background()
	id, err := db.CreateUser(ctx, "oldtimer", "", "203.0.113.0/24")
	if err != nil {
		t.Fatal(err)
	}
	if err := age(ctx, 100*time.Hour, id); err != nil {
		t.Fatal(err)
	}
	u, err := db.UserByName(ctx, "oldtimer")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(u.CreatedAt); d < 100*time.Hour || d > 101*time.Hour || u.Network != "203.0.113.0/24" || u.ID != id {
		t.Fatalf("after ageing: %+v (age %s), want 100h old on 203.0.113.0/24", u, d)
	}
	if err := age(ctx, time.Hour, id, id+1000); err == nil {
		t.Fatal("ageing an unknown account: no error")
	}
}

func TestAgeAccountsPostgres(t *testing.T) {
	url := testenv.Postgres(t)
	db, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ages(t, db, func(ctx context.Context, d time.Duration, ids ...int64) error {
		return testhook.AgeAccountsPostgres(ctx, url, d, ids...)
	})
}

func TestAgeAccountsSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seckill.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ages(t, db, func(ctx context.Context, d time.Duration, ids ...int64) error {
		return testhook.AgeAccountsSQLite(ctx, path, d, ids...)
	})
}
