package postgres

import (
	"context"
	"testing"
	"time"

	"seckill/internal/storetest"
)

// TestDrawFrozen: even with SQL, past the API, the database refuses to
// change a draw's seed or commitment, to change or remove an entry, to add
// one after the list closed, to change the stored hash, or to change a
// fixed round.
func TestDrawFrozen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)
	users := storetest.Users(t, db, "f1", "f2")
	now := time.Now()
	it, rec := storetest.DrawItem(t, db, now.Add(-time.Second), now.Add(300*time.Millisecond))
	var k [32]byte
	copy(k[:], rec.Key)
	if _, _, err := db.Enter(ctx, it.ID, users[0], []byte(storetestID(k, users[0]))); err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) error {
		_, err := db.Pool().Exec(ctx, sql, args...)
		return err
	}
	for name, sql := range map[string]string{
		"seed":       "UPDATE draws SET seed = decode(repeat('00', 32), 'hex') WHERE item_id = $1",
		"commitment": "UPDATE draws SET commitment = decode(repeat('00', 32), 'hex') WHERE item_id = $1",
		"close time": "UPDATE draws SET entries_close_at = entries_close_at + interval '1 hour' WHERE item_id = $1",
		"entry":      "UPDATE draw_entries SET user_id = user_id WHERE item_id = $1",
		"delete":     "DELETE FROM draw_entries WHERE item_id = $1",
	} {
		if err := exec(sql, it.ID); err == nil {
			t.Errorf("%s changed: %s", name, sql)
		}
	}
	time.Sleep(time.Until(it.EntriesCloseAt) + 50*time.Millisecond)
	d, err := db.CloseEntries(ctx, it.ID)
	if err != nil || !d.Closed() {
		t.Fatalf("CloseEntries = %+v, %v", d, err)
	}
	if err := exec("INSERT INTO draw_entries (item_id, entry_id, user_id) VALUES ($1, decode(repeat('11', 32), 'hex'), $2)", it.ID, users[1]); err == nil {
		t.Error("an entry was added after the list closed")
	}
	if err := exec("UPDATE draws SET entries_hash = decode(repeat('00', 32), 'hex') WHERE item_id = $1", it.ID); err == nil {
		t.Error("the stored hash changed")
	}
	if _, err := db.FixRound(ctx, it.ID, roundOf(0, 0, 1)); err != nil {
		t.Fatal(err)
	}
	if err := exec("UPDATE draw_rounds SET count = 5 WHERE item_id = $1", it.ID); err == nil {
		t.Error("a fixed round changed")
	}
	if n, _ := db.CountEntries(ctx, it.ID); n != 1 {
		t.Errorf("%d entries, want 1", n)
	}
}
