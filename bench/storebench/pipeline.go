package storebench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"seckill"
	"seckill/backend"
	"seckill/bench"
	"seckill/postgres"
	"seckill/queue"
	"seckill/stock"
	"seckill/worker"
)

// PipelineResult holds the figures of one pipeline run.
type PipelineResult struct {
	Name        string `json:"name"` // of the run's database, Redis prefix (Name+":") and queue
	Units       int    `json:"units"`
	Concurrency int    `json:"concurrency"`
	Relays      int    `json:"relays"`
	Workers     int    `json:"workers"`

	Accepted      int64            `json:"accepted"`
	Refused       map[string]int64 `json:"refused,omitempty"` // answers other than accepted, by error code
	Stored        int64            `json:"stored"`
	StockLeft     int64            `json:"stock_left"`
	Duplicates    int64            `json:"duplicate_orders"`
	RefMismatches int64            `json:"ref_mismatches"` // accepted refs not stored under their user
	OutboxPending int64            `json:"outbox_pending"`

	AcceptWindow     time.Duration `json:"accept_window_ns"` // first -> last acceptance
	EndToEnd         time.Duration `json:"end_to_end_ns"`    // first acceptance -> last order stored
	Drain            time.Duration `json:"drain_ns"`         // last acceptance -> last order stored
	AcceptRate       float64       `json:"accept_rate"`      // units / accept window
	EndToEndRate     float64       `json:"end_to_end_rate"`  // units / end to end
	ReserveP50       time.Duration `json:"reserve_p50_ns"`
	ReserveP99       time.Duration `json:"reserve_p99_ns"`
	ReserveMax       time.Duration `json:"reserve_max_ns"`
	MaxOutboxBacklog int64         `json:"max_outbox_backlog"` // accepted but not yet confirmed by RabbitMQ, sampled
	MaxQueueBacklog  int64         `json:"max_queue_backlog"`  // confirmed but not yet stored, sampled

	Relay    queue.RelayStats    `json:"relay"`
	Consumer queue.ConsumerStats `json:"consumer"`

	Failures []string `json:"failures,omitempty"`
}

// OK reports whether every check passed.
func (r *PipelineResult) OK() bool { return len(r.Failures) == 0 }

// timedHandler is the worker seen from the consumer, noting how many orders
// each successful batch committed and when.
type timedHandler struct {
	h      seckill.OrderHandler
	stored atomic.Int64 // messages of batches stored without error (redeliveries count again)
	last   atomic.Int64 // unix ns when the last such batch was committed
}

func (t *timedHandler) Store(ctx context.Context, msgs []seckill.OrderMessage) []error {
	errs := t.h.Store(ctx, msgs)
	now := time.Now().UnixNano()
	ok := int64(0)
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	if ok > 0 {
		for {
			last := t.last.Load()
			if now <= last || t.last.CompareAndSwap(last, now) {
				break
			}
		}
		t.stored.Add(ok)
	}
	return errs
}

func (t *timedHandler) Failed(ctx context.Context, m seckill.OrderMessage, reason string) error {
	return t.h.Failed(ctx, m, reason)
}

// Pipeline sells cfg.Units units to as many users through
// backend.Service.Reserve, with relays and workers running in process, and
// measures how fast orders are accepted and stored. When cpuProfile is not
// nil, a CPU profile of the sale (reservations and drain) is written to it.
//
// The returned error is about the run itself (a server down, a timeout);
// wrong counts are Failures of the result.
func Pipeline(ctx context.Context, cfg Config, cpuProfile io.Writer) (*PipelineResult, error) {
	cfg.defaults()
	n := cfg.Units
	res := &PipelineResult{Units: n, Concurrency: cfg.Concurrency, Relays: cfg.Relays, Workers: cfg.Workers, Refused: map[string]int64{}}
	name := uniqueName("pipeline")
	res.Name = name

	tdb, err := createDB(ctx, cfg.PGURL, name)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cfg.Keep {
			cfg.progress("kept database %s", tdb.url)
			return
		}
		if err := tdb.drop(); err != nil {
			cfg.progress("dropping database %s: %v", tdb.name, err)
		}
	}()
	db, err := postgres.Open(ctx, tdb.url)
	if err != nil {
		return nil, err
	}
	defer db.Close()

	rdb, err := redisClient(cfg.RedisURL, cfg.Concurrency+64)
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	prefix := name + ":"
	defer func() {
		if err := deleteKeys(rdb, prefix); err != nil {
			cfg.progress("deleting redis keys %s*: %v", prefix, err)
		}
	}()
	top := queue.Topology{Queue: name}
	defer func() {
		if err := deleteTopology(cfg.AMQPURL, top); err != nil {
			cfg.progress("deleting queues of %s: %v", name, err)
		}
	}()

	st := stock.New(rdb, prefix)
	svc := backend.New(db, st, cfg.Logger)

	cfg.progress("creating %d users in %s", n, tdb.name)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("buyer%07d", i)
	}
	ids, err := db.EnsureUsers(ctx, names)
	if err != nil {
		return nil, err
	}
	users := make([]int64, n)
	for i, nm := range names {
		users[i] = ids[nm]
	}
	now := time.Now()
	item, err := svc.CreateItem(ctx, seckill.Item{
		Name: "bench", PriceCents: 100, Stock: int64(n),
		StartsAt: now.Add(-time.Second), EndsAt: now.Add(24 * time.Hour), Challenge: "none",
	})
	if err != nil {
		return nil, err
	}

	// Relays and workers, running until the sale is stored.
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	defer func() { stopBG(); bg.Wait() }()
	var relays []*queue.Relay
	for i := range cfg.Relays {
		r := queue.NewRelay(queue.RelayConfig{
			URL: cfg.AMQPURL, Topology: top, Logger: cfg.Logger,
			Batch: cfg.RelayBatch, MaxInFlight: cfg.RelayMaxInFlight,
		}, st.Outbox(fmt.Sprintf("relay-%s-%d", name, i), time.Minute))
		relays = append(relays, r)
	}
	h := &timedHandler{h: worker.New(db, st, cfg.Logger)}
	var consumers []*queue.Consumer
	for range cfg.Workers {
		consumers = append(consumers, queue.NewConsumer(queue.ConsumerConfig{
			URL: cfg.AMQPURL, Topology: top, Logger: cfg.Logger,
			Prefetch: cfg.Prefetch, BatchSize: cfg.WorkerBatch, FlushInterval: cfg.WorkerFlush,
		}, h))
	}
	start := func(run func(context.Context) error) {
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := run(bgCtx); err != nil && bgCtx.Err() == nil {
				cfg.Logger.Error("background task stopped", "err", err)
			}
		}()
	}
	for _, c := range consumers {
		start(c.Run)
	}
	for _, r := range relays {
		start(r.Run)
	}
	// Wait until every consumer is attached, so connection set-up is not
	// part of the measure.
	if err := waitConsumers(ctx, cfg.AMQPURL, top, cfg.Workers, 30*time.Second); err != nil {
		return nil, err
	}
	cfg.progress("item %d: %d units; %d relay(s), %d worker(s) running; reserving from %d goroutines",
		item.ID, n, cfg.Relays, cfg.Workers, cfg.Concurrency)

	if cpuProfile != nil {
		if err := startCPUProfile(cpuProfile); err != nil {
			return nil, err
		}
	}
	profiling := cpuProfile != nil
	stopProfile := func() {
		if profiling {
			stopCPUProfile()
			profiling = false
		}
	}
	defer stopProfile()

	// Sample the backlogs while the sale runs.
	sampleCtx, stopSample := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	defer func() { stopSample(); sampler.Wait() }()
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-t.C:
			}
			if c, err := st.Counters(sampleCtx, item.ID); err == nil {
				res.MaxOutboxBacklog = max(res.MaxOutboxBacklog, c.OutboxPending)
			}
			var conf int64
			for _, r := range relays {
				conf += int64(r.Stats().Confirmed)
			}
			res.MaxQueueBacklog = max(res.MaxQueueBacklog, conf-h.stored.Load())
		}
	}()

	// The sale: one Reserve per user, from cfg.Concurrency goroutines.
	lat := make([]time.Duration, n)
	refs := make([]string, n)
	type tally struct {
		accepted    int64
		first, last time.Time
		refused     map[string]int64
		err         error
	}
	tallies := make([]tally, cfg.Concurrency)
	var next atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for g := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := &tallies[g]
			t.refused = map[string]int64{}
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				r, err := svc.Reserve(ctx, item.ID, seckill.Account{ID: users[i]}, "")
				t1 := time.Now()
				lat[i] = t1.Sub(t0)
				if err != nil {
					code := seckill.ErrorCode(err)
					if code == seckill.EInternal {
						if t.err == nil {
							t.err = err
						}
						code = "error"
					}
					t.refused[string(code)]++
					continue
				}
				if r.Status != seckill.StatusQueued {
					t.refused["status "+string(r.Status)]++
					continue
				}
				refs[i] = r.OrderRef
				t.accepted++
				if t.first.IsZero() || t1.Before(t.first) {
					t.first = t1
				}
				if t1.After(t.last) {
					t.last = t1
				}
			}
		}()
	}
	wg.Wait()
	reserveWall := time.Since(began)
	var first, last time.Time
	var firstErr error
	for _, t := range tallies {
		res.Accepted += t.accepted
		for k, v := range t.refused {
			res.Refused[k] += v
		}
		if t.accepted > 0 {
			if first.IsZero() || t.first.Before(first) {
				first = t.first
			}
			if t.last.After(last) {
				last = t.last
			}
		}
		if firstErr == nil {
			firstErr = t.err
		}
	}
	if firstErr != nil {
		cfg.progress("first reserve error: %v", firstErr)
	}
	cfg.progress("reservations done in %v: %d accepted, refused %v", reserveWall.Round(time.Millisecond), res.Accepted, res.Refused)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Wait until PostgreSQL holds every accepted order.
	want := res.Accepted
	deadline := time.Now().Add(cfg.Timeout)
	for {
		if h.stored.Load() >= want {
			c, err := db.CountOrders(ctx, item.ID)
			if err != nil {
				return nil, err
			}
			if c >= want {
				break
			}
		}
		if time.Now().After(deadline) {
			c, _ := db.CountOrders(ctx, item.ID)
			stopSample()
			sampler.Wait()
			res.Failures = append(res.Failures, fmt.Sprintf("timed out after %v: %d of %d accepted orders stored", cfg.Timeout, c, want))
			res.Stored = c
			return res, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	lastStored := time.Unix(0, h.last.Load())
	stopProfile()
	stopSample()
	sampler.Wait()
	cfg.progress("all %d orders stored, %v after the last acceptance", want, lastStored.Sub(last).Round(time.Millisecond))

	// The outbox empties once the relays have handled the last confirms.
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := st.Counters(ctx, item.ID)
		if err != nil {
			return nil, err
		}
		res.OutboxPending = c.OutboxPending
		if c.OutboxPending == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopBG()
	bg.Wait()
	for _, r := range relays {
		s := r.Stats()
		res.Relay.Published += s.Published
		res.Relay.Confirmed += s.Confirmed
		res.Relay.Returned += s.Returned
		res.Relay.Nacked += s.Nacked
		res.Relay.Reconnects += s.Reconnects
		res.Relay.DoneErrors += s.DoneErrors
	}
	for _, c := range consumers {
		s := c.Stats()
		res.Consumer.Stored += s.Stored
		res.Consumer.Nacked += s.Nacked
		res.Consumer.Dead += s.Dead
		res.Consumer.Malformed += s.Malformed
		res.Consumer.FailErrors += s.FailErrors
	}

	// Figures.
	res.AcceptWindow = last.Sub(first)
	res.EndToEnd = lastStored.Sub(first)
	res.Drain = lastStored.Sub(last)
	res.AcceptRate = bench.Rate(res.Accepted, res.AcceptWindow)
	res.EndToEndRate = bench.Rate(res.Accepted, res.EndToEnd)
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	res.ReserveP50 = bench.Percentile(sorted, 0.50)
	res.ReserveP99 = bench.Percentile(sorted, 0.99)
	res.ReserveMax = sorted[len(sorted)-1]

	// Checks: exact counts, refs, stock, doubles.
	fail := func(format string, args ...any) { res.Failures = append(res.Failures, fmt.Sprintf(format, args...)) }
	if res.Accepted != int64(n) {
		fail("%d accepted, want exactly %d", res.Accepted, n)
	}
	if res.Stored, err = db.CountOrders(ctx, item.ID); err != nil {
		return nil, err
	}
	if res.Stored != int64(n) {
		fail("%d orders stored, want exactly %d", res.Stored, n)
	}
	stored, err := db.OrderRefs(ctx, item.ID)
	if err != nil {
		return nil, err
	}
	for i, ref := range refs {
		if ref != "" && stored[users[i]] != ref {
			res.RefMismatches++
		}
	}
	if res.RefMismatches != 0 {
		fail("%d accepted orders not stored under their user and ref", res.RefMismatches)
	}
	c, err := st.Counters(ctx, item.ID)
	if err != nil {
		return nil, err
	}
	res.StockLeft = c.StockLeft
	if c.StockLeft != 0 {
		fail("stock left %d, want 0", c.StockLeft)
	}
	if c.Reserved != int64(n) {
		fail("%d buyers in redis, want %d", c.Reserved, n)
	}
	if res.OutboxPending != 0 {
		fail("outbox still holds %d entries", res.OutboxPending)
	}
	if res.Duplicates, err = db.DuplicateOrders(ctx); err != nil {
		return nil, err
	}
	if res.Duplicates != 0 {
		fail("%d duplicate orders", res.Duplicates)
	}
	if res.Consumer.Dead != 0 || res.Consumer.Malformed != 0 {
		fail("%d dead-lettered and %d malformed messages", res.Consumer.Dead, res.Consumer.Malformed)
	}
	// One more buyer finds the item sold out.
	extra, err := db.EnsureUsers(ctx, []string{"late-buyer"})
	if err != nil {
		return nil, err
	}
	if _, err := svc.Reserve(ctx, item.ID, seckill.Account{ID: extra["late-buyer"]}, ""); seckill.ErrorCode(err) != seckill.ESoldOut {
		fail("a buyer after the sale got %v, want sold_out", err)
	}
	return res, nil
}

// waitConsumers waits until the queue has want consumers.
func waitConsumers(ctx context.Context, amqpURL string, top queue.Topology, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, consumers, err := queue.QueueDepth(ctx, amqpURL, top)
		if err == nil && consumers >= want {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%d of %d consumers attached", consumers, want)
			}
			return fmt.Errorf("waiting for the workers to attach to %s: %w", top.Name(), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// deleteTopology deletes the queues and exchange of top.
func deleteTopology(amqpURL string, top queue.Topology) error {
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	err = top.Delete(ch)
	var aerr *amqp.Error
	if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
		return nil
	}
	return err
}

// PrintPipeline writes the figures and checks of a pipeline run.
func PrintPipeline(w io.Writer, r *PipelineResult) {
	fmt.Fprintf(w, "pipeline: %d units, concurrency %d, %d relay(s), %d worker(s)\n", r.Units, r.Concurrency, r.Relays, r.Workers)
	fmt.Fprintf(w, "  accepted            %d (refused %v)\n", r.Accepted, r.Refused)
	fmt.Fprintf(w, "  acceptance rate     %s orders/s (window %v)\n", bench.Human(r.AcceptRate), r.AcceptWindow.Round(time.Millisecond))
	fmt.Fprintf(w, "  end-to-end rate     %s orders/s (first acceptance -> last stored %v)\n", bench.Human(r.EndToEndRate), r.EndToEnd.Round(time.Millisecond))
	fmt.Fprintf(w, "  drain               %v (last acceptance -> last stored)\n", r.Drain.Round(time.Millisecond))
	fmt.Fprintf(w, "  Reserve latency     p50 %v  p99 %v  max %v\n", r.ReserveP50.Round(time.Microsecond), r.ReserveP99.Round(time.Microsecond), r.ReserveMax.Round(time.Microsecond))
	fmt.Fprintf(w, "  max backlog         outbox %d, confirmed-not-stored %d (sampled every 50ms)\n", r.MaxOutboxBacklog, r.MaxQueueBacklog)
	fmt.Fprintf(w, "  relay               published %d confirmed %d returned %d nacked %d reconnects %d\n",
		r.Relay.Published, r.Relay.Confirmed, r.Relay.Returned, r.Relay.Nacked, r.Relay.Reconnects)
	fmt.Fprintf(w, "  consumer            stored %d nacked %d dead %d malformed %d\n", r.Consumer.Stored, r.Consumer.Nacked, r.Consumer.Dead, r.Consumer.Malformed)
	fmt.Fprintf(w, "  checks              stored %d, stock left %d, duplicate orders %d, ref mismatches %d, outbox pending %d\n",
		r.Stored, r.StockLeft, r.Duplicates, r.RefMismatches, r.OutboxPending)
	if r.OK() {
		fmt.Fprintln(w, "PASS")
		return
	}
	for _, f := range r.Failures {
		fmt.Fprintln(w, "  failure:", f)
	}
	fmt.Fprintln(w, "FAIL")
}
