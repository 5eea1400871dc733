package queue

import (
	"errors"
	"testing"
	"time"

	"seckill"
)

// TestWireFormat pins the JSON of an order on RabbitMQ: messages already in
// a queue (and workers of the previous release) must keep decoding.
func TestWireFormat(t *testing.T) {
	at := time.Date(2026, 11, 30, 16, 0, 0, 123e6, time.UTC)
	m := seckill.OrderMessage{OrderRef: "oref", UserID: 7, ItemID: 42, RequestID: "req-1", ReservedAt: at}
	const want = `{"order_ref":"oref","user_id":7,"item_id":42,"request_id":"req-1","reserved_at":"2026-11-30T16:00:00.123Z"}`
	if got := string(EncodeOrder(m)); got != want {
		t.Fatalf("EncodeOrder = %s\nwant %s", got, want)
	}
	noReq := m
	noReq.RequestID = ""
	if got := string(EncodeOrder(noReq)); got != `{"order_ref":"oref","user_id":7,"item_id":42,"reserved_at":"2026-11-30T16:00:00.123Z"}` {
		t.Fatalf("EncodeOrder without request id = %s", got)
	}
	got, err := decodeSingle([]byte(want))
	if err != nil || got != m {
		t.Fatalf("decodeSingle = %+v, %v; want %+v", got, err, m)
	}
	body := encodeBatch([]seckill.OutboxEntry{{Order: m}, {Order: noReq}})
	if string(body) != `{"orders":[`+want+`,`+string(EncodeOrder(noReq))+`]}` {
		t.Fatalf("encodeBatch = %s", body)
	}
	msgs, bad, err := decodeBatch(body)
	if err != nil || len(bad) != 0 || len(msgs) != 2 || msgs[0] != m || msgs[1] != noReq {
		t.Fatalf("decodeBatch = %+v, %+v, %v", msgs, bad, err)
	}
	// An outbox entry that holds no order travels as its fields.
	e := seckill.OutboxEntry{Err: errors.New("bad"), Fields: map[string]string{"user": "x", "ref": "r"}}
	if got := string(encodeEntry(e)); got != `{"ref":"r","user":"x"}` {
		t.Fatalf("encodeEntry(malformed) = %s", got)
	}
}
