package queue

import (
	"context"
	"encoding/json"
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
	entries []OutboxEntry
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
		body, _ := json.Marshal(seckill.OrderMessage{OrderRef: ref, UserID: int64(i + 1), ItemID: 1, ReservedAt: time.Now()})
		ob.entries = append(ob.entries, OutboxEntry{Stream: "s", ID: fmt.Sprintf("%d-0", i), Body: body, OrderRef: ref})
	}
	return ob
}

func (o *fakeOutbox) Claim(ctx context.Context, max int) ([]OutboxEntry, error) {
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
	out := append([]OutboxEntry(nil), o.entries[o.next:end]...)
	o.next = end
	return out, nil
}

func (o *fakeOutbox) Done(ctx context.Context, entries []OutboxEntry) error {
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
	t.Logf("relay: %d messages confirmed in %v = %.0f msg/s (MaxInFlight 1024, quorum queue, persistent)", n, el.Round(time.Millisecond), n/el.Seconds())
	ready, _, err := QueueDepth(context.Background(), url, topo)
	if err != nil {
		t.Fatal(err)
	}
	if ready != n {
		t.Fatalf("queue depth %d, want %d", ready, n)
	}
	ob.check(t)

	h := newFakeHandler()
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t)}, h)
	began = time.Now()
	stopCons := start(t, cons.Run)
	testenv.Eventually(t, 60*time.Second, "consumer to store 20000", func() bool { return h.storedN.Load() >= n })
	el = time.Since(began)
	t.Logf("consumer: %d messages stored and acked in %v = %.0f msg/s", n, el.Round(time.Millisecond), n/el.Seconds())
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
		if h.stored[e.OrderRef] != 1 {
			t.Fatalf("ref %s stored %d times", e.OrderRef, h.stored[e.OrderRef])
		}
	}
	rs, cs := relay.Stats(), cons.Stats()
	t.Logf("relay stats %+v; consumer stats %+v", rs, cs)
	if rs.Confirmed != n || rs.Returned != 0 {
		t.Fatalf("relay stats %+v", rs)
	}
}

func TestPoisonMessageDeadLetteredOnce(t *testing.T) {
	url := testenv.AMQPURL(t)
	const limit = 3
	topo := topology(t, url, limit)
	const n = 300
	ob := newFakeOutbox(n, "p")
	poison := ob.entries[n/2].OrderRef
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
	t.Logf("poison %s delivered %d times with x-delivery-limit=%d; consumer stats %+v", poison, h.delivered[poison], limit, cons.Stats())
	if d := h.delivered[poison]; d != limit+1 && d != limit {
		t.Fatalf("poison delivered %d times, want about %d", d, limit)
	}
}

func TestMalformedMessagesAreDeadLettered(t *testing.T) {
	url := testenv.AMQPURL(t)
	topo := topology(t, url, 0)
	h := newFakeHandler()
	cons := NewConsumer(ConsumerConfig{URL: url, Topology: topo, Logger: testLogger(t)}, h)
	withChannel(t, url, func(ch *amqp.Channel) error { return topo.Declare(ch) })
	start(t, cons.Run)

	good, _ := json.Marshal(seckill.OrderMessage{OrderRef: "good", UserID: 1, ItemID: 1})
	invalid, _ := json.Marshal(seckill.OrderMessage{OrderRef: "invalid", UserID: 0, ItemID: 1})
	withChannel(t, url, func(ch *amqp.Channel) error {
		for _, m := range []struct {
			id   string
			body []byte
		}{{"garbage", []byte("{not json")}, {"invalid", invalid}, {"good", good}} {
			err := ch.Publish("", topo.Name(), true, false, amqp.Publishing{MessageId: m.id, Body: m.body, DeliveryMode: amqp.Persistent})
			if err != nil {
				return err
			}
		}
		return nil
	})
	testenv.Eventually(t, 20*time.Second, "two Failed calls and one store", func() bool {
		return h.failedN.Load() >= 2 && h.storedN.Load() >= 1
	})
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
	ready, _, err := QueueDepth(context.Background(), url, topo)
	if err != nil {
		t.Fatal(err)
	}
	if ready != n {
		t.Fatalf("queue holds %d, want %d", ready, n)
	}
	t.Logf("after the queue came back: %+v", relay.Stats())
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
		if h.stored[e.OrderRef] != 1 {
			t.Fatalf("ref %s stored %d times", e.OrderRef, h.stored[e.OrderRef])
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
		for i := range 10 {
			body, _ := json.Marshal(seckill.OrderMessage{OrderRef: fmt.Sprintf("g%d", i), UserID: 1, ItemID: 1})
			if err := ch.Publish("", topo.Name(), true, false, amqp.Publishing{Body: body, DeliveryMode: amqp.Persistent}); err != nil {
				return err
			}
		}
		return nil
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
	ready, _, err := QueueDepth(context.Background(), url, topo)
	if err != nil {
		t.Fatal(err)
	}
	// The batch in hand was stored and acked; anything not in it is back in the queue.
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
