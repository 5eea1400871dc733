package app

import (
	"context"

	"seckill"
	"seckill/edge"
)

var _ edge.DrawBackend = inprocBackend{}

func (b inprocBackend) Enter(ctx context.Context, itemID, userID int64) (seckill.EntryState, error) {
	st, err := b.svc.Enter(ctx, itemID, userID)
	return st, unavailable(err)
}

func (b inprocBackend) Entry(ctx context.Context, itemID, userID int64) (seckill.EntryState, error) {
	st, err := b.svc.Entry(ctx, itemID, userID)
	return st, unavailable(err)
}

func (b inprocBackend) Draw(ctx context.Context, itemID int64) (seckill.DrawView, error) {
	v, err := b.svc.Draw(ctx, itemID)
	return v, unavailable(err)
}

func (b inprocBackend) DrawEntries(ctx context.Context, itemID int64) (seckill.EntryList, error) {
	l, err := b.svc.DrawEntries(ctx, itemID)
	return l, unavailable(err)
}
