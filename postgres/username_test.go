package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"seckill/internal/testenv"
	"seckill/postgres"
)

// TestUsernameKeyMigration: accounts made before the key existed (here:
// their keys wiped, as right after migration 0002) get their keys at the
// next Open, oldest first; each younger account whose key an older one
// holds is reported and keeps no key (no login by name), the older keeps
// the name.
func TestUsernameKeyMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.Postgres(t)
	db, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// Inserted out of age order: the oldest "Carol" must win whatever the ids.
	rows := []struct {
		name string
		age  int // days after base
	}{{"caroI", 3}, {"CAROL", 2}, {"Carol", 1}, {"dave", 5}, {"eve", 4}, {"EVE", 6}}
	byName := map[string]int64{}
	for _, r := range rows {
		var id int64
		if err := db.Pool().QueryRow(ctx, "INSERT INTO users (username, created_at) VALUES ($1, $2) RETURNING id",
			r.name, base.AddDate(0, 0, r.age)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		byName[r.name] = id
	}
	if _, err := db.Pool().Exec(ctx, "UPDATE users SET username_key = NULL"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err = postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got := db.UsernameCollisions()
	want := []postgres.UsernameCollision{
		{ID: byName["CAROL"], Username: "CAROL", OwnerID: byName["Carol"], Owner: "Carol"},
		{ID: byName["caroI"], Username: "caroI", OwnerID: byName["Carol"], Owner: "Carol"},
		{ID: byName["EVE"], Username: "EVE", OwnerID: byName["eve"], Owner: "eve"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("collisions %+v, want %+v", got, want)
	}
	for name, owner := range map[string]string{"carol": "Carol", "CAROL": "Carol", "dave": "dave", "Eve": "eve"} {
		u, err := db.UserByName(ctx, name)
		if err != nil || u.ID != byName[owner] {
			t.Errorf("UserByName(%q) = %+v, %v; want %s (%d)", name, u, err, owner, byName[owner])
		}
	}
	// Reported again at the next start, until someone resolves them.
	db2, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if got := db2.UsernameCollisions(); !slices.Equal(got, want) {
		t.Fatalf("second Open: collisions %+v, want %+v", got, want)
	}
}
