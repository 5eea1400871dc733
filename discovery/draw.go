package discovery

import (
	"context"

	"seckill"
	"seckill/backendclient"
)

// Enter enters a user in a draw. Safe to repeat on another backend: an
// entry is made once per account, a repeat answers the same entry.
func (b *Balancer) Enter(ctx context.Context, itemID, userID int64) (seckill.EntryState, error) {
	return call(ctx, b, ClassRead, true, func(c *backendclient.Client) (seckill.EntryState, error) { return c.Enter(ctx, itemID, userID) })
}

// Entry reads where a user stands in a draw.
func (b *Balancer) Entry(ctx context.Context, itemID, userID int64) (seckill.EntryState, error) {
	return call(ctx, b, ClassRead, true, func(c *backendclient.Client) (seckill.EntryState, error) { return c.Entry(ctx, itemID, userID) })
}

// Draw reads the public state of a draw.
func (b *Balancer) Draw(ctx context.Context, itemID int64) (seckill.DrawView, error) {
	return call(ctx, b, ClassRead, true, func(c *backendclient.Client) (seckill.DrawView, error) { return c.Draw(ctx, itemID) })
}

// DrawEntries exports a closed draw's entry list.
func (b *Balancer) DrawEntries(ctx context.Context, itemID int64) (seckill.EntryList, error) {
	return call(ctx, b, ClassRead, true, func(c *backendclient.Client) (seckill.EntryList, error) { return c.DrawEntries(ctx, itemID) })
}
