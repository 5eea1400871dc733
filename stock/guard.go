package stock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
)

// ErrFrozen is the error of a reservation refused while the Guard verifies
// Redis (backend_unavailable: the client retries shortly).
var ErrFrozen = seckill.Errorf(seckill.EUnavailable, "the stock store is being verified after a Redis restart; retry shortly")

// Durable is what the Guard reads from the durable side (package postgres).
type Durable interface {
	Items(ctx context.Context) ([]seckill.Item, error)
	OrderRefs(ctx context.Context, itemID int64) (map[int64]string, error)
	// OrderNetworks: the registration network of every buyer with a
	// stored order who has one (user id -> network), for max_per_network.
	OrderNetworks(ctx context.Context, itemID int64) (map[int64]string, error)
	CountOrders(ctx context.Context, itemID int64) (int64, error)
}

// GuardConfig configures a Guard.
type GuardConfig struct {
	// Source holds the items and the stored orders.
	Source Durable
	// QueueReady returns how many order messages wait ready in RabbitMQ.
	// Nil: no broker to wait for.
	QueueReady func(ctx context.Context) (int, error)
	// Interval between two run_id checks; 1 s when zero.
	Interval time.Duration
	// Settle is how long the stored order count must stay unchanged, with
	// every outbox and the queue empty, before re-seeding (it covers
	// messages a worker holds unacknowledged); 1 s when zero.
	Settle time.Duration
	// OutboxStuck is how long a non-empty outbox must stay unchanged
	// before recovery stops waiting for it to drain; 2 s when zero. Entries
	// in the outbox of the Redis being re-seeded are in its buyers hash
	// (one script writes both), so they never make a unit sell twice; what
	// recovery waits for is that nothing is still on its way from an older
	// Redis. An outbox nobody drains (relay down, or entries a restore
	// brought back as pending under a relay that will not read them again)
	// holds nothing in flight.
	OutboxStuck time.Duration
	// Poll is the pace of the recovery's checks; 200 ms when zero.
	Poll   time.Duration
	Logger *slog.Logger
}

// Guard keeps a Store from selling out of a Redis that came back from an
// older state: an everysec AOF after an OS crash, a replica promoted before
// it had everything, a restored snapshot. Such a Redis is stale, not empty:
// its buyers and stock are behind what RabbitMQ and PostgreSQL hold.
//
// Two things detect a restart. The reservation script runs with EVALSHA
// only, and a restarted Redis has an empty script cache: its first
// reservation gets NOSCRIPT (the fence, closing the window until the
// watch notices). The watch compares the run_id of the Redis server (INFO
// server) with the key <prefix>redis:verified_run_id at start, every
// Interval and after a connection error; any difference, or no key, means
// this server process was never verified.
//
// Either freezes every item (reservations answer ErrFrozen) until recovery
// has waited for every outbox to empty (or to stay unchanged for
// OutboxStuck), the orders queue to hold no ready message and the stored
// order count to settle, then re-seeded each item
// (stored buyers added, stock = total - HLEN(buyers)), loaded the
// reservation script and recorded the run_id as verified, all in one
// MULTI/EXEC that also reads the run_id: if the transaction ran on another
// server process than the one recovery watched, the script cache is flushed
// again and recovery starts over. Several backends may recover at once:
// every step is idempotent.
type Guard struct {
	s    *Store
	cfg  GuardConfig
	log  *slog.Logger
	kick chan struct{}

	frozen atomic.Bool

	mu       sync.Mutex
	reason   string
	since    time.Time
	waiting  string
	freezes  uint64
	last     time.Duration
	runID    string
	initial  bool // frozen since start, no restart seen yet
	lastNote time.Time
}

// GuardStatus is the Guard's state, for readiness and admin stats.
type GuardStatus struct {
	Frozen            bool       `json:"frozen"`
	Reason            string     `json:"reason,omitempty"`
	FrozenSince       *time.Time `json:"frozen_since,omitempty"`
	Waiting           string     `json:"waiting,omitempty"`
	Freezes           uint64     `json:"freezes"`
	LastFreezeSeconds float64    `json:"last_freeze_seconds"`
	RunID             string     `json:"redis_run_id,omitempty"`
}

// NewGuard guards s: from now on s.Reserve runs with EVALSHA only and
// refuses while frozen. The Guard starts frozen until its first check
// (Run) has verified the server.
func NewGuard(s *Store, cfg GuardConfig) *Guard {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Settle <= 0 {
		cfg.Settle = time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.OutboxStuck <= 0 {
		cfg.OutboxStuck = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Guard{s: s, cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), reason: "starting", since: time.Now(), initial: true}
	g.frozen.Store(true)
	s.guard = g
	return g
}

// Frozen reports whether reservations are refused.
func (g *Guard) Frozen() bool { return g.frozen.Load() }

// Kick asks for a check now (after a connection error).
func (g *Guard) Kick() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// Status returns the Guard's state.
func (g *Guard) Status() GuardStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := GuardStatus{Frozen: g.frozen.Load(), Freezes: g.freezes, LastFreezeSeconds: g.last.Seconds(), RunID: g.runID}
	if st.Frozen {
		since := g.since.UTC()
		st.Reason, st.FrozenSince, st.Waiting = g.reason, &since, g.waiting
	}
	return st
}

// failed turns the error of a guarded reservation into what the client
// sees: NOSCRIPT freezes; a failure of Redis (isUnavailable) asks for a
// check. Both answer backend_unavailable; any other error (an unexpected
// error reply, the caller's cancellation) stays as it is.
func (g *Guard) failed(err error) error {
	if isNoScript(err) {
		g.freeze("NOSCRIPT: redis lost its scripts (restarted?)")
		g.Kick()
		return ErrFrozen
	}
	if !isUnavailable(err) {
		return err
	}
	g.Kick()
	return reservationUnavailable(err)
}

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }

func (g *Guard) freeze(reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.frozen.Swap(true) {
		if !g.initial {
			return
		}
		// Frozen since start: count it as a freeze, from the start.
		g.initial = false
		g.freezes++
		g.reason = "at start: " + reason
		g.log.Warn("redis guard: reservations frozen", "reason", g.reason)
		return
	}
	g.freezes++
	g.reason, g.since, g.waiting = reason, time.Now(), ""
	g.log.Warn("redis guard: reservations frozen", "reason", reason)
}

func (g *Guard) unfreeze(runID, how string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.runID = runID
	if !g.frozen.Load() {
		return
	}
	d := time.Since(g.since)
	if !g.initial {
		g.last = d
	}
	g.initial = false
	g.frozen.Store(false)
	g.waiting = ""
	g.log.Warn("redis guard: reservations flow again", "how", how, "frozen_for", d.Round(time.Millisecond), "reason", g.reason, "redis_run_id", runID)
}

func (g *Guard) wait(what string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waiting = what
	if g.frozen.Load() && time.Since(g.lastNote) > 5*time.Second {
		g.lastNote = time.Now()
		g.log.Info("redis guard: recovery waiting", "for", what, "frozen_for", time.Since(g.since).Round(time.Millisecond))
	}
}

// Run checks the Redis server at once, then every Interval and after each
// Kick, and recovers whenever it must, until ctx ends.
func (g *Guard) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		g.check(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-g.kick:
		}
	}
}

func (g *Guard) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	run, err := g.s.ServerRunID(cctx)
	if err != nil {
		g.wait("redis: " + err.Error())
		return
	}
	verified, err := g.s.VerifiedRunID(cctx)
	if err != nil {
		g.wait("redis: " + err.Error())
		return
	}
	if verified != run {
		if verified == "" {
			g.freeze("redis holds no verified run_id (new or restored server)")
		} else {
			g.freeze("redis run_id changed (restarted or failed over)")
		}
		g.recover(ctx, run)
		return
	}
	if !g.Frozen() {
		g.mu.Lock()
		g.runID = run
		g.mu.Unlock()
		return
	}
	// Verified server, frozen by NOSCRIPT (SCRIPT FLUSH) or at start.
	if err := g.s.arm(cctx, run); err != nil {
		g.wait("loading the reservation script: " + err.Error())
		return
	}
	g.unfreeze(run, "server already verified")
}

// recover waits until nothing is on its way from an older Redis to
// PostgreSQL, then re-seeds every item, until done or ctx ends.
func (g *Guard) recover(ctx context.Context, run string) {
	r := recovery{run: run, count: -1, pending: -1}
	for ctx.Err() == nil {
		if g.step(ctx, &r) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(g.cfg.Poll):
		}
	}
}

type recovery struct {
	run          string
	count        int64
	stable       time.Time
	pending      int64
	pendingSince time.Time
}

func (r *recovery) reset() { r.count, r.stable = -1, time.Time{} }

func (g *Guard) step(ctx context.Context, r *recovery) bool {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	run, err := g.s.ServerRunID(ctx)
	if err != nil {
		r.reset()
		g.wait("redis: " + err.Error())
		return false
	}
	if run != r.run {
		g.log.Warn("redis guard: redis restarted again during recovery", "old_run_id", r.run, "run_id", run)
		r.run = run
		r.reset()
	}
	verified, err := g.s.VerifiedRunID(ctx)
	if err != nil {
		r.reset()
		g.wait("redis: " + err.Error())
		return false
	}
	if verified == run {
		// Another backend re-seeded this server process meanwhile.
		if err := g.s.arm(ctx, run); err != nil {
			g.wait("loading the reservation script: " + err.Error())
			return false
		}
		g.unfreeze(run, "verified by another backend")
		return true
	}
	items, err := g.cfg.Source.Items(ctx)
	if err != nil {
		r.reset()
		g.wait("postgresql: " + err.Error())
		return false
	}
	pending, err := g.s.outboxLen(ctx, items)
	if err != nil {
		r.reset()
		g.wait("redis: " + err.Error())
		return false
	}
	if pending != r.pending {
		r.pending, r.pendingSince = pending, time.Now()
		r.reset()
	}
	if pending > 0 && time.Since(r.pendingSince) < g.cfg.OutboxStuck {
		g.wait(fmt.Sprintf("outbox to drain (%d entries)", pending))
		return false
	}
	if g.cfg.QueueReady != nil {
		ready, err := g.cfg.QueueReady(ctx)
		if err != nil || ready > 0 {
			r.reset()
			g.wait(fmt.Sprintf("orders queue to drain (%d ready, err %v)", ready, err))
			return false
		}
	}
	var count int64
	for _, it := range items {
		n, err := g.cfg.Source.CountOrders(ctx, it.ID)
		if err != nil {
			r.reset()
			g.wait("postgresql: " + err.Error())
			return false
		}
		count += n
	}
	if count != r.count {
		r.count, r.stable = count, time.Now()
		g.wait("stored order count to settle")
		return false
	}
	if time.Since(r.stable) < g.cfg.Settle {
		return false
	}
	re := make([]ReseedItem, 0, len(items))
	for _, it := range items {
		sold, err := g.cfg.Source.OrderRefs(ctx, it.ID)
		var nets map[int64]string
		if err == nil && it.MaxPerNetwork > 0 && len(sold) > 0 {
			nets, err = g.cfg.Source.OrderNetworks(ctx, it.ID)
		}
		if err != nil {
			r.reset()
			g.wait("postgresql: " + err.Error())
			return false
		}
		re = append(re, ReseedItem{Item: it, Sold: sold, Networks: nets})
	}
	if err := g.s.Reseed(ctx, run, re); err != nil {
		r.reset()
		g.wait("re-seeding: " + err.Error())
		g.log.Warn("redis guard: re-seeding failed; retrying", "err", err)
		return false
	}
	g.log.Warn("redis guard: items re-seeded from postgresql", "items", len(re), "stored_orders", count, "redis_run_id", run)
	g.unfreeze(run, "re-seeded")
	return true
}

// ReserveScriptHash is the SHA1 of the reservation script (the fence:
// present in a Redis script cache only once a Guard armed it, or after an
// unguarded Store reserved there).
func ReserveScriptHash() string { return reserveScript.Hash() }

// ServerRunID returns the run_id of the Redis server answering (INFO
// server): random for every start of a server process.
func (s *Store) ServerRunID(ctx context.Context) (string, error) {
	info, err := s.rdb.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("reading redis run_id: %w", err)
	}
	id := runIDOf(info)
	if id == "" {
		return "", errors.New("reading redis run_id: INFO server has no run_id")
	}
	return id, nil
}

func runIDOf(info string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v
		}
	}
	return ""
}

// VerifiedRunID returns the run_id recorded by the last re-seed ("" when
// none).
func (s *Store) VerifiedRunID(ctx context.Context) (string, error) {
	v, err := s.rdb.Get(ctx, s.ks.VerifiedRunID()).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading verified run_id: %w", err)
	}
	return v, nil
}

func (s *Store) outboxLen(ctx context.Context, items []seckill.Item) (int64, error) {
	if len(items) == 0 {
		return 0, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(items))
	for i, it := range items {
		cmds[i] = pipe.XLen(ctx, s.ks.Item(it.ID).Outbox)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("reading outbox lengths: %w", err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}

// arm loads the reservation script into a server already verified as
// runID. The load and INFO run in one MULTI/EXEC; if another server
// process answered, the script cache is flushed again.
func (s *Store) arm(ctx context.Context, runID string) error {
	ok, err := s.rdb.ScriptExists(ctx, reserveScript.Hash()).Result()
	if err == nil && len(ok) == 1 && ok[0] {
		return nil
	}
	pipe := s.rdb.TxPipeline()
	info := pipe.Info(ctx, "server")
	pipe.ScriptLoad(ctx, reserveSrc)
	_, err = pipe.Exec(ctx)
	return s.checkSameServer(ctx, runID, info, err)
}

func (s *Store) checkSameServer(ctx context.Context, runID string, info *redis.StringCmd, err error) error {
	got := runIDOf(info.Val())
	if err == nil && got == runID {
		return nil
	}
	// The script may be loaded in a server that was not re-seeded: remove
	// it so that server refuses reservations (NOSCRIPT).
	if ferr := s.rdb.ScriptFlush(context.WithoutCancel(ctx)).Err(); ferr != nil {
		err = errors.Join(err, fmt.Errorf("flushing scripts: %w", ferr))
	}
	if err != nil {
		return fmt.Errorf("arming redis %s: %w", runID, err)
	}
	return fmt.Errorf("arming redis %s: server %s answered instead", runID, got)
}

// ReseedItem is an item and its stored orders (user id -> order ref), with
// the registration networks of their buyers (user id -> network; needed
// only for an item with max_per_network).
type ReseedItem struct {
	Item     seckill.Item
	Sold     map[int64]string
	Networks map[int64]string
}

// reseedChunk is how many buyers one reseed call carries.
const reseedChunk = 2000

// Reseed brings every item in line with PostgreSQL, loads the reservation
// script and records runID as verified, in one MULTI/EXEC that also reads
// the run_id of the server executing it. If that is not runID, or anything
// failed, the script cache is flushed (reservations refused again) and an
// error returned. Safe to run twice and from several backends at once.
func (s *Store) Reseed(ctx context.Context, runID string, items []ReseedItem) error {
	for _, r := range items {
		k := s.ks.Item(r.Item.ID)
		if err := s.rdb.XGroupCreateMkStream(ctx, k.Outbox, relayGroup, "0").Err(); err != nil && !isBusyGroup(err) {
			return fmt.Errorf("creating outbox of item %d: %w", r.Item.ID, err)
		}
		if err := s.rdb.SAdd(ctx, s.ks.Outboxes(), k.Outbox).Err(); err != nil {
			return fmt.Errorf("registering outbox of item %d: %w", r.Item.ID, err)
		}
	}
	pipe := s.rdb.TxPipeline()
	info := pipe.Info(ctx, "server")
	for _, r := range items {
		k := s.ks.Item(r.Item.ID)
		keys := []string{k.Meta, k.Stock, k.Buyers, k.Networks}
		head := []any{r.Item.Stock, r.Item.StartsAt.UnixMilli(), r.Item.EndsAt.UnixMilli(),
			r.Item.MinAccountAge.D().Milliseconds(), r.Item.MaxPerNetwork}
		args := make([]any, 0, 2*reseedChunk)
		n := 0
		for user, ref := range r.Sold {
			args = append(args, strconv.FormatInt(user, 10), storedRecord(r.Item, ref, r.Networks[user]))
			n++
			if len(args) == 2*reseedChunk && n < len(r.Sold) {
				reseedScript.Eval(ctx, pipe, keys, append(append(head[:5:5], "0"), args...)...)
				args = args[:0]
			}
		}
		reseedScript.Eval(ctx, pipe, keys, append(append(head[:5:5], "1"), args...)...)
	}
	pipe.ScriptLoad(ctx, reserveSrc)
	pipe.Set(ctx, s.ks.VerifiedRunID(), runID, 0)
	_, err := pipe.Exec(ctx)
	if err != nil && errors.Is(err, redis.Nil) {
		err = nil
	}
	return s.checkSameServer(ctx, runID, info, err)
}
