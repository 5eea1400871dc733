package queue

import (
	"encoding/json"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"seckill"
)

// Message formats on the order queue.
//
// A single-order message (ContentType SingleContentType or empty) has the
// JSON of one seckill.OrderMessage as its body. A batch message
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

// isBatch reports whether d carries a batch body.
func isBatch(d amqp.Delivery) bool { return d.ContentType == BatchContentType }

// decodeSingle decodes and validates a single-order body.
func decodeSingle(body []byte) (seckill.OrderMessage, error) {
	var m seckill.OrderMessage
	if err := json.Unmarshal(body, &m); err != nil {
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
		Orders []seckill.OrderMessage `json:"orders"`
	}
	if err := json.Unmarshal(body, &fast); err == nil && len(fast.Orders) > 0 {
		ok := true
		for _, m := range fast.Orders {
			if m.Validate() != nil {
				ok = false
				break
			}
		}
		if ok {
			return fast.Orders, nil, nil
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
