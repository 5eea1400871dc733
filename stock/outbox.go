package stock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/queue"
)

// Outbox reads the outbox streams of every item for one relay. It is the
// Redis side of queue.Outbox: entries stay in their stream, pending in the
// relay's consumer group, until Done removes them after RabbitMQ confirmed
// them.
//
// A relay restarted under the same consumer name first takes back its own
// pending entries (those it had claimed but not confirmed when it died).
// Entries pending for longer than stealAfter under another name (a relay
// that never came back) are claimed too. Both may publish an order twice;
// the worker stores an order ref once, so that is harmless.
type Outbox struct {
	s          *Store
	consumer   string
	stealAfter time.Duration

	mu        sync.Mutex
	streams   []string
	streamsAt time.Time
	recovered map[string]bool
	stolenAt  time.Time
}

// Outbox returns the outbox reader of the relay named consumer.
func (s *Store) Outbox(consumer string, stealAfter time.Duration) *Outbox {
	if stealAfter <= 0 {
		stealAfter = 30 * time.Second
	}
	return &Outbox{s: s, consumer: consumer, stealAfter: stealAfter, recovered: map[string]bool{}}
}

var _ queue.Outbox = (*Outbox)(nil)

func (o *Outbox) refreshStreams(ctx context.Context) ([]string, error) {
	if time.Since(o.streamsAt) < time.Second && o.streams != nil {
		return o.streams, nil
	}
	streams, err := o.s.rdb.SMembers(ctx, o.s.outboxesKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("listing outboxes: %w", err)
	}
	o.streams, o.streamsAt = streams, time.Now()
	return streams, nil
}

// Claim returns up to max entries to publish: first this relay's own
// unconfirmed entries from before a restart, then abandoned ones of other
// relays, then new ones. It never blocks.
func (o *Outbox) Claim(ctx context.Context, max int) ([]queue.OutboxEntry, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	streams, err := o.refreshStreams(ctx)
	if err != nil {
		return nil, err
	}
	var out []queue.OutboxEntry
	for _, st := range streams {
		if o.recovered[st] || len(out) >= max {
			continue
		}
		got, err := o.read(ctx, st, "0", max-len(out))
		if err != nil {
			return out, err
		}
		if len(got) == 0 {
			o.recovered[st] = true
		}
		out = append(out, got...)
	}
	if len(out) < max && time.Since(o.stolenAt) > o.stealAfter/2 {
		o.stolenAt = time.Now()
		for _, st := range streams {
			got, err := o.steal(ctx, st, max-len(out))
			if err != nil {
				return out, err
			}
			out = append(out, got...)
		}
	}
	if len(out) >= max {
		return out, nil
	}
	// New entries: one pipelined XREADGROUP per stream, so the command is
	// valid in Redis Cluster too (one key each).
	pipe := o.s.rdb.Pipeline()
	cmds := make([]*redis.XStreamSliceCmd, len(streams))
	for i, st := range streams {
		cmds[i] = pipe.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: relayGroup, Consumer: o.consumer, Streams: []string{st, ">"},
			Count: int64(max - len(out)), Block: -1,
		})
	}
	if len(cmds) > 0 {
		_, _ = pipe.Exec(ctx)
	}
	for i, c := range cmds {
		res, err := c.Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if isNoGroup(err) {
				o.createGroup(ctx, streams[i])
				continue
			}
			return out, fmt.Errorf("reading outbox %s: %w", streams[i], err)
		}
		for _, s := range res {
			out = append(out, toEntries(s.Stream, s.Messages)...)
		}
	}
	return out, nil
}

func (o *Outbox) read(ctx context.Context, stream, from string, n int) ([]queue.OutboxEntry, error) {
	res, err := o.s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: relayGroup, Consumer: o.consumer, Streams: []string{stream, from}, Count: int64(n), Block: -1,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if isNoGroup(err) {
		o.createGroup(ctx, stream)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading pending outbox %s: %w", stream, err)
	}
	var out []queue.OutboxEntry
	var gone []string
	for _, s := range res {
		for _, m := range s.Messages {
			if len(m.Values) == 0 { // deleted after its confirm, ack still pending
				gone = append(gone, m.ID)
				continue
			}
			out = append(out, toEntries(s.Stream, []redis.XMessage{m})...)
		}
	}
	if len(gone) > 0 {
		o.s.rdb.XAck(ctx, stream, relayGroup, gone...)
	}
	return out, nil
}

// steal claims entries that another relay has held unconfirmed for longer
// than stealAfter.
func (o *Outbox) steal(ctx context.Context, stream string, n int) ([]queue.OutboxEntry, error) {
	if n <= 0 {
		return nil, nil
	}
	pend, err := o.s.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: stream, Group: relayGroup, Idle: o.stealAfter, Start: "-", End: "+", Count: int64(n),
	}).Result()
	if err != nil {
		if isNoGroup(err) || errors.Is(err, redis.Nil) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing pending outbox %s: %w", stream, err)
	}
	var ids []string
	for _, p := range pend {
		if p.Consumer != o.consumer {
			ids = append(ids, p.ID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	msgs, err := o.s.rdb.XClaim(ctx, &redis.XClaimArgs{
		Stream: stream, Group: relayGroup, Consumer: o.consumer, MinIdle: o.stealAfter, Messages: ids,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("claiming abandoned outbox entries of %s: %w", stream, err)
	}
	return toEntries(stream, msgs), nil
}

func (o *Outbox) createGroup(ctx context.Context, stream string) {
	// "0": a stream that lost its group (Redis restarted without it) still
	// has every entry delivered.
	_ = o.s.rdb.XGroupCreateMkStream(ctx, stream, relayGroup, "0").Err()
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// Done removes confirmed entries from their streams.
func (o *Outbox) Done(ctx context.Context, entries []queue.OutboxEntry) error {
	by := map[string][]string{}
	for _, e := range entries {
		by[e.Stream] = append(by[e.Stream], e.ID)
	}
	pipe := o.s.rdb.Pipeline()
	for st, ids := range by {
		pipe.XAck(ctx, st, relayGroup, ids...)
		pipe.XDel(ctx, st, ids...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("removing confirmed outbox entries: %w", err)
	}
	return nil
}

// Message rebuilds the order of an outbox entry. The entry id is the time
// of the reservation in Redis's clock.
func Message(id string, v map[string]any) (seckill.OrderMessage, error) {
	str := func(k string) string { s, _ := v[k].(string); return s }
	user, err1 := strconv.ParseInt(str("user"), 10, 64)
	item, err2 := strconv.ParseInt(str("item"), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return seckill.OrderMessage{}, fmt.Errorf("decoding outbox entry %s: %w", id, err)
	}
	ms, _, _ := strings.Cut(id, "-")
	msn, _ := strconv.ParseInt(ms, 10, 64)
	return seckill.OrderMessage{
		OrderRef: str("ref"), UserID: user, ItemID: item, RequestID: str("req"),
		ReservedAt: time.UnixMilli(msn).UTC(),
	}, nil
}

func toEntries(stream string, msgs []redis.XMessage) []queue.OutboxEntry {
	out := make([]queue.OutboxEntry, 0, len(msgs))
	for _, m := range msgs {
		var body []byte
		msg, err := Message(m.ID, m.Values)
		if err == nil {
			body, err = json.Marshal(msg)
		}
		if err != nil {
			// Never drop an entry: publish what it holds; the worker
			// dead-letters a body it cannot decode, where it is counted.
			body, _ = json.Marshal(m.Values)
		}
		out = append(out, queue.OutboxEntry{Stream: stream, ID: m.ID, Body: body, OrderRef: msg.OrderRef})
	}
	return out
}
