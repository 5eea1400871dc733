package seckill

import "context"

// The outbox contract: what a drain of the outbox (the relay to RabbitMQ,
// or inproc in `seckill dev`) reads, holds and removes, and where the
// orders go at the far end. The Redis streams behind it (stock.Outbox) and
// the wire format on RabbitMQ (queue) are the adapters' business: entries
// carry typed orders, never encoded bodies.

// OutboxEntry is one order waiting in the outbox: where it sits (its
// stream and entry id) and the order it holds.
type OutboxEntry struct {
	Stream, ID string
	// Order is the order the entry holds.
	Order OrderMessage
	// Err is set when the entry's fields do not make an order. Such an
	// entry is never dropped: Fields holds what it stores, the relay
	// publishes it on its own for the worker to dead-letter, and inproc
	// records it as failed.
	Err    error
	Fields map[string]string
}

// Outbox is what a drain of the outbox reads from.
type Outbox interface {
	// Claim returns up to max entries not yet confirmed. It may return an
	// entry again (after a crash); it returns quickly, possibly empty.
	// With an error it still returns every entry it handed out: the
	// caller must publish them.
	Claim(ctx context.Context, max int) ([]OutboxEntry, error)
	// Done removes entries whose orders reached their next stop (the
	// broker confirmed them, or the store holds them).
	Done(ctx context.Context, entries []OutboxEntry) error
}

// OutboxKeeper is an Outbox with duties of its own while a relay drains
// it (a heartbeat, gauges). The relay runs Keep alongside and waits for it.
type OutboxKeeper interface {
	Keep(ctx context.Context)
}

// OutboxHolder is an Outbox that wants to hear which entries the relay
// still holds (in flight, waiting for a republish or for Done), so an
// entry the relay does not hold is told apart from one it does (the Redis
// outbox resets their idle time: an entry idle for long under a live relay
// is stranded, not waiting for a broker). Only Stream and ID are set.
type OutboxHolder interface {
	Hold(ctx context.Context, entries []OutboxEntry) error
}

// OrderHandler stores orders at the far end of the pipeline (the worker);
// it must be idempotent per order ref.
type OrderHandler interface {
	// Store stores a batch; it returns one error per message (nil = stored
	// or already stored; non-nil = try again later, the pipeline counts
	// attempts and hands the order to Failed after its delivery limit).
	Store(ctx context.Context, msgs []OrderMessage) []error
	// Failed records an order that could not be stored (dead-lettered);
	// nil -> done, an error -> try again after a pause.
	Failed(ctx context.Context, m OrderMessage, reason string) error
}
