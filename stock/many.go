package stock

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Left is what a catalogue shows of one item: whether Redis holds it and
// the units left.
type Left struct {
	Loaded    bool
	StockLeft int64
}

// Lefts reads the units left of many items in one pipelined round trip
// (the catalogue's refresh: one round trip however many items are live).
// On a Redis Cluster the pipeline is split by node, still one round trip
// per node.
func (s *Store) Lefts(ctx context.Context, itemIDs []int64) ([]Left, error) {
	if len(itemIDs) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	metas := make([]*redis.IntCmd, len(itemIDs))
	lefts := make([]*redis.StringCmd, len(itemIDs))
	for i, id := range itemIDs {
		k := s.ks.Item(id)
		metas[i] = pipe.HLen(ctx, k.Meta)
		lefts[i] = pipe.Get(ctx, k.Stock)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading the stock of %d items: %w", len(itemIDs), unavailable(err))
	}
	out := make([]Left, len(itemIDs))
	for i := range itemIDs {
		out[i].Loaded = metas[i].Val() > 0
		out[i].StockLeft, _ = lefts[i].Int64()
	}
	return out, nil
}
