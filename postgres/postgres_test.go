package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"seckill"
	"seckill/internal/testenv"
)

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

func wantCode(t *testing.T, err error, code seckill.Code) {
	t.Helper()
	if got := seckill.ErrorCode(err); got != code {
		t.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

func mustUsers(t testing.TB, db *DB, names ...string) []int64 {
	t.Helper()
	m, err := db.EnsureUsers(context.Background(), names)
	if err != nil {
		t.Fatalf("EnsureUsers: %v", err)
	}
	ids := make([]int64, len(names))
	for i, n := range names {
		ids[i] = m[n]
	}
	return ids
}

func mustItem(t testing.TB, db *DB) seckill.Item {
	t.Helper()
	now := time.Now()
	it, err := db.CreateItem(context.Background(), seckill.Item{
		Name: "phone", PriceCents: 99900, Stock: 100,
		StartsAt: now, EndsAt: now.Add(time.Hour), Challenge: "none",
	})
	if err != nil {
		t.Fatalf("CreateItem: %v", err)
	}
	return it
}

func migrationCount(t *testing.T, db *DB) int {
	t.Helper()
	var n int
	if err := db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
		t.Fatalf("counting migrations: %v", err)
	}
	return n
}

func TestMigrationsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.Postgres(t)
	first, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("first Open: %v", err)
	}
	want := migrationCount(t, first)
	if want < 1 {
		t.Fatalf("%d migrations recorded, want at least 1", want)
	}
	if _, err := first.CreateUser(ctx, "alice", ""); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	first.Close()

	second, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	defer second.Close()
	if got := migrationCount(t, second); got != want {
		t.Errorf("%d migrations recorded after the second Open, want %d", got, want)
	}
	if _, err := second.UserByName(ctx, "alice"); err != nil {
		t.Errorf("data lost by the second Open: %v", err)
	}
}

func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	url := testenv.Postgres(t)
	const n = 4
	var wg sync.WaitGroup
	dbs := make([]*DB, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { dbs[i], errs[i] = Open(context.Background(), url) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
			continue
		}
		defer dbs[i].Close()
	}
	if t.Failed() {
		return
	}
	files, _ := migrations.ReadDir("migrations")
	if got := migrationCount(t, dbs[0]); got != len(files) {
		t.Errorf("%d migrations recorded, want %d", got, len(files))
	}
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

func TestUsers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)

	hash, err := HashPassword("s3cret")
	if err != nil {
		t.Fatalf("HashPassword: %v", err)
	}
	id, err := db.CreateUser(ctx, "alice", hash)
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	_, err = db.CreateUser(ctx, "alice", "")
	wantCode(t, err, seckill.EUsernameTaken)

	u, err := db.UserByName(ctx, "alice")
	if err != nil {
		t.Fatalf("UserByName: %v", err)
	}
	if u.ID != id || u.Username != "alice" || u.PasswordHash != hash || u.CreatedAt.IsZero() {
		t.Errorf("UserByName = %+v, want id %d and the hash", u, id)
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
	_, err = db.UserByName(ctx, "bob")
	wantCode(t, err, seckill.ENotFound)

	_, err = HashPassword(strings.Repeat("x", 73))
	wantCode(t, err, seckill.EInvalid)
}

func TestEnsureUsers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)

	names := make([]string, 10_000)
	for i := range names {
		names[i] = fmt.Sprintf("load_%05d", i)
	}
	// Every other name exists beforehand.
	var existing []string
	for i := 0; i < len(names); i += 2 {
		existing = append(existing, names[i])
	}
	before, err := db.EnsureUsers(ctx, existing)
	if err != nil {
		t.Fatalf("EnsureUsers of 5,000: %v", err)
	}
	if len(before) != 5_000 {
		t.Fatalf("EnsureUsers of 5,000 returned %d ids", len(before))
	}

	start := time.Now()
	ids, err := db.EnsureUsers(ctx, names)
	if err != nil {
		t.Fatalf("EnsureUsers of 10,000: %v", err)
	}
	t.Logf("EnsureUsers of 10,000 names (5,000 new) took %v", time.Since(start))
	if len(ids) != 10_000 {
		t.Fatalf("EnsureUsers returned %d ids, want 10000", len(ids))
	}
	distinct := make(map[int64]bool, len(ids))
	for _, id := range ids {
		distinct[id] = true
	}
	if len(distinct) != 10_000 {
		t.Errorf("%d distinct ids, want 10000", len(distinct))
	}
	for name, id := range before {
		if ids[name] != id {
			t.Fatalf("id of %s changed from %d to %d", name, id, ids[name])
		}
	}
	var count int
	if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM users").Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != 10_000 {
		t.Errorf("%d users stored, want 10000", count)
	}
	u, err := db.UserByName(ctx, names[1])
	if err != nil {
		t.Fatalf("UserByName: %v", err)
	}
	if u.PasswordHash != "" {
		t.Errorf("ensured user has password hash %q, want none", u.PasswordHash)
	}

	// Duplicates in the input and an empty input are fine.
	dup, err := db.EnsureUsers(ctx, []string{"x_dup", "x_dup"})
	if err != nil || len(dup) != 1 {
		t.Errorf("EnsureUsers with a duplicate = %v, %v; want one id", dup, err)
	}
	if empty, err := db.EnsureUsers(ctx, nil); err != nil || len(empty) != 0 {
		t.Errorf("EnsureUsers(nil) = %v, %v", empty, err)
	}
}

func TestItems(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)

	base := time.Now().Truncate(time.Microsecond) // PostgreSQL keeps microseconds
	later, err := db.CreateItem(ctx, seckill.Item{
		Name: "later", PriceCents: 500, Stock: 10,
		StartsAt: base.Add(time.Hour), EndsAt: base.Add(2 * time.Hour), Challenge: "pow",
	})
	if err != nil {
		t.Fatalf("CreateItem: %v", err)
	}
	if later.ID == 0 || later.CreatedAt.IsZero() {
		t.Errorf("CreateItem returned %+v without ID or CreatedAt", later)
	}
	sooner, err := db.CreateItem(ctx, seckill.Item{
		Name: "sooner", PriceCents: 0, Stock: 0,
		StartsAt: base, EndsAt: base.Add(time.Minute), Challenge: "captcha",
	})
	if err != nil {
		t.Fatalf("CreateItem with zero price and stock: %v", err)
	}

	got, err := db.Item(ctx, later.ID)
	if err != nil {
		t.Fatalf("Item: %v", err)
	}
	if got.Name != "later" || got.PriceCents != 500 || got.Stock != 10 || got.Challenge != "pow" ||
		!got.StartsAt.Equal(later.StartsAt) || !got.EndsAt.Equal(base.Add(2*time.Hour)) || !got.CreatedAt.Equal(later.CreatedAt) {
		t.Errorf("Item = %+v, want %+v", got, later)
	}
	_, err = db.Item(ctx, later.ID+1000)
	wantCode(t, err, seckill.EUnknownItem)

	items, err := db.Items(ctx)
	if err != nil {
		t.Fatalf("Items: %v", err)
	}
	if len(items) != 2 || items[0].ID != sooner.ID || items[1].ID != later.ID {
		t.Errorf("Items = %+v, want sooner then later", items)
	}

	for _, bad := range []seckill.Item{
		{Name: "negative stock", PriceCents: 1, Stock: -1, StartsAt: base, EndsAt: base.Add(time.Hour)},
		{Name: "negative price", PriceCents: -1, Stock: 1, StartsAt: base, EndsAt: base.Add(time.Hour)},
		{Name: "ends at start", PriceCents: 1, Stock: 1, StartsAt: base, EndsAt: base},
	} {
		_, err := db.CreateItem(ctx, bad)
		if err == nil {
			t.Errorf("CreateItem(%s) succeeded", bad.Name)
			continue
		}
		wantCode(t, err, seckill.EInvalid)
	}
	if items, _ := db.Items(ctx); len(items) != 2 {
		t.Errorf("%d items after the rejected ones, want 2", len(items))
	}
}

func TestItemsEmpty(t *testing.T) {
	t.Parallel()
	items, err := open(t).Items(context.Background())
	if err != nil || items == nil || len(items) != 0 {
		t.Errorf("Items of an empty table = %#v, %v; want an empty slice", items, err)
	}
}

func TestInsertOrders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)
	u := mustUsers(t, db, "u1", "u2", "u3", "u4")
	item := mustItem(t, db)
	other := mustItem(t, db)
	at := time.Now().Truncate(time.Microsecond)
	msg := func(ref string, user int64) seckill.OrderMessage {
		return seckill.OrderMessage{OrderRef: ref, UserID: user, ItemID: item.ID, ReservedAt: at}
	}

	batch := []seckill.OrderMessage{
		msg("r1", u[0]),
		msg("r2", u[1]),
		msg("r1", u[0]), // redelivered: same ref
		msg("r5", u[0]), // same user and item, another ref
		msg("r3", u[2]),
		msg("r2", u[3]), // same ref, another user
		{OrderRef: "r4", UserID: u[0], ItemID: other.ID, ReservedAt: at}, // same user, another item
	}
	n, err := db.InsertOrders(ctx, batch)
	if err != nil {
		t.Fatalf("InsertOrders: %v", err)
	}
	if n != 4 {
		t.Errorf("InsertOrders inserted %d, want 4 (r1, r2, r3, r4)", n)
	}
	n, err = db.InsertOrders(ctx, batch)
	if err != nil || n != 0 {
		t.Errorf("InsertOrders again = %d, %v; want 0, nil", n, err)
	}
	if n, err := db.InsertOrders(ctx, nil); err != nil || n != 0 {
		t.Errorf("InsertOrders(nil) = %d, %v", n, err)
	}

	if c, err := db.CountOrders(ctx, item.ID); err != nil || c != 3 {
		t.Errorf("CountOrders(item) = %d, %v; want 3", c, err)
	}
	if c, err := db.CountOrders(ctx, other.ID); err != nil || c != 1 {
		t.Errorf("CountOrders(other) = %d, %v; want 1", c, err)
	}
	refs, err := db.OrderRefs(ctx, item.ID)
	if err != nil {
		t.Fatalf("OrderRefs: %v", err)
	}
	want := map[int64]string{u[0]: "r1", u[1]: "r2", u[2]: "r3"}
	if fmt.Sprint(refs) != fmt.Sprint(want) {
		t.Errorf("OrderRefs = %v, want %v", refs, want)
	}

	o, err := db.OrderFor(ctx, u[0], item.ID)
	if err != nil {
		t.Fatalf("OrderFor: %v", err)
	}
	if o.ID == 0 || o.OrderRef != "r1" || o.UserID != u[0] || o.ItemID != item.ID ||
		!o.ReservedAt.Equal(at) || o.CreatedAt.IsZero() {
		t.Errorf("OrderFor = %+v", o)
	}
	_, err = db.OrderFor(ctx, u[3], item.ID)
	wantCode(t, err, seckill.ENotFound)

	if d, err := db.DuplicateOrders(ctx); err != nil || d != 0 {
		t.Errorf("DuplicateOrders = %d, %v; want 0", d, err)
	}
}

func TestInsertOrdersUnknownUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)
	u := mustUsers(t, db, "u1", "u2")
	item := mustItem(t, db)
	batch := []seckill.OrderMessage{
		{OrderRef: "a", UserID: u[0], ItemID: item.ID, ReservedAt: time.Now()},
		{OrderRef: "poison", UserID: u[1] + 1000, ItemID: item.ID, ReservedAt: time.Now()},
		{OrderRef: "b", UserID: u[1], ItemID: item.ID, ReservedAt: time.Now()},
	}
	n, err := db.InsertOrders(ctx, batch)
	if err == nil {
		t.Fatalf("InsertOrders with an unknown user inserted %d and no error", n)
	}
	wantCode(t, err, seckill.EInvalid)
	if c, err := db.CountOrders(ctx, item.ID); err != nil || c != 0 {
		t.Errorf("CountOrders after the failed batch = %d, %v; want 0", c, err)
	}

	// Isolating the poison message one by one, as the worker does.
	var stored int
	for _, m := range batch {
		ok, err := db.InsertOrder(ctx, m)
		switch {
		case m.OrderRef == "poison":
			wantCode(t, err, seckill.EInvalid)
		case err != nil || !ok:
			t.Errorf("InsertOrder(%s) = %v, %v; want true, nil", m.OrderRef, ok, err)
		default:
			stored++
		}
	}
	if ok, err := db.InsertOrder(ctx, batch[0]); err != nil || ok {
		t.Errorf("InsertOrder again = %v, %v; want false, nil", ok, err)
	}
	if c, err := db.CountOrders(ctx, item.ID); err != nil || c != 2 || stored != 2 {
		t.Errorf("CountOrders = %d, %v; want 2", c, err)
	}

	_, err = db.InsertOrders(ctx, []seckill.OrderMessage{{OrderRef: "c", UserID: u[0], ItemID: item.ID + 1000}})
	wantCode(t, err, seckill.EInvalid)
}

func TestFailed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)
	// No users or items: a failed order may name ones that do not exist.
	m := seckill.OrderMessage{OrderRef: "f1", UserID: 7, ItemID: 9, ReservedAt: time.Now()}

	if _, ok, err := db.FailedFor(ctx, 7, 9); err != nil || ok {
		t.Errorf("FailedFor before any = %v, %v; want not ok", ok, err)
	}
	for range 2 {
		if err := db.RecordFailed(ctx, m, "unknown user"); err != nil {
			t.Fatalf("RecordFailed: %v", err)
		}
	}
	if n, err := db.CountFailed(ctx, 9); err != nil || n != 1 {
		t.Errorf("CountFailed = %d, %v; want 1", n, err)
	}
	ref, ok, err := db.FailedFor(ctx, 7, 9)
	if err != nil || !ok || ref != "f1" {
		t.Errorf("FailedFor = %q, %v, %v; want f1", ref, ok, err)
	}

	m.OrderRef = "f2"
	if err := db.RecordFailed(ctx, m, "again"); err != nil {
		t.Fatalf("RecordFailed: %v", err)
	}
	if ref, ok, err := db.FailedFor(ctx, 7, 9); err != nil || !ok || ref != "f2" {
		t.Errorf("FailedFor = %q, %v, %v; want the latest, f2", ref, ok, err)
	}
	if n, err := db.CountFailed(ctx, 9); err != nil || n != 2 {
		t.Errorf("CountFailed = %d, %v; want 2", n, err)
	}
	if n, err := db.CountFailed(ctx, 10); err != nil || n != 0 {
		t.Errorf("CountFailed(other item) = %d, %v; want 0", n, err)
	}
}

// BenchmarkInsertOrders stores batches of 500 new orders, the worker's batch
// size: one new item per batch, the same 500 users.
func BenchmarkInsertOrders(b *testing.B) {
	const batch = 500
	ctx := context.Background()
	db := open(b)
	names := make([]string, batch)
	for i := range names {
		names[i] = fmt.Sprintf("bench_%d", i)
	}
	users := mustUsers(b, db, names...)
	msgs := make([]seckill.OrderMessage, batch)
	now := time.Now()

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		item := mustItem(b, db)
		for j := range msgs {
			msgs[j] = seckill.OrderMessage{
				OrderRef: fmt.Sprintf("o-%d-%d", i, j), UserID: users[j], ItemID: item.ID, ReservedAt: now,
			}
		}
		b.StartTimer()
		n, err := db.InsertOrders(ctx, msgs)
		if err != nil {
			b.Fatalf("InsertOrders: %v", err)
		}
		if n != batch {
			b.Fatalf("inserted %d, want %d", n, batch)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "orders/s")
}
