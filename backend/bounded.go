package backend

import (
	"context"
	"time"

	"seckill"
)

// DBTimeout bounds every call of the backend to PostgreSQL. A server that
// stalls (SIGSTOP, a lost network, a lock held for long) would otherwise
// hold a request for as long as its client waits: past it, the call ends
// with context.DeadlineExceeded, which package postgres marks as an outage
// (503 with Retry-After). The worker and the Redis guard use PostgreSQL
// directly, without this bound: they wait outages out.
const DBTimeout = 5 * time.Second

// bounded is the Catalog and Users of a Service, each call bounded by d.
type bounded struct {
	db    Catalog
	users Users // nil when db stores no users
	d     time.Duration
}

func (b bounded) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.d)
}

func (b bounded) CreateItem(ctx context.Context, it seckill.Item) (seckill.Item, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.db.CreateItem(ctx, it)
}

func (b bounded) Item(ctx context.Context, id int64) (seckill.Item, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.db.Item(ctx, id)
}

func (b bounded) Items(ctx context.Context) ([]seckill.Item, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.db.Items(ctx)
}

func (b bounded) OrderFor(ctx context.Context, userID, itemID int64) (seckill.Order, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.db.OrderFor(ctx, userID, itemID)
}

func (b bounded) FailedFor(ctx context.Context, userID, itemID int64) (string, bool, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.db.FailedFor(ctx, userID, itemID)
}

func (b bounded) CountOrders(ctx context.Context, itemID int64) (int64, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.db.CountOrders(ctx, itemID)
}

func (b bounded) CountFailed(ctx context.Context, itemID int64) (int64, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.db.CountFailed(ctx, itemID)
}

func (b bounded) OrderRefs(ctx context.Context, itemID int64) (map[int64]string, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.db.OrderRefs(ctx, itemID)
}

func (b bounded) OrderNetworks(ctx context.Context, itemID int64) (map[int64]string, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.db.OrderNetworks(ctx, itemID)
}

func (b bounded) Ping(ctx context.Context) error {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.db.Ping(ctx)
}

func (b bounded) CreateUser(ctx context.Context, username, passwordHash, network string) (int64, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.users.CreateUser(ctx, username, passwordHash, network)
}

func (b bounded) Credentials(ctx context.Context, username string) (int64, string, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.users.Credentials(ctx, username)
}

func (b bounded) UserByName(ctx context.Context, username string) (seckill.User, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.users.UserByName(ctx, username)
}

func (b bounded) EnsureUsers(ctx context.Context, usernames []string) (map[string]int64, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.users.EnsureUsers(ctx, usernames)
}

func (b bounded) Accounts(ctx context.Context, ids []int64) (map[int64]seckill.Account, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.users.Accounts(ctx, ids)
}
