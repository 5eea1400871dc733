package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"seckill/sqlite"
)

// TestUsernameKeyMigration: see the test of the same name in package
// postgres.
func TestUsernameKeyMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := []struct {
		name string
		age  int
	}{{"caroI", 3}, {"CAROL", 2}, {"Carol", 1}, {"dave", 5}, {"eve", 4}, {"EVE", 6}}
	byName := map[string]int64{}
	for _, r := range rows {
		res, err := raw.Exec("INSERT INTO users (username, created_at) VALUES (?, ?)", r.name, base.AddDate(0, 0, r.age).UnixMicro())
		if err != nil {
			t.Fatal(err)
		}
		byName[r.name], _ = res.LastInsertId()
	}
	raw.Close()

	db, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := []sqlite.UsernameCollision{
		{ID: byName["CAROL"], Username: "CAROL", OwnerID: byName["Carol"], Owner: "Carol"},
		{ID: byName["caroI"], Username: "caroI", OwnerID: byName["Carol"], Owner: "Carol"},
		{ID: byName["EVE"], Username: "EVE", OwnerID: byName["eve"], Owner: "eve"},
	}
	if got := db.UsernameCollisions(); !slices.Equal(got, want) {
		t.Fatalf("collisions %+v, want %+v", got, want)
	}
	for name, owner := range map[string]string{"carol": "Carol", "CAROL": "Carol", "dave": "dave", "Eve": "eve"} {
		u, err := db.UserByName(ctx, name)
		if err != nil || u.ID != byName[owner] {
			t.Errorf("UserByName(%q) = %+v, %v; want %s (%d)", name, u, err, owner, byName[owner])
		}
	}
}
