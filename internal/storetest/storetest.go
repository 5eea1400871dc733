// Package storetest is the conformance suite of the order stores: every
// engine (postgres, sqlite) runs the same cases through Run, so the two
// cannot drift apart. Only what is truly specific to one engine (pool
// sizes, pragmas, its error classification, password hashing) stays in the
// engine's own tests.
//
// It is imported by tests only; nothing in cmd/seckill links it.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"seckill"
	"seckill/backend"
	"seckill/reconcile"
	"seckill/worker"
)

// Store is everything the other packages take of a store, plus what the
// suite reads back. An engine asserts `var _ storetest.Store = (*DB)(nil)`.
type Store interface {
	backend.Catalog
	backend.Users
	worker.Store
	reconcile.Catalog
	backend.DrawStore
	UserByName(ctx context.Context, username string) (seckill.User, error)
	Close()
}

// Engine is what the suite needs of one store engine.
type Engine struct {
	// Open opens a store on a fresh, empty database of the test's own,
	// closed at the end of the test.
	Open func(t testing.TB) Store
	// NewDSN names a fresh database that OpenDSN opens (and migrates) each
	// time it is called. Nil when a database does not outlive its store
	// (SQLite in memory): the tests of reopening are skipped.
	NewDSN  func(t testing.TB) string
	OpenDSN func(ctx context.Context, dsn string) (Store, error)
	// Count runs a `SELECT count(*) ...` query on the store's database.
	Count func(t testing.TB, s Store, query string) int
	// Migrations is the number of migrations the engine embeds.
	Migrations int
	// UTC: the engine hands back every time in UTC (time.UTC). PostgreSQL
	// (pgx) answers in the process's local zone.
	UTC bool
}

// Run runs every case of the suite on e, each as a parallel subtest.
func Run(t *testing.T, e Engine) {
	for _, c := range []struct {
		name string
		f    func(t *testing.T, e Engine)
	}{
		{"MigrationsIdempotent", migrationsIdempotent},
		{"ConcurrentOpen", concurrentOpen},
		{"Users", users},
		{"EnsureUsers", ensureUsers},
		{"Items", items},
		{"ItemsEmpty", itemsEmpty},
		{"InsertOrders", insertOrders},
		{"InsertOrdersUnknownUser", insertOrdersUnknownUser},
		{"Failed", failed},
		{"ConcurrentInsertOrders", concurrentInsertOrders},
		{"Canceled", canceled},
		{"UsernamesNormalised", usernamesNormalised},
		{"RulesAndNetwork", rulesAndNetwork},
		{"Draw", drawCase},               // draw.go
		{"DrawCloseRace", drawCloseRace}, // draw.go
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.f(t, e)
		})
	}
}

func wantCode(t *testing.T, err error, code seckill.Code) {
	t.Helper()
	if got := seckill.ErrorCode(err); got != code {
		t.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

// Users makes users of the given names and returns their ids in order.
func Users(t testing.TB, db Store, names ...string) []int64 {
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

// Item makes a live item of 100 units.
func Item(t testing.TB, db Store) seckill.Item {
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

const migrationsQuery = "SELECT count(*) FROM schema_migrations"

func migrationsIdempotent(t *testing.T, e Engine) {
	if e.NewDSN == nil {
		t.Skip("a database of this engine does not outlive its store")
	}
	ctx := context.Background()
	dsn := e.NewDSN(t)
	first, err := e.OpenDSN(ctx, dsn)
	if err != nil {
		t.Fatalf("first Open: %v", err)
	}
	want := e.Count(t, first, migrationsQuery)
	if want != e.Migrations || want < 1 {
		t.Fatalf("%d migrations recorded, want %d", want, e.Migrations)
	}
	if _, err := first.CreateUser(ctx, "alice", "", ""); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	first.Close()

	second, err := e.OpenDSN(ctx, dsn)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	defer second.Close()
	if got := e.Count(t, second, migrationsQuery); got != want {
		t.Errorf("%d migrations recorded after the second Open, want %d", got, want)
	}
	if _, err := second.UserByName(ctx, "alice"); err != nil {
		t.Errorf("data lost by the second Open: %v", err)
	}
}

func concurrentOpen(t *testing.T, e Engine) {
	if e.NewDSN == nil {
		t.Skip("a database of this engine does not outlive its store")
	}
	dsn := e.NewDSN(t)
	const n = 4
	var wg sync.WaitGroup
	dbs := make([]Store, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { dbs[i], errs[i] = e.OpenDSN(context.Background(), dsn) })
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
	if got := e.Count(t, dbs[0], migrationsQuery); got != e.Migrations {
		t.Errorf("%d migrations recorded, want %d", got, e.Migrations)
	}
}

func users(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
	before := time.Now().Truncate(time.Microsecond)
	id, err := db.CreateUser(ctx, "alice", "$2a$10$hash", "")
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	_, err = db.CreateUser(ctx, "alice", "", "")
	wantCode(t, err, seckill.EUsernameTaken)

	u, err := db.UserByName(ctx, "alice")
	if err != nil {
		t.Fatalf("UserByName: %v", err)
	}
	if u.ID != id || u.Username != "alice" || u.PasswordHash != "$2a$10$hash" ||
		u.CreatedAt.Before(before) || u.CreatedAt.After(time.Now()) {
		t.Errorf("UserByName = %+v, want id %d and the hash", u, id)
	}
	if e.UTC && u.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt in %v, want UTC", u.CreatedAt.Location())
	}
	gotID, hash, err := db.Credentials(ctx, "alice")
	if err != nil || gotID != id || hash != "$2a$10$hash" {
		t.Errorf("Credentials = %d, %q, %v", gotID, hash, err)
	}
	_, err = db.UserByName(ctx, "bob")
	wantCode(t, err, seckill.ENotFound)
	_, _, err = db.Credentials(ctx, "bob")
	wantCode(t, err, seckill.ENotFound)

	// PostgreSQL refuses invalid UTF-8 with an uncoded error; so must
	// every store.
	if _, err := db.CreateUser(ctx, "bad\xff", "", ""); err == nil || seckill.ErrorCode(err) != seckill.EInternal {
		t.Errorf("CreateUser(invalid UTF-8) = %v, want an internal error", err)
	}
}

func ensureUsers(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
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
	for _, name := range []string{names[0], names[1], names[9_999]} {
		u, err := db.UserByName(ctx, name)
		if err != nil || u.ID != ids[name] {
			t.Errorf("UserByName(%s) = %+v, %v; want id %d", name, u, err, ids[name])
		}
	}
	if n := e.Count(t, db, "SELECT count(*) FROM users"); n != 10_000 {
		t.Errorf("%d users stored, want 10000", n)
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
	// Names that JSON escapes come back as they went in.
	odd := []string{`q"uote`, `back\\slash`, "<tag>&amp;", "ünïcødé✓", "tab\tnew\nline", "\u2028sep"}
	oddIDs, err := db.EnsureUsers(ctx, odd)
	if err != nil || len(oddIDs) != len(odd) {
		t.Fatalf("EnsureUsers(odd names) = %v, %v", oddIDs, err)
	}
	for _, n := range odd {
		if u, err := db.UserByName(ctx, n); err != nil || u.ID != oddIDs[n] || u.Username != n {
			t.Errorf("UserByName(%q) = %+v, %v; want id %d", n, u, err, oddIDs[n])
		}
	}
	if empty, err := db.EnsureUsers(ctx, nil); err != nil || len(empty) != 0 || empty == nil {
		t.Errorf("EnsureUsers(nil) = %v, %v", empty, err)
	}
}

func items(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
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
	if !later.StartsAt.Equal(base.Add(time.Hour)) {
		t.Errorf("CreateItem StartsAt = %v, want %v", later.StartsAt, base.Add(time.Hour))
	}
	if e.UTC && later.StartsAt.Location() != time.UTC {
		t.Errorf("CreateItem StartsAt in %v, want UTC", later.StartsAt.Location())
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
	if got != later {
		t.Errorf("Item = %#v, want exactly %#v", got, later)
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

	for _, bad := range []struct {
		seckill.Item
		constraint string
	}{
		{seckill.Item{Name: "negative stock", PriceCents: 1, Stock: -1, StartsAt: base, EndsAt: base.Add(time.Hour)}, "items_stock_check"},
		{seckill.Item{Name: "negative price", PriceCents: -1, Stock: 1, StartsAt: base, EndsAt: base.Add(time.Hour)}, "items_price_cents_check"},
		{seckill.Item{Name: "ends at start", PriceCents: 1, Stock: 1, StartsAt: base, EndsAt: base}, "items_window_check"},
	} {
		_, err := db.CreateItem(ctx, bad.Item)
		if err == nil {
			t.Errorf("CreateItem(%s) succeeded", bad.Name)
			continue
		}
		wantCode(t, err, seckill.EInvalid)
		if msg := seckill.ErrorMessage(err); msg != "violates "+bad.constraint {
			t.Errorf("CreateItem(%s) message %q, want violates %s", bad.Name, msg, bad.constraint)
		}
	}
	if items, _ := db.Items(ctx); len(items) != 2 {
		t.Errorf("%d items after the rejected ones, want 2", len(items))
	}

	// Times far from now survive the round trip too.
	zero, err := db.CreateItem(ctx, seckill.Item{Name: "old", EndsAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatalf("CreateItem with zero StartsAt: %v", err)
	}
	if !zero.StartsAt.Equal(time.Time{}) || zero.EndsAt.Year() != 3000 {
		t.Errorf("zero StartsAt came back as %v, EndsAt %v", zero.StartsAt, zero.EndsAt)
	}
}

func itemsEmpty(t *testing.T, e Engine) {
	items, err := e.Open(t).Items(context.Background())
	if err != nil || items == nil || len(items) != 0 {
		t.Errorf("Items of an empty table = %#v, %v; want an empty slice", items, err)
	}
}

func insertOrders(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
	u := Users(t, db, "u1", "u2", "u3", "u4")
	item := Item(t, db)
	other := Item(t, db)
	at := time.Now().Truncate(time.Microsecond)
	msg := func(ref string, user int64) seckill.OrderMessage {
		return seckill.OrderMessage{OrderRef: ref, UserID: user, ItemID: item.ID, ReservedAt: at}
	}

	batch := []seckill.OrderMessage{
		msg("r5", u[0]), // same user and item as r1, another ref: sorted after r1, loses
		msg("r1", u[0]),
		msg("r2", u[1]),
		msg("r1", u[0]), // redelivered: same ref
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
	if refs, err := db.OrderRefs(ctx, item.ID+1000); err != nil || refs == nil || len(refs) != 0 {
		t.Errorf("OrderRefs(no item) = %#v, %v; want an empty map", refs, err)
	}

	o, err := db.OrderFor(ctx, u[0], item.ID)
	if err != nil {
		t.Fatalf("OrderFor: %v", err)
	}
	if o.ID == 0 || o.OrderRef != "r1" || o.UserID != u[0] || o.ItemID != item.ID ||
		!o.ReservedAt.Equal(at) || o.CreatedAt.IsZero() {
		t.Errorf("OrderFor = %+v", o)
	}
	if e.UTC && o.ReservedAt != at.UTC() {
		t.Errorf("OrderFor ReservedAt = %#v, want %#v", o.ReservedAt, at.UTC())
	}
	_, err = db.OrderFor(ctx, u[3], item.ID)
	wantCode(t, err, seckill.ENotFound)

	if d, err := db.DuplicateOrders(ctx); err != nil || d != 0 {
		t.Errorf("DuplicateOrders = %d, %v; want 0", d, err)
	}
}

func insertOrdersUnknownUser(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
	u := Users(t, db, "u1", "u2")
	item := Item(t, db)
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
	if c := e.Count(t, db, "SELECT count(*) FROM orders"); c != 2 {
		t.Errorf("%d orders stored, want 2", c)
	}
}

func failed(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
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

	// "e0" sorts before "f1": only its later time makes it the latest.
	time.Sleep(2 * time.Millisecond)
	m.OrderRef = "e0"
	if err := db.RecordFailed(ctx, m, "again"); err != nil {
		t.Fatalf("RecordFailed: %v", err)
	}
	if ref, ok, err := db.FailedFor(ctx, 7, 9); err != nil || !ok || ref != "e0" {
		t.Errorf("FailedFor = %q, %v, %v; want the latest, e0", ref, ok, err)
	}
	if n, err := db.CountFailed(ctx, 9); err != nil || n != 2 {
		t.Errorf("CountFailed = %d, %v; want 2", n, err)
	}
	if n, err := db.CountFailed(ctx, 10); err != nil || n != 0 {
		t.Errorf("CountFailed(other item) = %d, %v; want 0", n, err)
	}
}

// concurrentInsertOrders has 50 goroutines store overlapping batches of
// 100 orders at once, with readers running alongside: no write fails (no
// SQLITE_BUSY, no deadlock), and every distinct order is stored exactly
// once.
func concurrentInsertOrders(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
	const (
		workers = 50
		batch   = 100
		users   = 1000 // batch i covers users [20i, 20i+100) mod 1000
	)
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("c_%04d", i)
	}
	ids := Users(t, db, names...)
	item := Item(t, db)
	now := time.Now()

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		errs  []error
	)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := db.CountOrders(ctx, item.ID); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				if _, err := db.OrderRefs(ctx, item.ID); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for w := range workers {
		wg.Go(func() {
			msgs := make([]seckill.OrderMessage, batch)
			for j := range msgs {
				u := (w*20 + j) % users
				// The ref depends on the user only, so overlapping
				// batches carry the very same orders.
				msgs[j] = seckill.OrderMessage{
					OrderRef: fmt.Sprintf("ref-%d", u), UserID: ids[u], ItemID: item.ID, ReservedAt: now,
				}
			}
			n, err := db.InsertOrders(ctx, msgs)
			mu.Lock()
			defer mu.Unlock()
			total += n
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	for _, err := range errs {
		if strings.Contains(err.Error(), "SQLITE_BUSY") || strings.Contains(err.Error(), "locked") || strings.Contains(err.Error(), "deadlock") {
			t.Errorf("lock error: %v", err)
		} else {
			t.Errorf("error: %v", err)
		}
	}
	// 50 windows of 100 starting every 20 users cover users
	// [0, 49*20+100) = [0, 1080), which wraps to all 1000.
	const want = 1000
	if total != want {
		t.Errorf("InsertOrders inserted %d in all, want %d", total, want)
	}
	if c, err := db.CountOrders(ctx, item.ID); err != nil || c != want {
		t.Errorf("CountOrders = %d, %v; want %d", c, err, want)
	}
	if d, err := db.DuplicateOrders(ctx); err != nil || d != 0 {
		t.Errorf("DuplicateOrders = %d, %v; want 0", d, err)
	}
}

// canceled: a cancelled context fails a write cleanly and leaves nothing
// behind.
func canceled(t *testing.T, e Engine) {
	db := e.Open(t)
	u := Users(t, db, "u1")
	item := Item(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := db.InsertOrders(ctx, []seckill.OrderMessage{{OrderRef: "a", UserID: u[0], ItemID: item.ID}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("InsertOrders with a cancelled context = %v, want context.Canceled", err)
	}
	if c, err := db.CountOrders(context.Background(), item.ID); err != nil || c != 0 {
		t.Errorf("CountOrders = %d, %v; want 0", c, err)
	}
}

// BenchmarkInsertOrders stores batches of 500 new orders, the worker's
// batch size: one new item per batch, the same 500 users.
func BenchmarkInsertOrders(b *testing.B, db Store) {
	const batch = 500
	ctx := context.Background()
	names := make([]string, batch)
	for i := range names {
		names[i] = fmt.Sprintf("bench_%d", i)
	}
	users := Users(b, db, names...)
	msgs := make([]seckill.OrderMessage, batch)
	now := time.Now()

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		item := Item(b, db)
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

// usernamesNormalised (issue 13): a name with the key of an existing one
// (case, a capital I for l, a digit for a letter, full width) is taken;
// looking up or ensuring any of them reaches the one account.
func usernamesNormalised(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
	id, err := db.CreateUser(ctx, "alice", "h", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"alice", "Alice", "ALICE", "aIice", "al1ce", "\uff41\uff4c\uff49\uff43\uff45"} {
		if _, err := db.CreateUser(ctx, n, "h2", ""); seckill.ErrorCode(err) != seckill.EUsernameTaken {
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
	if n := e.Count(t, db, "SELECT count(*) FROM users"); n != 3 {
		t.Fatalf("%d users; want 3 (alice, one bob, carol)", n)
	}
}

// rulesAndNetwork: an item's sale rules and an account's registration
// network come back as stored (migration 0003).
func rulesAndNetwork(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
	if _, err := db.CreateUser(ctx, "carol", "h", "203.0.113.0/24"); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if _, err := db.EnsureUsers(ctx, []string{"dave"}); err != nil {
		t.Fatalf("EnsureUsers: %v", err)
	}
	for name, want := range map[string]string{"carol": "203.0.113.0/24", "dave": ""} {
		u, err := db.UserByName(ctx, name)
		if err != nil || u.Network != want {
			t.Errorf("UserByName(%s) = %+v, %v; want network %q", name, u, err, want)
		}
	}

	base := time.Now().Truncate(time.Second).UTC()
	rules := seckill.SaleRules{
		MinAccountAge: seckill.Duration(72 * time.Hour), MaxPerNetwork: 3,
		Allocation:    seckill.AllocationDraw,
		EntriesOpenAt: base, EntriesCloseAt: base.Add(time.Hour), DrawAt: base.Add(2 * time.Hour),
		ClaimWindow: seckill.Duration(10 * time.Minute), Waitlist: 5,
	}
	it, err := db.CreateItem(ctx, seckill.Item{Name: "ruled", Stock: 1, StartsAt: base, EndsAt: base.Add(3 * time.Hour), Challenge: "pow", SaleRules: rules})
	if err != nil {
		t.Fatalf("CreateItem: %v", err)
	}
	got, err := db.Item(ctx, it.ID)
	if err != nil {
		t.Fatalf("Item: %v", err)
	}
	g := got.SaleRules
	if g.MinAccountAge != rules.MinAccountAge || g.MaxPerNetwork != 3 || g.Allocation != seckill.AllocationDraw ||
		!g.EntriesOpenAt.Equal(base) || !g.EntriesCloseAt.Equal(rules.EntriesCloseAt) || !g.DrawAt.Equal(rules.DrawAt) ||
		g.ClaimWindow != rules.ClaimWindow || g.Waitlist != 5 {
		t.Errorf("Item rules = %+v, want %+v", g, rules)
	}
	plain, err := db.CreateItem(ctx, seckill.Item{Name: "plain", Stock: 1, StartsAt: base, EndsAt: base.Add(time.Hour), Challenge: "pow"})
	if err != nil {
		t.Fatalf("CreateItem: %v", err)
	}
	if got, _ := db.Item(ctx, plain.ID); got.SaleRules != (seckill.SaleRules{}) || got.AllocationMode() != seckill.AllocationRace {
		t.Errorf("item without rules reads back %+v", got.SaleRules)
	}
}
