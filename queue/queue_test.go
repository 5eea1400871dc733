package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"seckill"
	"seckill/internal/testenv"
)

// ---- fakes ----

// fakeOutbox hands out each entry once (like XREADGROUP >) and records Done.
type fakeOutbox struct {
	mu      sync.Mutex
	entries []seckill.OutboxEntry
	next    int
	done    map[string]int
	doneN   atomic.Int64
	claims  atomic.Int64
	gate    chan struct{} // when non-nil, Claim returns nothing until closed
	// perClaim and pause throttle Claim (at most perClaim entries, after
	// sleeping pause) to keep a relay busy over a longer time.
	perClaim int
	pause    time.Duration
	doneFail atomic.Int64 // Done fails this many more times
}

func newFakeOutbox(n int, prefix string) *fakeOutbox {
	ob := &fakeOutbox{done: make(map[string]int)}
	for i := range n {
		ref := fmt.Sprintf("%s-%d", prefix, i)
		m := seckill.OrderMessage{OrderRef: ref, UserID: int64(i + 1), ItemID: 1, ReservedAt: time.Now()}
		ob.entries = append(ob.entries, seckill.OutboxEntry{Stream: "s", ID: fmt.Sprintf("%d-0", i), Order: m})
	}
	return ob
}

func (o *fakeOutbox) Claim(ctx context.Context, max int) ([]seckill.OutboxEntry, error) {
	o.claims.Add(1)
	if o.gate != nil {
		select {
		case <-o.gate:
		default:
			return nil, nil
		}
	}
	if o.pause > 0 {
		time.Sleep(o.pause)
	}
	if o.perClaim > 0 {
		max = min(max, o.perClaim)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	end := min(o.next+max, len(o.entries))
	out := append([]seckill.OutboxEntry(nil), o.entries[o.next:end]...)
	o.next = end
	return out, nil
}

func (o *fakeOutbox) Done(ctx context.Context, entries []seckill.OutboxEntry) error {
	if o.doneFail.Add(-1) >= 0 {
		return fmt.Errorf("injected Done failure")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range entries {
		o.done[e.ID]++
	}
	o.doneN.Add(int64(len(entries)))
	return nil
}

func (o *fakeOutbox) check(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.done) != len(o.entries) {
		t.Fatalf("Done for %d distinct entries, want %d", len(o.done), len(o.entries))
	}
	for _, e := range o.entries {
		if n := o.done[e.ID]; n != 1 {
			t.Fatalf("entry %s: Done %d times, want 1", e.ID, n)
		}
	}
}

// fakeHandler stores each ref once (dedup), optionally failing one ref.
type fakeHandler struct {
	mu        sync.Mutex
	stored    map[string]int // Store calls that found the ref new (must be 1)
	delivered map[string]int
	failRef   string
	failed    map[string][]string
	storedN   atomic.Int64
	failedN   atomic.Int64
}

func newFakeHandler() *fakeHandler {
	return &fakeHandler{stored: map[string]int{}, delivered: map[string]int{}, failed: map[string][]string{}}
}

func (h *fakeHandler) Store(ctx context.Context, msgs []seckill.OrderMessage) []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		h.delivered[m.OrderRef]++
		if m.OrderRef == h.failRef {
			errs[i] = fmt.Errorf("poison %s", m.OrderRef)
			continue
		}
		if h.stored[m.OrderRef] == 0 {
			h.stored[m.OrderRef] = 1
			h.storedN.Add(1)
		}
	}
	return errs
}

func (h *fakeHandler) Failed(ctx context.Context, m seckill.OrderMessage, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failed[m.OrderRef] = append(h.failed[m.OrderRef], reason)
	h.failedN.Add(1)
	return nil
}

// ---- helpers ----

func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func topology(t *testing.T, url string, limit int) Topology {
	t.Helper()
	topo := Topology{Queue: testenv.Name(t), DeliveryLimit: limit}
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		if err := topo.Delete(ch); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return topo
}

// publishConfirmed publishes pubs on ch with publisher confirms, waiting
// for each. Without confirms a message is not safe when the publisher
// closes its connection right after: RabbitMQ 3.10 dropped 3 or 4 of 10
// unconfirmed publishes to a quorum queue in about 1 run of 30, so a test
// counting them saw orders that had never reached the queue as lost.
func publishConfirmed(ch *amqp.Channel, exchange, key string, mandatory bool, pubs ...amqp.Publishing) error {
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	for _, p := range pubs {
		dc, err := ch.PublishWithDeferredConfirm(exchange, key, mandatory, false, p)
		if err != nil {
			return err
		}
		if !dc.Wait() {
			return fmt.Errorf("publish of %s nacked", p.MessageId)
		}
	}
	return nil
}

func withChannel(t *testing.T, url string, f func(ch *amqp.Channel) error) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := f(ch); err != nil {
		t.Fatal(err)
	}
}

// start runs f in a goroutine and stops it at cleanup.
func start(t *testing.T, f func(ctx context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Errorf("run did not return 20s after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// ---- tests ----

func TestRelayAndConsumer20000(t *testing.T) {
	url := testenv.AMQPURL(t)
	topo := topology(t, url, 0)
	const n = 20000
	ob := newFakeOutbox(n, "o")
	relay := NewRelay(RelayConfig{URL: url, Topology: topo, Logger: testLogger(t)}, ob)

	began := time.Now()
	stopRelay := start(t, relay.Run)
	testenv.Eventually(t, 60*time.Second, "relay to confirm 20000", func() bool { return ob.doneN.Load() >= n })
	el := time.Since(began)
	rs := relay.Stats()
	t.Logf("relay: %d orders in %d messages confirmed in %v = %.0f orders/s (quorum queue, persistent)", n, rs.Messages, el.Round(time.Millisecond), n/el.Seconds())
	ready, _, err := QueueDepth(context.Background(), url, topo)
	if err != nil {
		t.Fatal(err)
	}
	if ready != int(rs.Messages) || rs.Messages >= n/100 {
		t.Fatalf("queue depth %d, relay stats %+v: want one message per claim of many orders", ready, rs)
	}
	ob.check(t)

	h := newFakeHandler()
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t)}, h)
	began = time.Now()
	stopCons := start(t, cons.Run)
	testenv.Eventually(t, 60*time.Second, "consumer to store 20000", func() bool { return h.storedN.Load() >= n })
	el = time.Since(began)
	t.Logf("consumer: %d orders stored and acked in %v = %.0f orders/s", n, el.Round(time.Millisecond), n/el.Seconds())
	testenv.Eventually(t, 10*time.Second, "the queue to drain", func() bool {
		r, _, err := QueueDepth(context.Background(), url, topo)
		return err == nil && r == 0 && cons.Stats().Stored >= n
	})
	stopRelay()
	stopCons()

	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.stored) != n {
		t.Fatalf("stored %d distinct refs, want %d", len(h.stored), n)
	}
	for _, e := range ob.entries {
		if h.stored[e.Order.OrderRef] != 1 {
			t.Fatalf("ref %s stored %d times", e.Order.OrderRef, h.stored[e.Order.OrderRef])
		}
	}
	rs, cs := relay.Stats(), cons.Stats()
	t.Logf("relay stats %+v; consumer stats %+v", rs, cs)
	if rs.Confirmed != n || rs.Published != n || rs.Returned != 0 {
		t.Fatalf("relay stats %+v", rs)
	}
	if cs.Stored != n || cs.Nacked != 0 || cs.Republished != 0 {
		t.Fatalf("consumer stats %+v", cs)
	}
}

func TestPoisonMessageDeadLetteredOnce(t *testing.T) {
	url := testenv.AMQPURL(t)
	const limit = 3
	topo := topology(t, url, limit)
	const n = 300
	ob := newFakeOutbox(n, "p")
	poison := ob.entries[n/2].Order.OrderRef
	h := newFakeHandler()
	h.failRef = poison

	start(t, NewRelay(RelayConfig{URL: url, Topology: topo, Logger: testLogger(t)}, ob).Run)
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t), BatchSize: 50}, h)
	start(t, cons.Run)

	testenv.Eventually(t, 60*time.Second, "poison dead-lettered and the rest stored", func() bool {
		return h.failedN.Load() >= 1 && h.storedN.Load() >= n-1
	})
	time.Sleep(500 * time.Millisecond) // a second Failed would show up by now
	h.mu.Lock()
	defer h.mu.Unlock()
	if got := h.failed[poison]; len(got) != 1 || got[0] != "delivery_limit" {
		t.Fatalf("Failed(%s) calls: %v, want exactly one delivery_limit", poison, got)
	}
	if len(h.failed) != 1 {
		t.Fatalf("Failed called for %v", h.failed)
	}
	if len(h.stored) != n-1 {
		t.Fatalf("stored %d, want %d", len(h.stored), n-1)
	}
	cs := cons.Stats()
	t.Logf("poison %s delivered %d times with x-delivery-limit=%d; consumer stats %+v", poison, h.delivered[poison], limit, cs)
	// Once in its batch, then as a single-order message up to the limit.
	if d := h.delivered[poison]; d != limit+2 && d != limit+1 {
		t.Fatalf("poison delivered %d times, want 1 in its batch + about %d alone", d, limit)
	}
	if cs.Republished < 1 || cs.Dead != 1 {
		t.Fatalf("consumer stats %+v", cs)
	}
	for ref, d := range h.delivered {
		if ref != poison && d != 1 {
			t.Fatalf("good order %s delivered %d times", ref, d)
		}
	}
}

func TestMalformedMessagesAreDeadLettered(t *testing.T) {
	url := testenv.AMQPURL(t)
	topo := topology(t, url, 0)
	h := newFakeHandler()
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t)}, h)
	withChannel(t, url, func(ch *amqp.Channel) error { return topo.Declare(ch) })
	start(t, cons.Run)

	good := EncodeOrder(seckill.OrderMessage{OrderRef: "good", UserID: 1, ItemID: 1})
	invalid := EncodeOrder(seckill.OrderMessage{OrderRef: "invalid", UserID: 0, ItemID: 1})
	withChannel(t, url, func(ch *amqp.Channel) error {
		var pubs []amqp.Publishing
		for _, m := range []struct {
			id   string
			body []byte
		}{{"garbage", []byte("{not json")}, {"invalid", invalid}, {"good", good}} {
			pubs = append(pubs, amqp.Publishing{MessageId: m.id, Body: m.body, DeliveryMode: amqp.Persistent})
		}
		return publishConfirmed(ch, "", topo.Name(), true, pubs...)
	})
	// The consumer counts Dead after Failed returns and Stored after the
	// ack that follows Store: wait for its counters too, not only for the
	// handler's.
	testenv.Eventually(t, 20*time.Second, "two Failed calls and one store", func() bool {
		st := cons.Stats()
		return h.failedN.Load() >= 2 && h.storedN.Load() >= 1 && st.Dead >= 2 && st.Stored >= 1
	})
	time.Sleep(300 * time.Millisecond) // a second Failed or Store would show up by now
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ref := range []string{"garbage", "invalid"} {
		r := h.failed[ref]
		if len(r) != 1 || !strings.HasPrefix(r[0], "malformed") {
			t.Fatalf("Failed(%s): %v", ref, r)
		}
		t.Logf("Failed(%s, %q)", ref, r[0])
	}
	if st := cons.Stats(); st.Malformed != 2 || st.Dead != 2 || st.Stored != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUnroutableIsRetriedUntilQueueExists(t *testing.T) {
	url := testenv.AMQPURL(t)
	topo := topology(t, url, 0)
	const n = 2000
	ob := newFakeOutbox(n, "u")
	ob.gate = make(chan struct{})
	relay := NewRelay(RelayConfig{URL: url, Topology: topo, Logger: testLogger(t)}, ob)
	start(t, relay.Run)

	// The relay declared the topology, then started claiming.
	testenv.Eventually(t, 20*time.Second, "relay to connect", func() bool { return ob.claims.Load() > 0 })
	withChannel(t, url, func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(topo.Name(), false, false, false)
		return err
	})
	close(ob.gate)
	testenv.Eventually(t, 20*time.Second, "returns", func() bool { return relay.Stats().Returned >= n })
	time.Sleep(500 * time.Millisecond)
	if d := ob.doneN.Load(); d != 0 {
		t.Fatalf("Done called for %d unroutable entries", d)
	}
	t.Logf("while the queue was missing: %+v", relay.Stats())

	withChannel(t, url, func(ch *amqp.Channel) error { return topo.Declare(ch) })
	testenv.Eventually(t, 20*time.Second, "all Done once the queue exists", func() bool { return ob.doneN.Load() >= n })
	ob.check(t)
	t.Logf("after the queue came back: %+v", relay.Stats())
	// The queue holds every order exactly once.
	h := newFakeHandler()
	start(t, NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t)}, h).Run)
	testenv.Eventually(t, 20*time.Second, "all stored", func() bool { return h.storedN.Load() >= n })
	time.Sleep(200 * time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range ob.entries {
		if h.delivered[e.Order.OrderRef] != 1 {
			t.Fatalf("ref %s delivered %d times, want 1", e.Order.OrderRef, h.delivered[e.Order.OrderRef])
		}
	}
}

// TestBrokerRestart runs a private broker through scripts/services.sh and
// stops and starts it while the relay publishes and the consumer stores.
func TestBrokerRestart(t *testing.T) {
	script := testenv.ServicesScript(t)
	dir := t.TempDir()
	svc := func(cmd string) {
		t.Helper()
		out, err := execScript(script, cmd, dir)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", script, cmd, err, out)
		}
	}
	svc("rabbitmq-start")
	t.Cleanup(func() { _, _ = execScript(script, "rabbitmq-stop", dir) })
	readURL := func() string {
		b, err := os.ReadFile(dir + "/amqp_url")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	url := readURL()
	topo := Topology{Queue: testenv.Name(t)}

	const n = 20000
	ob := newFakeOutbox(n, "b")
	h := newFakeHandler()
	relay := NewRelay(RelayConfig{URL: url, Topology: topo, Logger: testLogger(t), MaxInFlight: 256, Batch: 128}, ob)
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t), Prefetch: 200, BatchSize: 100}, h)
	stopRelay := start(t, relay.Run)
	stopCons := start(t, cons.Run)

	// About 2000 entries a second, so the relay is mid-flight whenever the
	// broker goes away (a stop takes a few seconds to close connections).
	ob.perClaim, ob.pause = 10, 5*time.Millisecond
	base := int64(0)
	for round := 1; round <= 2; round++ {
		testenv.Eventually(t, 60*time.Second, "progress", func() bool {
			return relay.Stats().Reconnects >= uint64(round-1) && ob.doneN.Load() >= base+2000
		})
		t.Logf("%s round %d: stopping the broker; done=%d stored=%d relay %+v", time.Now().Format("15:04:05.000"), round, ob.doneN.Load(), h.storedN.Load(), relay.Stats())
		svc("rabbitmq-stop")
		time.Sleep(time.Second)
		svc("rabbitmq-start")
		if u := readURL(); u != url {
			t.Fatalf("broker came back at %s, was %s: the relay cannot follow", u, url)
		}
		base = ob.doneN.Load()
		t.Logf("%s round %d: broker back; done=%d relay %+v", time.Now().Format("15:04:05.000"), round, base, relay.Stats())
	}
	testenv.Eventually(t, 120*time.Second, "all 20000 Done and stored, relay reconnected twice", func() bool {
		return ob.doneN.Load() >= n && h.storedN.Load() >= n && relay.Stats().Reconnects >= 2
	})
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
	dups := 0
	for _, d := range h.delivered {
		dups += d - 1
	}
	t.Logf("relay %+v; consumer %+v; redeliveries seen by the handler: %d", relay.Stats(), cons.Stats(), dups)
	if relay.Stats().Reconnects < 2 {
		t.Fatalf("relay reconnected %d times, want >= 2", relay.Stats().Reconnects)
	}
}

func BenchmarkRelay(b *testing.B) {
	url := os.Getenv("SECKILL_TEST_AMQP")
	if url == "" {
		b.Skip("SECKILL_TEST_AMQP not set")
	}
	topo := Topology{Queue: testenv.Name(b)}
	defer func() {
		conn, err := amqp.Dial(url)
		if err == nil {
			ch, _ := conn.Channel()
			_ = topo.Delete(ch)
			conn.Close()
		}
	}()
	ob := newFakeOutbox(b.N, "bench")
	relay := NewRelay(RelayConfig{URL: url, Topology: topo, Logger: slog.New(slog.DiscardHandler)}, ob)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ResetTimer()
	began := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); _ = relay.Run(ctx) }()
	for ob.doneN.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(began).Seconds(), "msg/s")
	b.StopTimer()
	cancel()
	<-done
}

func execScript(script, cmd, dir string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return exec.CommandContext(ctx, "bash", script, cmd, dir).CombinedOutput()
}

type blockingHandler struct {
	*fakeHandler
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *blockingHandler) Store(ctx context.Context, msgs []seckill.OrderMessage) []error {
	h.once.Do(func() { close(h.entered) })
	<-h.release
	return h.fakeHandler.Store(ctx, msgs)
}

func TestConsumerFinishesBatchOnCancel(t *testing.T) {
	url := testenv.AMQPURL(t)
	topo := topology(t, url, 0)
	withChannel(t, url, func(ch *amqp.Channel) error {
		if err := topo.Declare(ch); err != nil {
			return err
		}
		var pubs []amqp.Publishing
		for i := range 10 {
			body := EncodeOrder(seckill.OrderMessage{OrderRef: fmt.Sprintf("g%d", i), UserID: 1, ItemID: 1})
			pubs = append(pubs, amqp.Publishing{Body: body, DeliveryMode: amqp.Persistent})
		}
		// Confirmed: all 10 are in the queue before the consumer starts.
		return publishConfirmed(ch, "", topo.Name(), true, pubs...)
	})
	h := &blockingHandler{fakeHandler: newFakeHandler(), entered: make(chan struct{}), release: make(chan struct{})}
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t), FlushInterval: 50 * time.Millisecond}, h)
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan struct{})
	go func() { defer close(returned); _ = cons.Run(ctx) }()
	select {
	case <-h.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("Store never called")
	}
	cancel()
	select {
	case <-returned:
		t.Fatal("Run returned while Store was still running")
	case <-time.After(200 * time.Millisecond):
	}
	close(h.release)
	select {
	case <-returned:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the batch finished")
	}
	st := cons.Stats()
	// The batch in hand was stored and acked; anything not in it is back in
	// the queue. The broker requeues a closed channel's unacked deliveries
	// asynchronously, so their return is waited for (bounded).
	var ready int
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		ready, _, err = QueueDepth(context.Background(), url, topo)
		if err != nil {
			t.Fatal(err)
		}
		if int(st.Stored)+ready >= 10 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if int(st.Stored)+ready != 10 || st.Stored == 0 {
		t.Fatalf("stored %d + ready %d, want 10 (stats %+v)", st.Stored, ready, st)
	}
	t.Logf("stored %d in the batch in hand, %d back in the queue", st.Stored, ready)
}

func TestDoneFailuresAreRetriedNotRepublished(t *testing.T) {
	url := testenv.AMQPURL(t)
	topo := topology(t, url, 0)
	const n = 3000
	ob := newFakeOutbox(n, "d")
	ob.doneFail.Store(5)
	relay := NewRelay(RelayConfig{URL: url, Topology: topo, Logger: testLogger(t)}, ob)
	start(t, relay.Run)
	testenv.Eventually(t, 30*time.Second, "all Done", func() bool { return ob.doneN.Load() >= n })
	ob.check(t)
	if st := relay.Stats(); st.DoneErrors != 5 || st.Published != n {
		t.Fatalf("stats %+v", st)
	}
}

// ---- batch messages ----

func order(ref string, user int64) seckill.OrderMessage {
	return seckill.OrderMessage{OrderRef: ref, UserID: user, ItemID: 1, ReservedAt: time.Now().UTC()}
}

func orderJSON(ref string, user int64) []byte { return EncodeOrder(order(ref, user)) }

func batchBody(refs ...string) []byte {
	var g []seckill.OutboxEntry
	for i, ref := range refs {
		g = append(g, seckill.OutboxEntry{Order: order(ref, int64(i+1))})
	}
	return encodeBatch(g)
}

func publishRaw(t *testing.T, url string, topo Topology, pubs ...amqp.Publishing) {
	t.Helper()
	withChannel(t, url, func(ch *amqp.Channel) error {
		if err := topo.Declare(ch); err != nil {
			return err
		}
		for i := range pubs {
			pubs[i].DeliveryMode = amqp.Persistent
		}
		return publishConfirmed(ch, "", topo.Name(), true, pubs...)
	})
}

func TestEncodeDecodeBatch(t *testing.T) {
	body := batchBody("a", "b", "c")
	msgs, bad, err := decodeBatch(body)
	if err != nil || len(bad) != 0 || len(msgs) != 3 || msgs[0].OrderRef != "a" || msgs[2].OrderRef != "c" || msgs[2].UserID != 3 {
		t.Fatalf("decodeBatch(%s) = %+v, %+v, %v", body, msgs, bad, err)
	}
	for _, b := range []string{"", "{not json", `{"orders":[]}`, `{}`, `{"orders":[{"order_ref":"x"}]}`, `{"orders":[1,2]}`} {
		if _, _, err := decodeBatch([]byte(b)); err == nil {
			t.Fatalf("decodeBatch(%q) succeeded", b)
		}
	}
	msgs, bad, err = decodeBatch([]byte(`{"orders":[` + string(orderJSON("ok", 1)) + `,{"order_ref":"bad","user_id":0,"item_id":1}]}`))
	if err != nil || len(msgs) != 1 || len(bad) != 1 || bad[0].m.OrderRef != "bad" {
		t.Fatalf("mixed batch: %+v %+v %v", msgs, bad, err)
	}

	r := NewRelay(RelayConfig{MaxPerMessage: 2}, nil)
	entry := func(ref string, user int64) seckill.OutboxEntry { return seckill.OutboxEntry{Order: order(ref, user)} }
	broken := seckill.OutboxEntry{Err: errors.New("no user"), Fields: map[string]string{"ref": "x", "item": "1"}}
	es := []seckill.OutboxEntry{entry("1", 1), entry("2", 2), broken, entry("3", 3), entry("4", 4), entry("5", 5)}
	gs := r.group(es)
	var sizes []int
	for _, g := range gs {
		sizes = append(sizes, len(g))
	}
	// The broken entry goes alone; the others fill groups of 2 in order.
	if fmt.Sprint(sizes) != "[1 2 2 1]" || gs[0][0].Fields["ref"] != "x" || gs[1][1].Order.OrderRef != "2" || gs[3][0].Order.OrderRef != "5" {
		t.Fatalf("groups %v", sizes)
	}
	p1, id1 := r.publishing(gs[1])
	p2, id2 := r.publishing(gs[1])
	if id1 == id2 || p1.MessageId != id1 || p1.ContentType != BatchContentType || p2.MessageId != id2 {
		t.Fatalf("message ids %q %q, content type %q", id1, id2, p1.ContentType)
	}
	if px, _ := r.publishing(gs[0]); px.ContentType != SingleContentType || string(px.Body) != `{"item":"1","ref":"x"}` {
		t.Fatalf("broken entry published as %q %q", px.ContentType, px.Body)
	}
}

// TestMixedSingleAndBatchMessages: messages of the old format (one order)
// and batch messages in the same queue are all stored exactly once, and one
// Store call gathers orders of several messages.
func TestMixedSingleAndBatchMessages(t *testing.T) {
	url := testenv.AMQPURL(t)
	topo := topology(t, url, 0)
	var pubs []amqp.Publishing
	want := map[string]bool{}
	for i := range 100 {
		ref := fmt.Sprintf("s%d", i)
		want[ref] = true
		ct := SingleContentType
		if i%2 == 0 {
			ct = "" // the oldest messages carry no content type
		}
		pubs = append(pubs, amqp.Publishing{MessageId: ref, ContentType: ct, Body: orderJSON(ref, int64(i+1))})
		if i%10 == 0 {
			var refs []string
			for j := range 50 {
				r := fmt.Sprintf("b%d-%d", i, j)
				refs = append(refs, r)
				want[r] = true
			}
			pubs = append(pubs, amqp.Publishing{MessageId: refs[0] + "/50", ContentType: BatchContentType, Body: batchBody(refs...)})
		}
	}
	publishRaw(t, url, topo, pubs...)
	h := newFakeHandler()
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t), BatchSize: 120}, h)
	start(t, cons.Run)
	testenv.Eventually(t, 20*time.Second, "all stored", func() bool { return h.storedN.Load() >= int64(len(want)) })
	testenv.Eventually(t, 10*time.Second, "the queue to drain", func() bool {
		r, _, err := QueueDepth(context.Background(), url, topo)
		return err == nil && r == 0
	})
	time.Sleep(200 * time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.delivered) != len(want) {
		t.Fatalf("delivered %d refs, want %d", len(h.delivered), len(want))
	}
	for ref := range want {
		if h.delivered[ref] != 1 {
			t.Fatalf("%s delivered %d times", ref, h.delivered[ref])
		}
	}
	if st := cons.Stats(); st.Stored != uint64(len(want)) || st.Nacked != 0 || st.Malformed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestMalformedBatchMessagesAreDeadLettered: a batch body that does not
// decode (or holds no valid order) is rejected whole and dead-lettered
// once as malformed; an invalid order inside a good batch goes on alone
// and is dead-lettered by itself while the others are stored.
func TestMalformedBatchMessagesAreDeadLettered(t *testing.T) {
	url := testenv.AMQPURL(t)
	topo := topology(t, url, 0)
	mixed := []byte(`{"orders":[` + string(orderJSON("m-ok1", 1)) + `,{"order_ref":"m-bad","user_id":0,"item_id":1},` + string(orderJSON("m-ok2", 2)) + `]}`)
	publishRaw(t, url, topo,
		amqp.Publishing{MessageId: "garbage-batch", ContentType: BatchContentType, Body: []byte(`{"orders":[{not json`)},
		amqp.Publishing{MessageId: "empty-batch", ContentType: BatchContentType, Body: []byte(`{"orders":[]}`)},
		amqp.Publishing{MessageId: "invalid-batch", ContentType: BatchContentType, Body: []byte(`{"orders":[{"order_ref":"i1"},{"order_ref":"i2","user_id":1}]}`)},
		amqp.Publishing{MessageId: "mixed-batch", ContentType: BatchContentType, Body: mixed},
		amqp.Publishing{MessageId: "good-batch", ContentType: BatchContentType, Body: batchBody("g1", "g2")},
	)
	h := newFakeHandler()
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t)}, h)
	start(t, cons.Run)
	testenv.Eventually(t, 20*time.Second, "five Failed calls and four stores", func() bool {
		return h.failedN.Load() >= 5 && h.storedN.Load() >= 4
	})
	time.Sleep(500 * time.Millisecond) // a second Failed would show up by now
	h.mu.Lock()
	defer h.mu.Unlock()
	// The whole-message rejects are named by their message id (one Failed
	// each); the invalid-batch one is dead-lettered whole, so each of its
	// elements is reported; m-bad was republished alone.
	for _, ref := range []string{"garbage-batch", "empty-batch", "i1", "i2", "m-bad"} {
		r := h.failed[ref]
		if len(r) != 1 || !strings.HasPrefix(r[0], "malformed") {
			t.Fatalf("Failed(%s): %v (all: %v)", ref, r, h.failed)
		}
		t.Logf("Failed(%s, %q)", ref, r[0])
	}
	if len(h.failed) != 5 {
		t.Fatalf("Failed calls %v", h.failed)
	}
	for _, ref := range []string{"m-ok1", "m-ok2", "g1", "g2"} {
		if h.stored[ref] != 1 || h.delivered[ref] != 1 {
			t.Fatalf("%s stored %d delivered %d", ref, h.stored[ref], h.delivered[ref])
		}
	}
	if h.delivered["m-bad"] != 0 {
		t.Fatalf("invalid order handed to Store")
	}
	// Malformed: 3 batches + m-bad alone; Dead: 1+1+2+1 orders.
	if st := cons.Stats(); st.Malformed != 4 || st.Dead != 5 || st.Stored != 4 || st.Republished != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestBatchWhollyFailingIsDeadLetteredPerOrder: a batch message none of
// whose orders can be stored is nacked whole, dead-lettered after the
// delivery limit, and each of its orders is handed to Failed once.
func TestBatchWhollyFailingIsDeadLetteredPerOrder(t *testing.T) {
	url := testenv.AMQPURL(t)
	const limit = 2
	topo := topology(t, url, limit)
	publishRaw(t, url, topo,
		amqp.Publishing{MessageId: "x/1", ContentType: BatchContentType, Body: batchBody("x")},
		amqp.Publishing{MessageId: "ok/2", ContentType: BatchContentType, Body: batchBody("ok1", "ok2")},
	)
	h := newFakeHandler()
	h.failRef = "x"
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t)}, h)
	start(t, cons.Run)
	testenv.Eventually(t, 20*time.Second, "x failed, the others stored", func() bool {
		return h.failedN.Load() >= 1 && h.storedN.Load() >= 2
	})
	time.Sleep(500 * time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.failed["x"]; len(r) != 1 || r[0] != "delivery_limit" || len(h.failed) != 1 {
		t.Fatalf("Failed calls %v", h.failed)
	}
	if d := h.delivered["x"]; d != limit && d != limit+1 {
		t.Fatalf("x delivered %d times, limit %d", d, limit)
	}
	if st := cons.Stats(); st.Republished != 0 || st.Dead != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDeadBatchFailedRetriedInPlace: when Failed errors on one order of a
// dead-lettered batch, it is retried without handing the orders before it
// to Failed again.
func TestDeadBatchFailedRetriedInPlace(t *testing.T) {
	url := testenv.AMQPURL(t)
	topo := topology(t, url, 0)
	withChannel(t, url, func(ch *amqp.Channel) error {
		if err := topo.Declare(ch); err != nil {
			return err
		}
		return publishConfirmed(ch, topo.DLX(), topo.Name(), false, amqp.Publishing{
			MessageId: "d/3", ContentType: BatchContentType, Body: batchBody("d1", "d2", "d3"),
			Headers: amqp.Table{"x-first-death-reason": "delivery_limit"}, DeliveryMode: amqp.Persistent,
		})
	})
	h := &flakyFailHandler{fakeHandler: newFakeHandler(), failRef: "d2"}
	h.failN.Store(2)
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t)}, h)
	start(t, cons.Run)
	testenv.Eventually(t, 20*time.Second, "three orders failed", func() bool { return h.failedN.Load() >= 3 })
	time.Sleep(300 * time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ref := range []string{"d1", "d2", "d3"} {
		if r := h.failed[ref]; len(r) != 1 || r[0] != "delivery_limit" {
			t.Fatalf("Failed(%s): %v", ref, r)
		}
	}
	if st := cons.Stats(); st.FailErrors != 2 || st.Dead != 3 {
		t.Fatalf("stats %+v", st)
	}
}

type flakyFailHandler struct {
	*fakeHandler
	failRef string
	failN   atomic.Int64
}

func (h *flakyFailHandler) Failed(ctx context.Context, m seckill.OrderMessage, reason string) error {
	if m.OrderRef == h.failRef && h.failN.Add(-1) >= 0 {
		return fmt.Errorf("injected Failed error")
	}
	return h.fakeHandler.Failed(ctx, m, reason)
}
