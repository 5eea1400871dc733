package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"seckill"
)

// Handler stores order messages; it must be idempotent per order_ref.
type Handler interface {
	// Store stores a batch; it returns one error per message (nil = stored
	// or already stored: ack; non-nil = nack with requeue, the broker
	// counts deliveries and dead-letters after DeliveryLimit).
	Store(ctx context.Context, msgs []seckill.OrderMessage) []error
	// Failed records a dead-lettered message (called from the dead-letter
	// queue consumer); nil -> ack, an error -> requeue after a pause.
	Failed(ctx context.Context, m seckill.OrderMessage, reason string) error
}

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	URL           string
	Topology      Topology
	Prefetch      int           // default 500
	BatchSize     int           // default 500
	FlushInterval time.Duration // default 10ms
	Logger        *slog.Logger
}

// ConsumerStats are the consumer's counters since NewConsumer.
type ConsumerStats struct {
	Stored     uint64 // acked after Store returned nil for them (redeliveries included)
	Nacked     uint64 // Store errors: nacked with requeue
	Dead       uint64 // dead-lettered messages handed to Failed and acked (malformed ones included)
	Malformed  uint64 // bodies that did not decode or validate, rejected from Queue (dead-lettered)
	FailErrors uint64 // Failed errors (the dead message is requeued)
}

// Consumer consumes the order queue in batches and the dead-letter queue.
type Consumer struct {
	cfg ConsumerConfig
	h   Handler
	log *slog.Logger

	stored, nacked, dead, malformed, failErrors, reconnects atomic.Uint64
}

// NewConsumer returns a consumer handing cfg.Topology's messages to h.
func NewConsumer(cfg ConsumerConfig, h Handler) *Consumer {
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 500
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
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
		Stored:     c.stored.Load(),
		Nacked:     c.nacked.Load(),
		Dead:       c.dead.Load(),
		Malformed:  c.malformed.Load(),
		FailErrors: c.failErrors.Load(),
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
	err = c.consumeOrders(sctx, ch, deliveries)
	cancel()
	wg.Wait()
	return err
}

type batchItem struct {
	tag uint64
	m   seckill.OrderMessage
}

func (c *Consumer) consumeOrders(ctx context.Context, ch *amqp.Channel, deliveries <-chan amqp.Delivery) error {
	var (
		batch  []batchItem
		timer  = time.NewTimer(time.Hour)
		timerC <-chan time.Time
	)
	timer.Stop()
	defer timer.Stop()
	flush := func() error {
		timerC = nil
		if len(batch) == 0 {
			return nil
		}
		err := c.storeBatch(ctx, ch, batch)
		batch = batch[:0]
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
			m, err := decode(d)
			if err != nil {
				c.malformed.Add(1)
				c.log.Warn("rejecting malformed order message", "err", err, "message_id", d.MessageId, "delivery_tag", d.DeliveryTag)
				if err := d.Nack(false, false); err != nil {
					return err
				}
				continue
			}
			batch = append(batch, batchItem{tag: d.DeliveryTag, m: m})
			if len(batch) == 1 {
				timer.Reset(c.cfg.FlushInterval)
				timerC = timer.C
			}
			if len(batch) >= c.cfg.BatchSize {
				timer.Stop()
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
}

// storeBatch stores a batch and settles it: when every message was stored
// one multiple ack covers the batch (every lower tag on this channel is in
// the batch or already settled); otherwise each is acked or nacked.
func (c *Consumer) storeBatch(ctx context.Context, ch *amqp.Channel, batch []batchItem) error {
	msgs := make([]seckill.OrderMessage, len(batch))
	for i, b := range batch {
		msgs[i] = b.m
	}
	// The batch in hand is finished even when ctx is cancelled.
	errs := c.h.Store(context.WithoutCancel(ctx), msgs)
	if len(errs) != len(msgs) {
		// A broken handler: treat every message as failed.
		c.log.Error("handler returned the wrong number of results", "want", len(msgs), "got", len(errs))
		errs = make([]error, len(msgs))
		for i := range errs {
			errs[i] = fmt.Errorf("handler returned %d results for %d messages", len(errs), len(msgs))
		}
	}
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed == 0 {
		if err := ch.Ack(batch[len(batch)-1].tag, true); err != nil {
			return fmt.Errorf("acking: %w", err)
		}
		c.stored.Add(uint64(len(batch)))
		return nil
	}
	for i, b := range batch {
		if errs[i] == nil {
			if err := ch.Ack(b.tag, false); err != nil {
				return fmt.Errorf("acking: %w", err)
			}
			c.stored.Add(1)
			continue
		}
		c.log.Warn("storing order failed; requeueing", "order_ref", b.m.OrderRef, "err", errs[i])
		if err := ch.Nack(b.tag, false, true); err != nil {
			return fmt.Errorf("nacking: %w", err)
		}
		c.nacked.Add(1)
	}
	return nil
}

func decode(d amqp.Delivery) (seckill.OrderMessage, error) {
	var m seckill.OrderMessage
	if err := json.Unmarshal(d.Body, &m); err != nil {
		return m, fmt.Errorf("decoding order message: %w", err)
	}
	if err := m.Validate(); err != nil {
		return m, err
	}
	return m, nil
}

// consumeDead hands dead-lettered messages to Handler.Failed, one at a time.
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
			m, err := decode(d)
			reason := deathReason(d)
			if err != nil {
				reason = "malformed: " + err.Error()
				if m.OrderRef == "" {
					m.OrderRef = d.MessageId
				}
				c.log.Warn("malformed dead-lettered message", "err", err, "message_id", d.MessageId, "body_len", len(d.Body))
			}
			if ferr := c.h.Failed(context.WithoutCancel(ctx), m, reason); ferr != nil {
				c.failErrors.Add(1)
				wait := bo.next()
				c.log.Error("recording failed order failed; requeueing", "order_ref", m.OrderRef, "reason", reason, "err", ferr, "retry_in", wait)
				sleep(ctx, wait)
				if err := d.Nack(false, true); err != nil {
					return
				}
				continue
			}
			bo.reset()
			c.dead.Add(1)
			c.log.Info("order dead-lettered", "order_ref", m.OrderRef, "reason", reason)
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
