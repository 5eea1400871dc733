// Package queue carries order messages from the outbox to the worker
// through RabbitMQ: a relay that publishes with confirms and mandatory
// routing, a batching consumer with manual acks, and the topology both use.
//
// Delivery is at least once end to end: the relay removes an outbox entry
// only after the broker confirmed it AND did not return it; the consumer
// acks only after the handler stored the batch. Consumers must therefore be
// idempotent per order_ref.
package queue

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	ibackoff "seckill/internal/backoff"
)

// DefaultQueue is the name of the order queue when Topology.Queue is empty.
const DefaultQueue = "seckill.orders"

// DefaultDeliveryLimit is the x-delivery-limit when Topology.DeliveryLimit is 0.
const DefaultDeliveryLimit = 5

// heartbeat is the AMQP heartbeat interval of every connection made here.
const heartbeat = 10 * time.Second

// Topology names the queues and exchange of the order pipeline.
//
//	Queue            durable quorum queue, x-delivery-limit, dead-lettered
//	                 at least once to Queue+".dlx", x-overflow=reject-publish
//	Queue+".dlx"     durable direct exchange
//	Queue+".dead"    durable queue bound to Queue+".dlx" with key Queue
type Topology struct {
	Queue         string
	DeliveryLimit int
}

// Name returns the order queue's name.
func (t Topology) Name() string {
	if t.Queue == "" {
		return DefaultQueue
	}
	return t.Queue
}

// DLX returns the dead-letter exchange's name.
func (t Topology) DLX() string { return t.Name() + ".dlx" }

// Dead returns the dead-letter queue's name.
func (t Topology) Dead() string { return t.Name() + ".dead" }

// Limit returns the delivery limit in effect.
func (t Topology) Limit() int {
	if t.DeliveryLimit <= 0 {
		return DefaultDeliveryLimit
	}
	return t.DeliveryLimit
}

// QueueArgs returns the arguments the order queue is declared with.
func (t Topology) QueueArgs() amqp.Table {
	return amqp.Table{
		"x-queue-type":           "quorum",
		"x-delivery-limit":       int64(t.Limit()),
		"x-dead-letter-exchange": t.DLX(),
		"x-dead-letter-strategy": "at-least-once",
		"x-overflow":             "reject-publish",
	}
}

// Declare declares the dead-letter exchange and queue first (so that
// at-least-once dead-lettering always has a target), then the order queue.
// Declaring an existing queue with other arguments fails with
// PRECONDITION_FAILED and closes ch.
func (t Topology) Declare(ch *amqp.Channel) error {
	if err := ch.ExchangeDeclare(t.DLX(), amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declaring exchange %s: %w", t.DLX(), err)
	}
	if _, err := ch.QueueDeclare(t.Dead(), true, false, false, false, nil); err != nil {
		return fmt.Errorf("declaring queue %s: %w", t.Dead(), err)
	}
	if err := ch.QueueBind(t.Dead(), t.Name(), t.DLX(), false, nil); err != nil {
		return fmt.Errorf("binding %s to %s: %w", t.Dead(), t.DLX(), err)
	}
	if _, err := ch.QueueDeclare(t.Name(), true, false, false, false, t.QueueArgs()); err != nil {
		return fmt.Errorf("declaring queue %s: %w", t.Name(), err)
	}
	return nil
}

// Delete removes the queues and the exchange of t (for tests and tools).
func (t Topology) Delete(ch *amqp.Channel) error {
	if _, err := ch.QueueDelete(t.Name(), false, false, false); err != nil {
		return err
	}
	if _, err := ch.QueueDelete(t.Dead(), false, false, false); err != nil {
		return err
	}
	return ch.ExchangeDelete(t.DLX(), false, false)
}

// dial opens a connection with heartbeats and a bounded handshake.
func dial(url, name string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(name)
	return amqp.DialConfig(url, amqp.Config{
		Heartbeat:  heartbeat,
		Locale:     "en_US",
		Dial:       amqp.DefaultDial(10 * time.Second),
		Properties: props,
	})
}

// QueueDepth reports the number of messages ready in t's order queue and
// its consumer count, using a passive declare (the queue must exist).
func QueueDepth(ctx context.Context, url string, t Topology) (ready int, consumers int, err error) {
	type result struct {
		q   amqp.Queue
		err error
	}
	res := make(chan result, 1)
	go func() {
		conn, err := dial(url, "seckill-queue-depth")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			res <- result{err: err}
			return
		}
		q, err := ch.QueueDeclarePassive(t.Name(), true, false, false, false, nil)
		res <- result{q: q, err: err}
	}()
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case r := <-res:
		if r.err != nil {
			return 0, 0, fmt.Errorf("inspecting queue %s: %w", t.Name(), r.err)
		}
		return r.q.Messages, r.q.Consumers, nil
	}
}

// backoff is the shared capped exponential backoff (internal/backoff)
// with ±20% jitter, between min and max.
type backoff struct {
	min, max time.Duration
	b        ibackoff.Backoff
}

func (b *backoff) next() time.Duration {
	b.b.Min, b.b.Max, b.b.Jitter = b.min, b.max, 0.2
	return b.b.Next()
}

func (b *backoff) reset() { b.b.Reset() }

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func loggerOr(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}
