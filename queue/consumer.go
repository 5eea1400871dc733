package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"seckill"
)

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	URL           string
	Topology      Topology
	Prefetch      int           // messages unacked at most; default 500
	BatchSize     int           // orders per Store call at most (a message is never split; one larger message goes alone); default 1024
	FlushInterval time.Duration // default 10ms
	Logger        *slog.Logger
}

// ConsumerStats are the consumer's counters since NewConsumer.
//
// Stored, Nacked, Republished and Dead count orders; Malformed counts
// messages.
type ConsumerStats struct {
	Stored      uint64 // acked after Store returned nil for them (redeliveries included)
	Nacked      uint64 // in messages nacked with requeue after Store errors
	Republished uint64 // orders of a batch that failed, republished as single-order messages
	Dead        uint64 // dead-lettered orders handed to Failed (malformed messages included, one each)
	Malformed   uint64 // bodies that did not decode or validate, rejected from Queue (dead-lettered)
	FailErrors  uint64 // Failed errors (retried, or the dead message requeued)
}

// Consumer consumes the order queue in batches and the dead-letter queue.
type Consumer struct {
	cfg ConsumerConfig
	h   seckill.OrderHandler
	log *slog.Logger

	stored, nacked, republished, dead, malformed, failErrors, reconnects atomic.Uint64
}

// NewConsumer returns a consumer handing cfg.Topology's messages to h. An
// order h.Store accepts (nil) is acked; one it refuses is nacked with
// requeue, and the broker dead-letters it after the delivery limit. h.Failed
// records a dead-lettered order: nil acks it, an error requeues it after a
// pause.
func NewConsumer(cfg ConsumerConfig, h seckill.OrderHandler) *Consumer {
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 500
	}
	if cfg.BatchSize <= 0 {
		// Four full batch messages of the relay (MaxPerMessage 256): with
		// 500, two did not fit and every Store call held one message.
		cfg.BatchSize = 1024
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 10 * time.Millisecond
	}
	return &Consumer{
		cfg: cfg,
		h:   h,
		log: loggerOr(cfg.Logger).With("component", "consumer", "queue", cfg.Topology.Name()),
	}
}

// Stats returns the consumer's counters.
func (c *Consumer) Stats() ConsumerStats {
	return ConsumerStats{
		Stored:      c.stored.Load(),
		Nacked:      c.nacked.Load(),
		Republished: c.republished.Load(),
		Dead:        c.dead.Load(),
		Malformed:   c.malformed.Load(),
		FailErrors:  c.failErrors.Load(),
	}
}

// Run consumes until ctx is done, reconnecting with backoff. On
// cancellation it finishes the batch in hand (Store and acks), then returns;
// unacked prefetched messages go back to the queue when the channel closes.
func (c *Consumer) Run(ctx context.Context) error {
	bo := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	for ctx.Err() == nil {
		conn, err := dial(c.cfg.URL, "seckill-worker")
		if err != nil {
			d := bo.next()
			c.log.Warn("consumer cannot connect", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				break
			}
			continue
		}
		err = c.session(ctx, conn)
		conn.Close()
		if ctx.Err() != nil {
			break
		}
		d := bo.next()
		c.log.Warn("consumer lost its connection, reconnecting", "err", err, "retry_in", d)
		if !sleep(ctx, d) {
			break
		}
		c.reconnects.Add(1)
	}
	return nil
}

func (c *Consumer) session(ctx context.Context, conn *amqp.Connection) error {
	t := c.cfg.Topology
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := t.Declare(ch); err != nil {
		return err
	}
	if err := ch.Qos(c.cfg.Prefetch, 0, false); err != nil {
		return err
	}
	deliveries, err := ch.Consume(t.Name(), "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consuming %s: %w", t.Name(), err)
	}
	dch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := dch.Qos(50, 0, false); err != nil {
		return err
	}
	dead, err := dch.Consume(t.Dead(), "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consuming %s: %w", t.Dead(), err)
	}
	c.log.Info("consumer connected")

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.consumeDead(sctx, dead)
		cancel() // a lost dead-letter channel ends the session too
	}()
	err = c.consumeOrders(sctx, conn, ch, deliveries)
	cancel()
	wg.Wait()
	return err
}

// delivery is one consumed message and the orders it carries.
type delivery struct {
	tag   uint64
	id    string // MessageId
	batch bool   // a batch body (else a single order)
	msgs  []seckill.OrderMessage
	bad   []badOrder // elements of a batch body that are not valid orders
}

func (c *Consumer) consumeOrders(ctx context.Context, conn *amqp.Connection, ch *amqp.Channel, deliveries <-chan amqp.Delivery) error {
	var (
		batch  []delivery
		orders int // orders in batch
		timer  = time.NewTimer(time.Hour)
		timerC <-chan time.Time
		rp     = &republisher{conn: conn, queue: c.cfg.Topology.Name()}
	)
	timer.Stop()
	defer timer.Stop()
	defer rp.close()
	flush := func() error {
		timer.Stop()
		timerC = nil
		if len(batch) == 0 {
			return nil
		}
		err := c.storeBatch(ctx, ch, rp, batch)
		clear(batch)
		batch, orders = batch[:0], 0
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return flush()
		case <-timerC:
			if err := flush(); err != nil {
				return err
			}
		case d, ok := <-deliveries:
			if !ok {
				_ = flush() // acks will fail; the broker redelivers
				return errChannelClosed
			}
			it, err := decodeDelivery(d)
			if err != nil {
				c.malformed.Add(1)
				c.log.Warn("rejecting malformed order message", "err", err, "message_id", d.MessageId, "delivery_tag", d.DeliveryTag)
				if err := d.Nack(false, false); err != nil {
					return err
				}
				continue
			}
			// A message is never split between two Store calls: flush
			// first when its orders would not fit.
			if len(batch) > 0 && orders+len(it.msgs) > c.cfg.BatchSize {
				if err := flush(); err != nil {
					return err
				}
			}
			batch = append(batch, it)
			orders += len(it.msgs)
			if len(batch) == 1 {
				timer.Reset(c.cfg.FlushInterval)
				timerC = timer.C
			}
			if orders >= c.cfg.BatchSize {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
}

// decodeDelivery decodes a single-order or a batch message.
func decodeDelivery(d amqp.Delivery) (delivery, error) {
	it := delivery{tag: d.DeliveryTag, id: d.MessageId, batch: isBatch(d)}
	if it.batch {
		msgs, bad, err := decodeBatch(d.Body)
		if err != nil {
			return it, err
		}
		it.msgs, it.bad = msgs, bad
		return it, nil
	}
	m, err := decodeSingle(d.Body)
	if err != nil {
		return it, err
	}
	it.msgs = []seckill.OrderMessage{m}
	return it, nil
}

// storeBatch stores the orders of several messages in one Store call and
// settles each message. When every order was stored one multiple ack
// covers them all (every lower tag on this channel is in the batch or
// already settled). Otherwise:
//
//   - a single-order message is acked or nacked with requeue;
//   - a batch message whose orders all failed is nacked with requeue (the
//     broker counts its deliveries and dead-letters it after the limit);
//   - a batch message with some failed orders (or elements that are not
//     valid orders): each of those is republished as a single-order
//     message with confirms, then the batch is acked; if that republish
//     fails the batch is nacked with requeue (its orders are idempotent).
func (c *Consumer) storeBatch(ctx context.Context, ch *amqp.Channel, rp *republisher, batch []delivery) error {
	n := 0
	for _, d := range batch {
		n += len(d.msgs)
	}
	msgs := make([]seckill.OrderMessage, 0, n)
	for _, d := range batch {
		msgs = append(msgs, d.msgs...)
	}
	// The batch in hand is finished even when ctx is cancelled.
	errs := c.h.Store(context.WithoutCancel(ctx), msgs)
	if len(errs) != len(msgs) {
		// A broken handler: treat every message as failed.
		c.log.Error("handler returned the wrong number of results", "want", len(msgs), "got", len(errs))
		err := fmt.Errorf("handler returned %d results for %d messages", len(errs), len(msgs))
		errs = make([]error, len(msgs))
		for i := range errs {
			errs[i] = err
		}
	}
	clean := true
	for _, err := range errs {
		if err != nil {
			clean = false
			break
		}
	}
	for _, d := range batch {
		if len(d.bad) > 0 {
			clean = false
		}
	}
	if clean {
		if err := ch.Ack(batch[len(batch)-1].tag, true); err != nil {
			return fmt.Errorf("acking: %w", err)
		}
		c.stored.Add(uint64(len(msgs)))
		return nil
	}
	off := 0
	for _, d := range batch {
		derrs := errs[off : off+len(d.msgs)]
		off += len(d.msgs)
		failed := 0
		for _, err := range derrs {
			if err != nil {
				failed++
			}
		}
		if failed == 0 && len(d.bad) == 0 {
			if err := ch.Ack(d.tag, false); err != nil {
				return fmt.Errorf("acking: %w", err)
			}
			c.stored.Add(uint64(len(d.msgs)))
			continue
		}
		if !d.batch || failed == len(d.msgs) {
			for i, err := range derrs {
				c.log.Warn("storing order failed; requeueing", "order_ref", d.msgs[i].OrderRef, "message_id", d.id, "err", err)
			}
			if err := ch.Nack(d.tag, false, true); err != nil {
				return fmt.Errorf("nacking: %w", err)
			}
			c.nacked.Add(uint64(len(d.msgs)))
			continue
		}
		// Some orders of a batch failed: each goes on as a message of its
		// own, with its own delivery count.
		pubs := make([]amqp.Publishing, 0, failed+len(d.bad))
		for i, err := range derrs {
			if err == nil {
				continue
			}
			body := EncodeOrder(d.msgs[i])
			c.log.Warn("storing order of a batch failed; republishing it alone", "order_ref", d.msgs[i].OrderRef, "message_id", d.id, "err", err)
			pubs = append(pubs, singlePublishing(d.msgs[i].OrderRef, body, d.id))
		}
		for i, b := range d.bad {
			ref := b.m.OrderRef
			if ref == "" {
				ref = fmt.Sprintf("%s#bad%d", d.id, i)
			}
			c.log.Warn("invalid order in a batch; republishing it alone", "order_ref", ref, "message_id", d.id, "err", b.err)
			pubs = append(pubs, singlePublishing(ref, b.raw, d.id))
		}
		if err := rp.publish(ctx, pubs); err != nil {
			c.log.Warn("republishing failed orders of a batch failed; requeueing the batch", "message_id", d.id, "orders", len(pubs), "err", err)
			if err := ch.Nack(d.tag, false, true); err != nil {
				return fmt.Errorf("nacking: %w", err)
			}
			c.nacked.Add(uint64(len(d.msgs)))
			continue
		}
		c.republished.Add(uint64(len(pubs)))
		if err := ch.Ack(d.tag, false); err != nil {
			return fmt.Errorf("acking: %w", err)
		}
		c.stored.Add(uint64(len(d.msgs) - failed))
	}
	return nil
}

func singlePublishing(ref string, body []byte, from string) amqp.Publishing {
	return amqp.Publishing{
		DeliveryMode: amqp.Persistent,
		ContentType:  SingleContentType,
		MessageId:    ref,
		Timestamp:    time.Now(),
		Headers:      amqp.Table{"x-seckill-from-batch": from},
		Body:         body,
	}
}

// republisher publishes single-order messages with confirms and mandatory
// routing on a channel of its own (opened on first use).
type republisher struct {
	conn    *amqp.Connection
	queue   string
	ch      *amqp.Channel
	returns chan amqp.Return
}

// republishChunk bounds the publishes awaited at once: returns must fit in
// the notification buffer (the library blocks its reader on a full one).
const republishChunk = 256

// publish publishes pubs and waits until the broker confirmed every one
// and returned none. Any failure reports an error; some may have been
// published (a duplicate later, which consumers absorb).
func (p *republisher) publish(ctx context.Context, pubs []amqp.Publishing) error {
	for len(pubs) > 0 {
		k := min(len(pubs), republishChunk)
		if err := p.publishChunk(ctx, pubs[:k]); err != nil {
			p.close() // late confirms and returns must not be taken for the next ones
			return err
		}
		pubs = pubs[k:]
	}
	return nil
}

func (p *republisher) publishChunk(ctx context.Context, pubs []amqp.Publishing) error {
	if p.ch == nil || p.ch.IsClosed() {
		ch, err := p.conn.Channel()
		if err != nil {
			return fmt.Errorf("opening republish channel: %w", err)
		}
		if err := ch.Confirm(false); err != nil {
			ch.Close()
			return fmt.Errorf("confirm mode: %w", err)
		}
		p.ch = ch
		p.returns = ch.NotifyReturn(make(chan amqp.Return, republishChunk))
	}
	// Detached from ctx: the batch in hand is settled even at shutdown.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	dcs := make([]*amqp.DeferredConfirmation, 0, len(pubs))
	for _, pub := range pubs {
		dc, err := p.ch.PublishWithDeferredConfirm("", p.queue, true, false, pub)
		if err != nil {
			return fmt.Errorf("republishing %s: %w", pub.MessageId, err)
		}
		dcs = append(dcs, dc)
	}
	for i, dc := range dcs {
		ok, err := dc.WaitContext(wctx)
		if err != nil {
			return fmt.Errorf("waiting for the confirm of %s: %w", pubs[i].MessageId, err)
		}
		if !ok {
			return fmt.Errorf("republished %s nacked", pubs[i].MessageId)
		}
	}
	// A return arrives before the ack of its message.
	select {
	case ret := <-p.returns:
		return fmt.Errorf("republished %s returned: %d %s", ret.MessageId, ret.ReplyCode, ret.ReplyText)
	default:
	}
	return nil
}

func (p *republisher) close() {
	if p.ch != nil {
		_ = p.ch.Close()
		p.ch, p.returns = nil, nil
	}
}

// deadOrder is one order of a dead-lettered message, for OrderHandler.Failed.
type deadOrder struct {
	m      seckill.OrderMessage
	reason string
}

// deadOrders returns what a dead-lettered message holds: one order for a
// single-order message, each order of a batch; a body that does not
// decode is one malformed entry named by the MessageId.
func (c *Consumer) deadOrders(d amqp.Delivery) []deadOrder {
	reason := deathReason(d)
	malformed := func(m seckill.OrderMessage, err error) deadOrder {
		if m.OrderRef == "" {
			m.OrderRef = d.MessageId
		}
		c.log.Warn("malformed dead-lettered message", "err", err, "message_id", d.MessageId, "body_len", len(d.Body))
		return deadOrder{m: m, reason: "malformed: " + err.Error()}
	}
	if !isBatch(d) {
		m, err := decodeSingle(d.Body)
		if err != nil {
			return []deadOrder{malformed(m, err)}
		}
		return []deadOrder{{m: m, reason: reason}}
	}
	msgs, bad, err := decodeBatch(d.Body)
	if err != nil && len(bad) == 0 {
		return []deadOrder{malformed(seckill.OrderMessage{}, err)}
	}
	out := make([]deadOrder, 0, len(msgs)+len(bad))
	for _, m := range msgs {
		out = append(out, deadOrder{m: m, reason: reason})
	}
	for i, b := range bad {
		m := b.m
		if m.OrderRef == "" {
			m.OrderRef = fmt.Sprintf("%s#bad%d", d.MessageId, i)
		}
		out = append(out, malformed(m, b.err))
	}
	return out
}

// consumeDead hands dead-lettered messages to OrderHandler.Failed, one at a
// time; a batch message order by order, retrying an order whose Failed
// fails (an order done is not done again unless the consumer stops first).
func (c *Consumer) consumeDead(ctx context.Context, dead <-chan amqp.Delivery) {
	bo := backoff{min: 200 * time.Millisecond, max: 10 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-dead:
			if !ok {
				return
			}
			orders := c.deadOrders(d)
			// Several orders: retry the one that fails in place, so that
			// the ones before it are not recorded twice. One order: requeue
			// after a pause, as ever.
			inPlace := len(orders) > 1
			settled := true
			for i := 0; i < len(orders); {
				o := orders[i]
				if ferr := c.h.Failed(context.WithoutCancel(ctx), o.m, o.reason); ferr != nil {
					c.failErrors.Add(1)
					wait := bo.next()
					c.log.Error("recording failed order failed; retrying", "order_ref", o.m.OrderRef, "reason", o.reason, "err", ferr, "retry_in", wait)
					if !sleep(ctx, wait) || !inPlace {
						settled = false
						break
					}
					continue
				}
				bo.reset()
				c.dead.Add(1)
				c.log.Info("order dead-lettered", "order_ref", o.m.OrderRef, "reason", o.reason)
				i++
			}
			if !settled {
				if err := d.Nack(false, true); err != nil {
					return
				}
				continue
			}
			if err := d.Ack(false); err != nil {
				return
			}
		}
	}
}

// deathReason is the reason the broker gave when it dead-lettered d:
// "delivery_limit", "rejected", "expired" or "maxlen".
func deathReason(d amqp.Delivery) string {
	if s, ok := d.Headers["x-first-death-reason"].(string); ok && s != "" {
		return s
	}
	if deaths, ok := d.Headers["x-death"].([]any); ok && len(deaths) > 0 {
		if t, ok := deaths[0].(amqp.Table); ok {
			if s, ok := t["reason"].(string); ok {
				return s
			}
		}
	}
	return "unknown"
}
