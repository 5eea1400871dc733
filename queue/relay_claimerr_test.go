package queue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"seckill"
	"seckill/internal/testenv"
)

// erringOutbox hands out entries and reports an error with every
// non-empty claim, as a pipelined read does when one stream fails and the
// others answer: the entries are pending under the relay's name all the same.
type erringOutbox struct {
	*fakeOutbox
	errs atomic.Int64
}

func (o *erringOutbox) Claim(ctx context.Context, max int) ([]seckill.OutboxEntry, error) {
	es, _ := o.fakeOutbox.Claim(ctx, max)
	if len(es) == 0 {
		return nil, nil
	}
	o.errs.Add(1)
	return es, errors.New("injected: one stream failed")
}

// Entries Claim returns together with an error are published, confirmed
// and stored exactly once (real RabbitMQ).
func TestRelayPublishesEntriesClaimedWithError(t *testing.T) {
	url := testenv.AMQPURL(t)
	topo := topology(t, url, 0)
	const n = 3000
	ob := &erringOutbox{fakeOutbox: newFakeOutbox(n, "e")}
	ob.perClaim = 100 // many claims, each with an error
	relay := NewRelay(RelayConfig{URL: url, Topology: topo, Logger: testLogger(t)}, ob)
	h := newFakeHandler()
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t)}, h)
	stopRelay := start(t, relay.Run)
	stopCons := start(t, cons.Run)
	testenv.Eventually(t, 60*time.Second, "every entry confirmed", func() bool { return ob.doneN.Load() >= n })
	testenv.Eventually(t, 60*time.Second, "every order stored", func() bool { return h.storedN.Load() >= n })
	stopRelay()
	stopCons()
	ob.check(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range ob.entries {
		if h.stored[e.Order.OrderRef] != 1 {
			t.Fatalf("ref %s stored %d times", e.Order.OrderRef, h.stored[e.Order.OrderRef])
		}
	}
	rs := relay.Stats()
	if ob.errs.Load() < n/100 || rs.ClaimErrors != uint64(ob.errs.Load()) || rs.Confirmed != n || rs.Published != n {
		t.Fatalf("claims with error %d, relay stats %+v", ob.errs.Load(), rs)
	}
}
