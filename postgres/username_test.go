package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"seckill"
	"seckill/internal/testenv"
	"seckill/postgres"
)

// TestUsernamesNormalised (issue 13): on a real PostgreSQL, a name with the
// key of an existing one (case, a capital I for l, full width) is taken;
// looking up or ensuring any of them reaches the one account.
func TestUsernamesNormalised(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := postgres.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	id, err := db.CreateUser(ctx, "alice", "h")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"alice", "Alice", "ALICE", "aIice", "al1ce", "ａｌｉｃｅ"} {
		if _, err := db.CreateUser(ctx, n, "h2"); seckill.ErrorCode(err) != seckill.EUsernameTaken {
			t.Errorf("CreateUser(%q) beside alice: %v, want username_taken", n, err)
		}
		u, err := db.UserByName(ctx, n)
		if err != nil || u.ID != id || u.Username != "alice" {
			t.Errorf("UserByName(%q) = %+v, %v; want alice (%d)", n, u, err, id)
		}
	}
	ids, err := db.EnsureUsers(ctx, []string{"aIice", "bob", "BOB", "B0B", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if ids["aIice"] != id || ids["bob"] != ids["BOB"] || ids["bob"] != ids["B0B"] || ids["bob"] == 0 || ids["carol"] == 0 || ids["carol"] == ids["bob"] {
		t.Fatalf("EnsureUsers: %v (alice is %d)", ids, id)
	}
	var n int
	if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d users, %v; want 3 (alice, one bob, carol)", n, err)
	}
}

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
