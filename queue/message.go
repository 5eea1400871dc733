package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"seckill"
)

// Message formats on the order queue. This file is the only place that
// knows them: the outbox hands the relay typed orders, and the consumer
// hands the worker typed orders.
//
// A single-order message (ContentType SingleContentType or empty) has the
// JSON of one order (wireOrder) as its body. A batch message
// (ContentType BatchContentType) carries many orders:
//
//	{"orders":[<OrderMessage JSON>, ...]}
//
// The relay publishes batch messages; the consumer accepts both, and
// republishes an order of a batch that failed to store as a single-order
// message, so that the delivery limit and dead-lettering apply per order.
const (
	SingleContentType = "application/json"
	BatchContentType  = "application/vnd.seckill.orders+json"
)

const (
	batchPrefix = `{"orders":[`
	batchSuffix = `]}`
)

// wireOrder is an order on the wire: the JSON of seckill.OrderMessage.
type wireOrder struct {
	OrderRef   string    `json:"order_ref"`
	UserID     int64     `json:"user_id"`
	ItemID     int64     `json:"item_id"`
	RequestID  string    `json:"request_id,omitempty"`
	ReservedAt time.Time `json:"reserved_at"`
}

func (w wireOrder) order() seckill.OrderMessage { return seckill.OrderMessage(w) }

// EncodeOrder returns the single-order body of m (also one element of a
// batch body).
func EncodeOrder(m seckill.OrderMessage) []byte {
	b, _ := json.Marshal(wireOrder(m)) // cannot fail: strings, ints and a time
	return b
}

// encodeEntry returns the JSON of an outbox entry's order, or, for an
// entry whose fields do not make an order, of its fields as they are (the
// consumer dead-letters it, where it is counted).
func encodeEntry(e seckill.OutboxEntry) []byte {
	if e.Err != nil {
		b, _ := json.Marshal(e.Fields)
		return b
	}
	return EncodeOrder(e.Order)
}

// isBatch reports whether d carries a batch body.
func isBatch(d amqp.Delivery) bool { return d.ContentType == BatchContentType }

// decodeSingle decodes and validates a single-order body.
func decodeSingle(body []byte) (seckill.OrderMessage, error) {
	var w wireOrder
	err := json.Unmarshal(body, &w)
	m := w.order()
	if err != nil {
		return m, fmt.Errorf("decoding order message: %w", err)
	}
	if err := m.Validate(); err != nil {
		return m, err
	}
	return m, nil
}

// badOrder is an element of a batch body that is not a valid order.
type badOrder struct {
	raw json.RawMessage
	m   seckill.OrderMessage // what could be decoded of it
	err error
}

var errEmptyBatch = errors.New("batch message holds no orders")

// decodeBatch decodes a batch body into its valid orders and the elements
// that are not valid orders. It fails when the body itself does not
// decode, or when it holds no valid order at all.
func decodeBatch(body []byte) ([]seckill.OrderMessage, []badOrder, error) {
	// Fast path: one pass over a body of valid orders.
	var fast struct {
		Orders []wireOrder `json:"orders"`
	}
	if err := json.Unmarshal(body, &fast); err == nil && len(fast.Orders) > 0 {
		msgs := make([]seckill.OrderMessage, len(fast.Orders))
		ok := true
		for i, w := range fast.Orders {
			msgs[i] = w.order()
			if msgs[i].Validate() != nil {
				ok = false
				break
			}
		}
		if ok {
			return msgs, nil, nil
		}
	}
	// Slow path: order by order, to tell the valid ones from the others.
	var env struct {
		Orders []json.RawMessage `json:"orders"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, nil, fmt.Errorf("decoding batch message: %w", err)
	}
	if len(env.Orders) == 0 {
		return nil, nil, errEmptyBatch
	}
	msgs := make([]seckill.OrderMessage, 0, len(env.Orders))
	var bad []badOrder
	for i, raw := range env.Orders {
		m, err := decodeSingle(raw)
		if err != nil {
			bad = append(bad, badOrder{raw: raw, m: m, err: fmt.Errorf("order %d of batch: %w", i, err)})
			continue
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		return nil, bad, fmt.Errorf("batch message holds no valid order (%d invalid; first: %w)", len(bad), bad[0].err)
	}
	return msgs, bad, nil
}
