package stock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
)

// Outbox reads the outbox streams of every item for one relay. It is the
// Redis side of seckill.Outbox: entries stay in their stream, pending in the
// relay's consumer group, until Done removes them after RabbitMQ confirmed
// them.
//
// Nothing read is ever left behind under this relay's own name:
//   - a relay restarted under the same consumer name first takes back its
//     own pending entries (those it had claimed but not confirmed when it
//     died);
//   - every few seconds it takes back its own pending entries idle longer
//     than ClaimIdle (XPENDING IDLE + XCLAIM): an entry whose read reply was
//     lost sits pending under this name with nobody holding it. Entries the
//     relay still holds in flight come back too; the relay filters them
//     (the relay's owned set), and the XCLAIM resets their idle time, which
//     tells other relays and reconcile that their owner is alive;
//   - entries pending longer than StealAfter under another name (a relay
//     that never came back) are claimed too.
//
// All of them may publish an order twice; the worker stores an order ref
// once, so that is harmless. Stream reads with ">" and XCLAIM are not safe
// to retry blindly (a retry after a lost reply hands out other entries, or
// none); they go through Options.Reads, a client without retries, and a
// failure is recovered by the next scan, which reads state.
type Outbox struct {
	s        *Store
	reads    redis.UniversalClient
	consumer string
	opt      OutboxOptions

	mu        sync.Mutex
	streams   []string
	streamsAt time.Time
	recovered map[string]bool
	scannedAt time.Time

	reclaimed, stolen, claimErrors atomic.Uint64
	// Oldest pending and unread entry ids' times (Redis clock, unix ms; 0
	// when none) and the offset of Redis's clock from ours, as last measured.
	oldestPendingMs, oldestUnreadMs, clockOffsetMs atomic.Int64
	agesAt                                         atomic.Int64 // unix ms of the last measurement
}

// OutboxOptions tune an Outbox.
type OutboxOptions struct {
	// StealAfter: entries another relay has held unconfirmed this long are
	// taken over. Default 30s.
	StealAfter time.Duration
	// ClaimIdle: this relay's own pending entries untouched this long are
	// taken back and published again. Default 5s.
	ClaimIdle time.Duration
	// Reads is the client that sends the commands a blind retry would
	// spoil (XREADGROUP >, XCLAIM): one with retries off (MaxRetries -1).
	// Default the store's client.
	Reads redis.UniversalClient
	// HeartbeatTTL is the life of the heartbeat key Keep writes every
	// second. Default 5s.
	HeartbeatTTL time.Duration
}

// OutboxStats are an Outbox's counters.
type OutboxStats struct {
	Reclaimed   uint64 // own pending entries taken back after ClaimIdle (restart recovery not counted)
	Stolen      uint64 // entries taken over from other relays
	ClaimErrors uint64 // Claim calls that failed (possibly with partial results)
}

// Outbox returns the outbox reader of the relay named consumer.
func (s *Store) Outbox(consumer string, stealAfter time.Duration) *Outbox {
	return s.RelayOutbox(consumer, OutboxOptions{StealAfter: stealAfter})
}

// RelayOutbox returns the outbox reader of the relay named consumer.
func (s *Store) RelayOutbox(consumer string, opt OutboxOptions) *Outbox {
	if opt.StealAfter <= 0 {
		opt.StealAfter = 30 * time.Second
	}
	if opt.ClaimIdle <= 0 {
		opt.ClaimIdle = 5 * time.Second
	}
	if opt.HeartbeatTTL <= 0 {
		opt.HeartbeatTTL = 5 * time.Second
	}
	reads := opt.Reads
	if reads == nil {
		reads = s.rdb
	}
	return &Outbox{s: s, reads: reads, consumer: consumer, opt: opt, recovered: map[string]bool{}}
}

var (
	_ seckill.Outbox       = (*Outbox)(nil)
	_ seckill.OutboxHolder = (*Outbox)(nil)
	_ seckill.OutboxKeeper = (*Outbox)(nil)
)

// Consumer is the relay's name in the consumer group.
func (o *Outbox) Consumer() string { return o.consumer }

// Stats returns the counters.
func (o *Outbox) Stats() OutboxStats {
	return OutboxStats{Reclaimed: o.reclaimed.Load(), Stolen: o.stolen.Load(), ClaimErrors: o.claimErrors.Load()}
}

// scanEvery is how often own idle and abandoned entries are looked for.
func (o *Outbox) scanEvery() time.Duration {
	return min(max(min(o.opt.ClaimIdle, o.opt.StealAfter)/2, 50*time.Millisecond), 5*time.Second)
}

func (o *Outbox) refreshStreams(ctx context.Context) ([]string, error) {
	if time.Since(o.streamsAt) < time.Second && o.streams != nil {
		return o.streams, nil
	}
	streams, err := o.s.rdb.SMembers(ctx, o.s.ks.Outboxes()).Result()
	if err != nil {
		return nil, fmt.Errorf("listing outboxes: %w", err)
	}
	o.streams, o.streamsAt = streams, time.Now()
	return streams, nil
}

// Claim returns up to max entries to publish: first this relay's own
// unconfirmed entries from before a restart, then (every few seconds) its
// own entries idle longer than ClaimIdle and abandoned ones of other
// relays, then new ones. It never blocks. With an error it still returns
// every entry it read: they are pending under this relay's name, and the
// caller must publish them.
func (o *Outbox) Claim(ctx context.Context, max int) ([]seckill.OutboxEntry, error) {
	out, err := o.claim(ctx, max)
	if err != nil {
		o.claimErrors.Add(1)
	}
	return out, err
}

func (o *Outbox) claim(ctx context.Context, max int) ([]seckill.OutboxEntry, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	streams, err := o.refreshStreams(ctx)
	if err != nil {
		return nil, err
	}
	// A stream that answers with an error reply (a key of the wrong type,
	// say) must not stop the others: its error is kept and the next
	// stream read. A connection error stops the call.
	var out []seckill.OutboxEntry
	var errs []error
	for _, st := range streams {
		if o.recovered[st] || len(out) >= max {
			continue
		}
		got, err := o.read(ctx, st, "0", max-len(out))
		out = append(out, got...)
		if err != nil {
			errs = append(errs, err)
			if !isReply(err) {
				return out, errors.Join(errs...)
			}
			continue
		}
		if len(got) == 0 {
			o.recovered[st] = true
		}
	}
	if len(out) < max && time.Since(o.scannedAt) >= o.scanEvery() {
		o.scannedAt = time.Now()
		for _, st := range streams {
			got, err := o.takeBack(ctx, st, max-len(out))
			out = append(out, got...)
			if err != nil {
				errs = append(errs, err)
				if !isReply(err) {
					return out, errors.Join(errs...)
				}
			}
		}
	}
	if len(out) >= max {
		return out, errors.Join(errs...)
	}
	// New entries: one pipelined XREADGROUP per stream, so the command is
	// valid in Redis Cluster too (one key each). Sent without retries: a
	// retry after a lost reply would hand out the next entries and leave
	// these pending under our name (taken back after ClaimIdle). Some
	// streams may fail while others answer: keep what came back.
	pipe := o.reads.Pipeline()
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
			if !isReply(err) && len(errs) > 0 && !isReply(errs[len(errs)-1]) {
				continue // the same connection error for every stream: once is enough
			}
			errs = append(errs, fmt.Errorf("reading outbox %s: %w", streams[i], err))
			continue
		}
		for _, s := range res {
			out = append(out, toEntries(s.Stream, s.Messages)...)
		}
	}
	return out, errors.Join(errs...)
}

func (o *Outbox) read(ctx context.Context, stream, from string, n int) ([]seckill.OutboxEntry, error) {
	// Reading from "0" (this consumer's own pending list) is idempotent.
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
	var out []seckill.OutboxEntry
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

// takeBack claims this relay's own entries idle longer than ClaimIdle and
// other relays' entries idle longer than StealAfter.
func (o *Outbox) takeBack(ctx context.Context, stream string, n int) ([]seckill.OutboxEntry, error) {
	if n <= 0 {
		return nil, nil
	}
	own, err := o.idle(ctx, stream, o.consumer, o.opt.ClaimIdle, n)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(own))
	for i, p := range own {
		ids[i] = p.ID
	}
	out, err := o.xclaim(ctx, stream, ids, o.opt.ClaimIdle)
	o.reclaimed.Add(uint64(len(out)))
	if err != nil || len(out) >= n {
		return out, err
	}
	others, err := o.idle(ctx, stream, "", o.opt.StealAfter, n-len(out))
	if err != nil {
		return out, err
	}
	var theirs []string
	for _, p := range others {
		if p.Consumer != o.consumer {
			theirs = append(theirs, p.ID)
		}
	}
	stolen, err := o.xclaim(ctx, stream, theirs, o.opt.StealAfter)
	o.stolen.Add(uint64(len(stolen)))
	return append(out, stolen...), err
}

// idle lists up to n pending entries of a stream idle at least d, of one
// consumer (all when ""). XPENDING is read only: safe to retry.
func (o *Outbox) idle(ctx context.Context, stream, consumer string, d time.Duration, n int) ([]redis.XPendingExt, error) {
	pend, err := o.s.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: stream, Group: relayGroup, Idle: d, Start: "-", End: "+", Count: int64(n), Consumer: consumer,
	}).Result()
	if err != nil {
		if isNoGroup(err) || errors.Is(err, redis.Nil) || isNoKey(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing pending outbox %s: %w", stream, err)
	}
	return pend, nil
}

// xclaim claims entries for this relay if still idle at least minIdle.
func (o *Outbox) xclaim(ctx context.Context, stream string, ids []string, minIdle time.Duration) ([]seckill.OutboxEntry, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	msgs, err := o.reads.XClaim(ctx, &redis.XClaimArgs{
		Stream: stream, Group: relayGroup, Consumer: o.consumer, MinIdle: minIdle, Messages: ids,
	}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("claiming idle outbox entries of %s: %w", stream, err)
	}
	var gone []string
	live := msgs[:0]
	for _, m := range msgs {
		if len(m.Values) == 0 { // deleted after its confirm, ack still pending (Redis < 7)
			gone = append(gone, m.ID)
			continue
		}
		live = append(live, m)
	}
	if len(gone) > 0 {
		o.s.rdb.XAck(ctx, stream, relayGroup, gone...)
	}
	return toEntries(stream, live), nil
}

// Hold resets the idle time of entries the relay still holds (XCLAIM
// JUSTID, min idle 0: idempotent, safe to retry), so that only an entry the
// relay does not hold goes idle: it is taken back after ClaimIdle, and
// reconcile calls it stranded after --stranded-after. An entry no longer
// pending (confirmed and removed meanwhile) is not touched.
func (o *Outbox) Hold(ctx context.Context, entries []seckill.OutboxEntry) error {
	by := map[string][]string{}
	for _, e := range entries {
		by[e.Stream] = append(by[e.Stream], e.ID)
	}
	pipe := o.s.rdb.Pipeline()
	for st, ids := range by {
		pipe.XClaimJustID(ctx, &redis.XClaimArgs{Stream: st, Group: relayGroup, Consumer: o.consumer, Messages: ids})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("refreshing held outbox entries: %w", err)
	}
	return nil
}

// Keep runs the relay's own duties until ctx is done: the heartbeat
// (<prefix>relay:alive:<consumer>, rewritten every second) and the ages of
// the oldest waiting entries (see Ages). On return it deletes the heartbeat.
// The relay (queue.Relay.Run) runs it.
func (o *Outbox) Keep(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; ; i++ {
		beat := RelayBeat{ID: o.consumer, ClaimIdleMs: o.opt.ClaimIdle.Milliseconds(), StealAfterMs: o.opt.StealAfter.Milliseconds()}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = o.s.Heartbeat(cctx, beat, o.opt.HeartbeatTTL)
		if i%2 == 0 {
			o.measureAges(cctx)
		}
		cancel()
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = o.s.StopHeartbeat(sctx, o.consumer)
			cancel()
			return
		case <-t.C:
		}
	}
}

// measureAges records the oldest pending and unread entry over every stream.
func (o *Outbox) measureAges(ctx context.Context) {
	o.mu.Lock()
	streams, err := o.refreshStreams(ctx)
	o.mu.Unlock()
	if err != nil {
		return
	}
	var pend, unread int64
	var now time.Time
	for _, st := range streams {
		p, u, n, err := o.s.oldestIDs(ctx, st)
		if err != nil {
			return
		}
		now = n
		if t := IDTime(p); p != "" && (pend == 0 || t.UnixMilli() < pend) {
			pend = t.UnixMilli()
		}
		if t := IDTime(u); u != "" && (unread == 0 || t.UnixMilli() < unread) {
			unread = t.UnixMilli()
		}
	}
	if !now.IsZero() {
		o.clockOffsetMs.Store(now.UnixMilli() - time.Now().UnixMilli())
	}
	o.oldestPendingMs.Store(pend)
	o.oldestUnreadMs.Store(unread)
	o.agesAt.Store(time.Now().UnixMilli())
}

// Ages returns the ages of the oldest pending and oldest unread entries
// over every outbox, as last measured by Keep (every 2 s). While Redis does
// not answer, the last known oldest entries keep ageing.
func (o *Outbox) Ages() OutboxAges {
	now := time.Now().UnixMilli() + o.clockOffsetMs.Load()
	age := func(ms int64) time.Duration {
		if ms == 0 {
			return 0
		}
		return time.Duration(max(now-ms, 0)) * time.Millisecond
	}
	return OutboxAges{OldestPending: age(o.oldestPendingMs.Load()), OldestUnread: age(o.oldestUnreadMs.Load())}
}

func (o *Outbox) createGroup(ctx context.Context, stream string) {
	// "0": a stream that lost its group (Redis restarted without it) still
	// has every entry delivered.
	_ = o.s.rdb.XGroupCreateMkStream(ctx, stream, relayGroup, "0").Err()
}

// isReply reports whether err is an error reply of the server (it answered),
// not a connection error or a timeout.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// Done removes confirmed entries from their streams.
func (o *Outbox) Done(ctx context.Context, entries []seckill.OutboxEntry) error {
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

// toEntries turns stream entries into typed outbox entries. An entry
// whose fields do not make an order is kept, with its fields and the
// error: it must be published all the same (and dead-lettered there).
func toEntries(stream string, msgs []redis.XMessage) []seckill.OutboxEntry {
	out := make([]seckill.OutboxEntry, 0, len(msgs))
	for _, m := range msgs {
		msg, err := Message(m.ID, m.Values)
		e := seckill.OutboxEntry{Stream: stream, ID: m.ID, Order: msg, Err: err}
		if err != nil {
			e.Fields = make(map[string]string, len(m.Values))
			for k, v := range m.Values {
				e.Fields[k] = fmt.Sprint(v)
			}
		}
		out = append(out, e)
	}
	return out
}
