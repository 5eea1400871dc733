package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"seckill"
)

// entryKey names an outbox entry in the relay's owned set.
func entryKey(e seckill.OutboxEntry) string { return e.Stream + "\x00" + e.ID }

// RelayConfig configures a Relay.
type RelayConfig struct {
	URL      string
	Topology Topology
	// MaxInFlight bounds the entries the relay holds at once: published
	// and not yet confirmed, waiting to be republished, or waiting for
	// Done. Default 1024.
	MaxInFlight int
	// Batch is the most entries asked of Claim, and given to Done, at
	// once. Default 512.
	Batch int
	// MaxPerMessage is the most orders carried by one RabbitMQ message
	// (a batch body, see BatchContentType). Default 256.
	MaxPerMessage int
	// HoldRefresh is how often the relay tells an OutboxHolder which
	// entries it still holds. Default 2s.
	HoldRefresh time.Duration
	Logger      *slog.Logger
}

// RelayStats are the relay's counters since NewRelay.
//
// Published, Confirmed, Returned and Nacked count entries (orders);
// Messages counts the RabbitMQ messages that carried them.
type RelayStats struct {
	Published   uint64 // entries sent in a basic.publish (republishes included)
	Messages    uint64 // basic.publish sent (republishes included)
	Confirmed   uint64 // acked and not returned: handed to Done
	Returned    uint64 // returned unroutable (mandatory), to be republished
	Nacked      uint64 // nacked by the broker or by a lost channel, to be republished
	Reconnects  uint64 // connections opened after the first
	DoneErrors  uint64 // failed Outbox.Done calls (retried)
	ClaimErrors uint64 // failed Outbox.Claim calls (what they returned is published)
}

// Relay moves outbox entries to RabbitMQ with publisher confirms.
type Relay struct {
	cfg RelayConfig
	ob  seckill.Outbox
	log *slog.Logger

	published, messages, confirmed, returned, nacked, reconnects, doneErrors, claimErrors atomic.Uint64
	connected                                                                             atomic.Bool

	idPrefix string        // random, unique to this relay
	idSeq    atomic.Uint64 // message id sequence

	// owned holds the keys of every entry the relay is responsible for
	// (and when it last told the outbox it holds it, see seckill.OutboxHolder):
	// in flight, waiting for a retry or waiting for Done. Its size is the
	// in-flight bound; it also filters entries Claim hands out twice.
	mu    sync.Mutex
	owned map[string]held
	retry []seckill.OutboxEntry // returned or nacked, to republish
	due   time.Time             // when retry may be republished
	rback backoff               // backoff of retries
	wake  chan struct{}         // signals the publisher: room freed or retry added

	lastReturnLog atomic.Int64
}

// NewRelay returns a relay draining ob into cfg.Topology's queue.
func NewRelay(cfg RelayConfig, ob seckill.Outbox) *Relay {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 512
	}
	if cfg.Batch > cfg.MaxInFlight {
		cfg.Batch = cfg.MaxInFlight
	}
	if cfg.MaxPerMessage <= 0 {
		cfg.MaxPerMessage = 256
	}
	if cfg.HoldRefresh <= 0 {
		cfg.HoldRefresh = 2 * time.Second
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return &Relay{
		cfg:      cfg,
		idPrefix: hex.EncodeToString(rnd[:]),
		ob:       ob,
		log:      loggerOr(cfg.Logger).With("component", "relay", "queue", cfg.Topology.Name()),
		owned:    make(map[string]held),
		rback:    backoff{min: 5 * time.Millisecond, max: time.Second},
		wake:     make(chan struct{}, 1),
	}
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Published:   r.published.Load(),
		Messages:    r.messages.Load(),
		Confirmed:   r.confirmed.Load(),
		Returned:    r.returned.Load(),
		Nacked:      r.nacked.Load(),
		Reconnects:  r.reconnects.Load(),
		DoneErrors:  r.doneErrors.Load(),
		ClaimErrors: r.claimErrors.Load(),
	}
}

// Connected reports whether the relay holds an open channel to RabbitMQ.
func (r *Relay) Connected() bool { return r.connected.Load() }

// held is an entry the relay is responsible for.
type held struct {
	stream, id string
	at         time.Time // taken, or last reported to OutboxHolder.Hold
}

// Run relays until ctx is done, reconnecting with backoff. On return every
// entry it held and could not confirm is left in the outbox (not Done), so
// a later Claim hands it out again.
func (r *Relay) Run(ctx context.Context) error {
	if k, ok := r.ob.(seckill.OutboxKeeper); ok {
		kctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			k.Keep(kctx)
		}()
		defer func() { stop(); <-done }()
	}
	if h, ok := r.ob.(seckill.OutboxHolder); ok {
		hctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.holdLoop(hctx, h)
		}()
		defer func() { stop(); <-done }()
	}
	bo := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	connected := false
	for ctx.Err() == nil {
		conn, ch, err := r.connect()
		if err != nil {
			d := bo.next()
			r.log.Warn("relay cannot connect", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				break
			}
			continue
		}
		if connected {
			r.reconnects.Add(1)
		}
		connected = true
		bo.reset()
		r.log.Info("relay connected")
		r.connected.Store(true)
		err = r.session(ctx, conn, ch)
		r.connected.Store(false)
		if ctx.Err() != nil {
			break
		}
		r.log.Warn("relay lost its connection, reconnecting", "err", err)
		if !sleep(ctx, bo.next()) {
			break
		}
	}
	// Forget what was not confirmed: it stays in the outbox.
	r.mu.Lock()
	r.retry = nil
	clear(r.owned)
	r.mu.Unlock()
	return nil
}

func (r *Relay) connect() (*amqp.Connection, *amqp.Channel, error) {
	conn, err := dial(r.cfg.URL, "seckill-relay")
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = r.cfg.Topology.Declare(ch)
	}
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, ch, nil
}

// inflight is one published message and the entries it carries.
type inflight struct {
	entries []seckill.OutboxEntry
	id      string // MessageId, unique per publish
	dc      *amqp.DeferredConfirmation
}

var errChannelClosed = errors.New("amqp channel closed")

// session publishes on one channel until it fails or ctx is done.
func (r *Relay) session(ctx context.Context, conn *amqp.Connection, ch *amqp.Channel) error {
	defer conn.Close()
	// A return is sent by the reader goroutine before it processes the
	// ack of the same message; the library drops a notification it cannot
	// deliver within 5s, so the buffer must hold every possible return.
	returns := ch.NotifyReturn(make(chan amqp.Return, r.cfg.MaxInFlight+64))
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))

	// Whatever was waiting for a retry goes out at once on a new channel.
	r.mu.Lock()
	r.due = time.Time{}
	r.rback.reset()
	r.mu.Unlock()

	pending := make(chan inflight, r.cfg.MaxInFlight+1)
	confirmerDone := make(chan struct{})
	go func() {
		defer close(confirmerDone)
		r.confirmer(ctx, pending, returns)
	}()

	err := r.publisher(ctx, ch, pending, closed)
	close(pending)
	if ctx.Err() != nil {
		// Graceful: give outstanding confirms a moment, then close; the
		// library nacks whatever is left, and it stays in the outbox.
		select {
		case <-confirmerDone:
		case <-time.After(5 * time.Second):
		}
	}
	conn.Close()
	<-confirmerDone
	return err
}

// publisher claims and publishes while there is room.
func (r *Relay) publisher(ctx context.Context, ch *amqp.Channel, pending chan<- inflight, closed <-chan *amqp.Error) error {
	q := r.cfg.Topology.Name()
	idle := backoff{min: time.Millisecond, max: 20 * time.Millisecond}
	claimErr := backoff{min: 50 * time.Millisecond, max: 2 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-closed:
			if !ok || e == nil {
				return errChannelClosed
			}
			return e
		default:
		}

		batch, wait := r.takeRetry()
		if batch == nil && wait == 0 {
			if room := r.room(); room > 0 {
				entries, err := r.ob.Claim(ctx, min(room, r.cfg.Batch))
				// Entries returned with an error were handed to this relay
				// all the same (pending under its name): publish them.
				batch = r.own(entries)
				if err != nil {
					r.claimErrors.Add(1)
					if ctx.Err() != nil && len(batch) == 0 {
						return ctx.Err()
					}
					d := claimErr.next()
					r.log.Warn("outbox claim failed", "err", err, "kept", len(batch), "retry_in", d)
					if len(batch) == 0 {
						wait = d
					}
				} else {
					claimErr.reset()
					if len(batch) == 0 {
						wait = idle.next()
					}
				}
			} else {
				wait = 50 * time.Millisecond // the confirmer wakes us earlier
			}
		}
		if len(batch) == 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case e, ok := <-closed:
				t.Stop()
				if !ok || e == nil {
					return errChannelClosed
				}
				return e
			case <-r.wake:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		idle.reset()
		groups := r.group(batch)
		for i, g := range groups {
			pub, id := r.publishing(g)
			dc, err := ch.PublishWithDeferredConfirm("", q, true, false, pub)
			if err != nil {
				for _, rest := range groups[i:] {
					r.addRetry(rest, false)
				}
				return fmt.Errorf("publishing: %w", err)
			}
			r.published.Add(uint64(len(g)))
			r.messages.Add(1)
			pending <- inflight{entries: g, id: id, dc: dc}
		}
	}
}

// group splits entries into the groups published as one message each: at
// most MaxPerMessage entries per group. An entry whose fields do not make
// an order goes alone, so that it cannot spoil a batch body: the consumer
// dead-letters it by itself.
func (r *Relay) group(entries []seckill.OutboxEntry) [][]seckill.OutboxEntry {
	var out [][]seckill.OutboxEntry
	var cur []seckill.OutboxEntry
	for _, e := range entries {
		if e.Err != nil {
			out = append(out, []seckill.OutboxEntry{e})
			continue
		}
		if len(cur) == r.cfg.MaxPerMessage {
			out = append(out, cur)
			cur = nil
		}
		if cur == nil {
			cur = make([]seckill.OutboxEntry, 0, min(r.cfg.MaxPerMessage, len(entries)))
		}
		cur = append(cur, e)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// publishing builds the message of a group: a batch body
// {"orders":[...]} of the entries' orders, or a single-order body of the
// fields of a lone entry that holds no order. Its MessageId is fresh for
// every publish: returns are matched by it.
func (r *Relay) publishing(g []seckill.OutboxEntry) (amqp.Publishing, string) {
	id := g[0].Order.OrderRef + "/" + strconv.Itoa(len(g)) + "/" + r.idPrefix + "-" + strconv.FormatUint(r.idSeq.Add(1), 36)
	pub := amqp.Publishing{
		DeliveryMode: amqp.Persistent,
		MessageId:    id,
		Timestamp:    time.Now(),
	}
	if len(g) == 1 && g[0].Err != nil {
		pub.ContentType = SingleContentType
		pub.Body = encodeEntry(g[0])
		return pub, id
	}
	pub.ContentType = BatchContentType
	pub.Body = encodeBatch(g)
	return pub, id
}

// encodeBatch encodes the entries' orders into a batch body.
func encodeBatch(g []seckill.OutboxEntry) []byte {
	b := make([]byte, 0, len(batchPrefix)+len(batchSuffix)+len(g)*160)
	b = append(b, batchPrefix...)
	for i, e := range g {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, encodeEntry(e)...)
	}
	return append(b, batchSuffix...)
}

// holdLoop tells h, every HoldRefresh, which entries the relay holds (those
// not reported for half a period).
func (r *Relay) holdLoop(ctx context.Context, h seckill.OutboxHolder) {
	t := time.NewTicker(r.cfg.HoldRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Held for half a period or more: so no held entry goes unreported
		// much longer than one period, even when a tick comes late.
		now := time.Now()
		var es []seckill.OutboxEntry
		r.mu.Lock()
		for _, o := range r.owned {
			if now.Sub(o.at) >= r.cfg.HoldRefresh/2 {
				es = append(es, seckill.OutboxEntry{Stream: o.stream, ID: o.id})
			}
		}
		r.mu.Unlock()
		if len(es) == 0 {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, r.cfg.HoldRefresh)
		err := h.Hold(hctx, es)
		cancel()
		if err != nil {
			r.log.Warn("telling the outbox which entries are held", "err", err, "entries", len(es))
			continue
		}
		r.mu.Lock()
		for _, e := range es {
			if o, ok := r.owned[entryKey(e)]; ok {
				o.at = now
				r.owned[entryKey(e)] = o
			}
		}
		r.mu.Unlock()
	}
}

// room is how many more entries the relay may take on.
func (r *Relay) room() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg.MaxInFlight - len(r.owned)
}

// own records claimed entries as held, dropping any already held.
func (r *Relay) own(entries []seckill.OutboxEntry) []seckill.OutboxEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := entries[:0:0]
	for _, e := range entries {
		k := entryKey(e)
		if _, dup := r.owned[k]; dup {
			continue
		}
		r.owned[k] = held{stream: e.Stream, id: e.ID, at: time.Now()}
		out = append(out, e)
	}
	return out
}

func (r *Relay) release(entries []seckill.OutboxEntry) {
	r.mu.Lock()
	for _, e := range entries {
		delete(r.owned, entryKey(e))
	}
	r.mu.Unlock()
	r.signal()
}

func (r *Relay) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// takeRetry returns the entries to republish now, or how long to wait
// for them (0 when there are none: claim new entries instead).
func (r *Relay) takeRetry() ([]seckill.OutboxEntry, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.retry) == 0 {
		return nil, 0
	}
	if d := time.Until(r.due); d > 0 {
		return nil, d
	}
	b := r.retry
	r.retry = nil
	r.due = time.Time{}
	return b, 0
}

// addRetry queues entries for republishing; with delay, after a backoff
// that grows with each failed round.
func (r *Relay) addRetry(entries []seckill.OutboxEntry, delay bool) {
	if len(entries) == 0 {
		return
	}
	r.mu.Lock()
	if len(r.retry) == 0 {
		if delay {
			r.due = time.Now().Add(r.rback.next())
		} else {
			r.due = time.Time{}
		}
	}
	r.retry = append(r.retry, entries...)
	r.mu.Unlock()
	r.signal()
}

func (r *Relay) resetRetryBackoff() {
	r.mu.Lock()
	r.rback.reset()
	r.mu.Unlock()
}

// confirmer settles published entries in publish order: acked and not
// returned -> Done; returned or nacked -> republished.
func (r *Relay) confirmer(ctx context.Context, pending <-chan inflight, returns <-chan amqp.Return) {
	returned := make(map[string]struct{}) // message ids returned, not yet matched
	drain := func() {
		for returns != nil {
			select {
			case ret, ok := <-returns:
				if !ok {
					returns = nil
					return
				}
				returned[ret.MessageId] = struct{}{}
				r.logReturn(ret)
			default:
				return
			}
		}
	}
	var done, failed []seckill.OutboxEntry
	flush := func() {
		if len(failed) > 0 {
			r.addRetry(failed, true)
			failed = nil
		}
		if len(done) > 0 {
			r.done(ctx, done)
			done = nil
		}
	}
	for {
		var it inflight
		var ok bool
		select {
		case it, ok = <-pending:
		default:
			flush()
			it, ok = <-pending
		}
		if !ok {
			flush()
			return
		}
		select {
		case <-it.dc.Done():
		default:
			flush()
			<-it.dc.Done()
		}
		acked := it.dc.Acked()
		drain()
		_, wasReturned := returned[it.id]
		delete(returned, it.id)
		switch {
		case wasReturned:
			r.returned.Add(uint64(len(it.entries)))
			failed = append(failed, it.entries...)
		case !acked:
			r.nacked.Add(uint64(len(it.entries)))
			failed = append(failed, it.entries...)
		default:
			r.confirmed.Add(uint64(len(it.entries)))
			if len(done) == 0 {
				r.resetRetryBackoff()
			}
			done = append(done, it.entries...)
		}
		if len(done) >= r.cfg.Batch || len(failed) >= r.cfg.Batch {
			flush()
		}
	}
}

// done calls Outbox.Done until it succeeds. Confirmed entries are never
// republished by this relay; if Done keeps failing until shutdown they stay
// in the outbox and are published again later (a duplicate, not a loss).
func (r *Relay) done(ctx context.Context, entries []seckill.OutboxEntry) {
	defer r.release(entries)
	bo := backoff{min: 20 * time.Millisecond, max: 2 * time.Second}
	for attempt := 0; ; attempt++ {
		// Detached: entries confirmed before shutdown are still removed.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := r.ob.Done(dctx, entries)
		cancel()
		if err == nil {
			return
		}
		r.doneErrors.Add(1)
		if ctx.Err() != nil && attempt > 0 {
			r.log.Error("outbox done failed at shutdown; entries will be published again", "err", err, "entries", len(entries))
			return
		}
		d := bo.next()
		r.log.Warn("outbox done failed", "err", err, "entries", len(entries), "retry_in", d)
		sleep(ctx, d) // when ctx is done: one last attempt
	}
}

func (r *Relay) logReturn(ret amqp.Return) {
	now := time.Now().UnixNano()
	last := r.lastReturnLog.Load()
	if now-last < int64(time.Second) || !r.lastReturnLog.CompareAndSwap(last, now) {
		return
	}
	r.log.Warn("message returned unroutable; republishing with backoff",
		"message_id", ret.MessageId, "reply_code", ret.ReplyCode, "reply_text", ret.ReplyText,
		"routing_key", ret.RoutingKey, "returned_total", r.returned.Load()+1)
}
