// Package reconcile checks, for every item, that the counters in Redis, the
// outbox, the queue and the orders in PostgreSQL add up, and repairs what
// can be repaired without ever making a second order.
//
// The invariants:
//
//	stock_total = stock_left + reserved                      (Redis)
//	reserved    = orders + outbox_pending + in_flight        (Redis, PostgreSQL, RabbitMQ)
//
// in_flight (orders between the outbox and the database) is not observable
// as a set, so reconcile waits up to Settle for it to reach zero. A buyer in
// Redis whose order is in neither the outbox nor PostgreSQL after that is
// missing; Repair appends it to the outbox again. The worker stores an order
// ref at most once and PostgreSQL keeps one order per (user, item), so a
// repair that races a late delivery stores one order, never two.
//
// An order in the outbox is not yet safe either: it must move. Reconcile
// reads the relays' heartbeats and the relay group's pending list. An entry
// pending under a live relay and untouched for StrandedAfter is stranded
// (its relay read it and does not hold it: a live relay takes back its own
// idle entries every few seconds); so is one pending under a dead relay for
// StrandedAfter past the steal bound of the live ones. Stranded is a
// mismatch; Repair appends the entry again and removes the stranded one
// atomically. Entries older than StrandedAfter that are not stranded are
// waiting: with no relay alive, or with the broker down. That is a backlog,
// reported apart, not a mismatch. Stored orders above stock_total are a
// mismatch (oversold).
package reconcile

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"seckill"
	"seckill/stock"
)

// Catalog is the durable side (package postgres).
type Catalog interface {
	Items(ctx context.Context) ([]seckill.Item, error)
	OrderRefs(ctx context.Context, itemID int64) (map[int64]string, error)
	CountFailed(ctx context.Context, itemID int64) (int64, error)
	DuplicateOrders(ctx context.Context) (int64, error)
	OrderNetworks(ctx context.Context, itemID int64) (map[int64]string, error)
}

// Stock is the live side (package stock).
type Stock interface {
	Counters(ctx context.Context, itemID int64) (stock.Counters, error)
	Buyers(ctx context.Context, itemID int64) (map[int64]string, error)
	OutboxRefs(ctx context.Context, itemID int64) (map[string]bool, error)
	Requeue(ctx context.Context, m seckill.OrderMessage) error
	OutboxState(ctx context.Context, itemID int64) (stock.OutboxState, error)
	LiveRelays(ctx context.Context) (map[string]stock.RelayBeat, error)
	RequeueStranded(ctx context.Context, itemID int64, id string, minIdle time.Duration) (string, error)
	Networks(ctx context.Context, itemID int64) (map[string]int64, error)
}

// Options tune a run.
type Options struct {
	Items  []int64       // only these items; all when empty
	Settle time.Duration // how long to wait for in-flight orders to land
	Repair bool          // requeue missing orders, hand back stranded ones
	// StrandedAfter: an outbox entry pending this long under a live relay
	// is stranded; an entry older than this is waiting. Default 10s.
	StrandedAfter time.Duration
}

// DefaultStrandedAfter is Options.StrandedAfter's default.
const DefaultStrandedAfter = 10 * time.Second

// ItemReport is the finding for one item.
type ItemReport struct {
	ItemID        int64 `json:"item_id"`
	StockTotal    int64 `json:"stock_total"`
	StockLeft     int64 `json:"stock_left"`
	Reserved      int64 `json:"reserved"`
	Orders        int64 `json:"orders"`
	OutboxPending int64 `json:"outbox_pending"`
	InFlight      int64 `json:"in_flight"`
	Failed        int64 `json:"failed"`
	// CounterDiff is stock_total - stock_left - reserved; must be 0.
	CounterDiff int64 `json:"counter_diff"`
	// Missing are buyers whose order is in neither the outbox nor PostgreSQL.
	Missing []string `json:"missing,omitempty"`
	// Orphans are stored orders of users Redis does not hold as buyers
	// (Redis lost data, or a different ref): reported, not repaired.
	Orphans  []string `json:"orphans,omitempty"`
	Repaired int      `json:"repaired"`
	Loaded   bool     `json:"loaded"`
	// Oversold is how many stored orders exceed stock_total (PostgreSQL's
	// total); must be 0.
	Oversold int64 `json:"oversold"`
	// Stranded are the order refs of outbox entries pending in the relay
	// group, untouched for StrandedAfter while a relay is alive (see the
	// package doc); RepairedStranded of them were handed back.
	Stranded         []string `json:"stranded,omitempty"`
	RepairedStranded int      `json:"repaired_stranded"`
	// Waiting is how many outbox entries (pending or unread) are older than
	// StrandedAfter without being stranded: a backlog (no relay alive, or
	// the broker down). OldestWaitingMs is the age of the oldest outbox
	// entry, waiting or not.
	Waiting         int64 `json:"waiting"`
	OldestWaitingMs int64 `json:"oldest_waiting_ms"`
	// MaxPerNetwork is the item's max_per_network (0: no limit);
	// OverNetwork names every registration network holding more units
	// than that, in PostgreSQL's orders or in Redis's per-network counts
	// ("<network>: <units>"); must be empty.
	MaxPerNetwork int64    `json:"max_per_network,omitempty"`
	OverNetwork   []string `json:"over_network,omitempty"`
}

// OK reports whether the item adds up.
func (r ItemReport) OK() bool {
	return r.CounterDiff == 0 && len(r.Missing) == 0 && len(r.Orphans) == 0 && r.Oversold == 0 && len(r.Stranded) == 0 &&
		len(r.OverNetwork) == 0
}

// Report is the finding for every item checked.
type Report struct {
	Items      []ItemReport `json:"items"`
	Duplicates int64        `json:"duplicate_orders"`
	// RelaysAlive are the relays whose heartbeat was present.
	RelaysAlive []string `json:"relays_alive"`
	// StrandedAfterMs is the bound used for stranded and waiting.
	StrandedAfterMs int64 `json:"stranded_after_ms"`
}

// OK reports whether everything adds up.
func (r Report) OK() bool {
	if r.Duplicates != 0 {
		return false
	}
	for _, it := range r.Items {
		if !it.OK() {
			return false
		}
	}
	return true
}

// Waiting is how many outbox entries wait longer than StrandedAfter
// without being stranded (a backlog).
func (r Report) Waiting() int64 {
	var n int64
	for _, it := range r.Items {
		n += it.Waiting
	}
	return n
}

// WaitingReason says why entries wait: no relay alive, or (with one alive)
// the broker down or the relay behind.
func (r Report) WaitingReason() string {
	if len(r.RelaysAlive) == 0 {
		return "no relay alive: relay down"
	}
	return "relay alive: broker down or relay behind"
}

// Run checks every item.
func Run(ctx context.Context, db Catalog, st Stock, opt Options) (Report, error) {
	if opt.StrandedAfter <= 0 {
		opt.StrandedAfter = DefaultStrandedAfter
	}
	items, err := db.Items(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("listing items: %w", err)
	}
	totals := make(map[int64]int64, len(items))
	maxNet := make(map[int64]int64, len(items))
	ids := opt.Items
	for _, it := range items {
		totals[it.ID] = it.Stock
		maxNet[it.ID] = it.MaxPerNetwork
		if len(opt.Items) == 0 {
			ids = append(ids, it.ID)
		}
	}
	rep := Report{RelaysAlive: []string{}, StrandedAfterMs: opt.StrandedAfter.Milliseconds()}
	for _, id := range ids {
		ir, err := checkItem(ctx, db, st, id, opt)
		if err != nil {
			return Report{}, err
		}
		total, known := totals[id]
		if !known {
			total = ir.StockTotal
		}
		ir.Oversold = max(ir.Orders-total, 0)
		if ir.MaxPerNetwork = maxNet[id]; ir.MaxPerNetwork > 0 {
			if ir.OverNetwork, err = overNetwork(ctx, db, st, id, ir.MaxPerNetwork); err != nil {
				return Report{}, err
			}
		}
		rep.Items = append(rep.Items, ir)
	}
	// The relay side last: an entry still stranded after the settle wait.
	live, err := st.LiveRelays(ctx)
	if err != nil {
		return Report{}, err
	}
	for id := range live {
		rep.RelaysAlive = append(rep.RelaysAlive, id)
	}
	sort.Strings(rep.RelaysAlive)
	for i := range rep.Items {
		if err := checkRelay(ctx, st, &rep.Items[i], live, opt); err != nil {
			return Report{}, err
		}
	}
	dups, err := db.DuplicateOrders(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("counting duplicate orders: %w", err)
	}
	rep.Duplicates = dups
	return rep, nil
}

func checkItem(ctx context.Context, db Catalog, st Stock, id int64, opt Options) (ItemReport, error) {
	deadline := time.Now().Add(opt.Settle)
	for {
		ir, err := snapshot(ctx, db, st, id)
		if err != nil {
			return ItemReport{}, err
		}
		if len(ir.Missing) == 0 || time.Now().After(deadline) {
			if opt.Repair && ir.Loaded {
				for _, ref := range ir.Missing {
					user := ir.missingUsers[ref]
					if err := st.Requeue(ctx, seckill.OrderMessage{OrderRef: ref, UserID: user, ItemID: id}); err != nil {
						return ItemReport{}, err
					}
					ir.Repaired++
				}
			}
			return ir.ItemReport, nil
		}
		select {
		case <-ctx.Done():
			return ItemReport{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkRelay classifies the item's outbox entries: stranded, waiting, or
// moving; and hands stranded ones back when repairing.
func checkRelay(ctx context.Context, st Stock, ir *ItemReport, live map[string]stock.RelayBeat, opt Options) error {
	ob, err := st.OutboxState(ctx, ir.ItemID)
	if err != nil {
		return err
	}
	var maxSteal time.Duration
	for _, b := range live {
		maxSteal = max(maxSteal, time.Duration(b.StealAfterMs)*time.Millisecond)
	}
	age := func(id string) time.Duration { return max(ob.Now.Sub(stock.IDTime(id)), 0) }
	var oldest time.Duration
	var stranded []stock.PendingEntry
	for _, p := range ob.Pending {
		if p.Ref == "" {
			continue // deleted after its confirm, ack pending: not an order
		}
		oldest = max(oldest, age(p.ID))
		_, ownerAlive := live[p.Consumer]
		switch {
		case ownerAlive && p.Idle > opt.StrandedAfter:
			stranded = append(stranded, p)
		case !ownerAlive && len(live) > 0 && p.Idle > opt.StrandedAfter+maxSteal:
			stranded = append(stranded, p)
		case age(p.ID) > opt.StrandedAfter:
			ir.Waiting++
		}
	}
	for _, id := range ob.Unread {
		a := age(id)
		oldest = max(oldest, a)
		if a > opt.StrandedAfter {
			ir.Waiting++
		}
	}
	ir.OldestWaitingMs = oldest.Milliseconds()
	for _, p := range stranded {
		ir.Stranded = append(ir.Stranded, p.Ref)
		if !opt.Repair {
			continue
		}
		newID, err := st.RequeueStranded(ctx, ir.ItemID, p.ID, opt.StrandedAfter)
		if err != nil {
			return err
		}
		if newID != "" {
			ir.RepairedStranded++
		}
	}
	sort.Strings(ir.Stranded)
	return nil
}

// overNetwork lists the registration networks holding more than max units
// of an item: by the orders PostgreSQL stored, and by Redis's per-network
// counts (which include orders still on their way).
func overNetwork(ctx context.Context, db Catalog, st Stock, id, max int64) ([]string, error) {
	nets, err := db.OrderNetworks(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reading buyers' networks of item %d: %w", id, err)
	}
	stored := map[string]int64{}
	for _, n := range nets {
		stored[n]++
	}
	live, err := st.Networks(ctx, id)
	if err != nil {
		return nil, err
	}
	var over []string
	for what, counts := range map[string]map[string]int64{"stored": stored, "redis": live} {
		for n, c := range counts {
			if c > max {
				over = append(over, fmt.Sprintf("%s: %d units (%s)", n, c, what))
			}
		}
	}
	sort.Strings(over)
	return over, nil
}

type snap struct {
	ItemReport
	missingUsers map[string]int64
}

func snapshot(ctx context.Context, db Catalog, st Stock, id int64) (snap, error) {
	// An order moves buyers -> outbox -> queue -> database, so reading in
	// that order means a buyer found in neither later read is really
	// missing or in flight, never just moved between two reads.
	c, err := st.Counters(ctx, id)
	if err != nil {
		return snap{}, err
	}
	buyers, err := st.Buyers(ctx, id)
	if err != nil {
		return snap{}, err
	}
	outbox, err := st.OutboxRefs(ctx, id)
	if err != nil {
		return snap{}, err
	}
	orders, err := db.OrderRefs(ctx, id)
	if err != nil {
		return snap{}, fmt.Errorf("reading orders of item %d: %w", id, err)
	}
	failed, err := db.CountFailed(ctx, id)
	if err != nil {
		return snap{}, fmt.Errorf("counting failed orders of item %d: %w", id, err)
	}
	s := snap{ItemReport: ItemReport{
		ItemID: id, StockTotal: c.StockTotal, StockLeft: c.StockLeft, Reserved: int64(len(buyers)),
		Orders: int64(len(orders)), OutboxPending: c.OutboxPending, Failed: failed, Loaded: c.Loaded,
	}, missingUsers: map[string]int64{}}
	if !c.Loaded {
		return s, nil
	}
	s.CounterDiff = c.StockTotal - c.StockLeft - c.Reserved
	for user, ref := range buyers {
		if orders[user] == ref || outbox[ref] {
			continue
		}
		if _, stored := orders[user]; stored {
			continue // a different ref stored for this user: counted as orphan below
		}
		s.Missing = append(s.Missing, ref)
		s.missingUsers[ref] = user
	}
	for user, ref := range orders {
		if buyers[user] != ref {
			s.Orphans = append(s.Orphans, ref)
		}
	}
	sort.Strings(s.Missing)
	sort.Strings(s.Orphans)
	s.InFlight = int64(len(s.Missing))
	return s, nil
}

// Print writes a human-readable report.
func Print(w io.Writer, rep Report) {
	fmt.Fprintf(w, "%-8s %8s %8s %8s %8s %8s %9s %7s %6s %7s %7s %8s %8s %8s %7s %8s  %s\n",
		"item", "total", "left", "reserved", "orders", "outbox", "in_flight", "failed", "diff", "missing", "orphans", "repaired",
		"oversold", "stranded", "waiting", "oldest_s", "verdict")
	for _, it := range rep.Items {
		verdict := "ok"
		switch {
		case !it.OK():
			verdict = "MISMATCH"
		case it.Waiting > 0:
			verdict = "waiting"
		}
		if !it.Loaded {
			verdict = "not loaded in redis"
		}
		fmt.Fprintf(w, "%-8d %8d %8d %8d %8d %8d %9d %7d %6d %7d %7d %8d %8d %8d %7d %8.1f  %s\n",
			it.ItemID, it.StockTotal, it.StockLeft, it.Reserved, it.Orders, it.OutboxPending, it.InFlight,
			it.Failed, it.CounterDiff, len(it.Missing), len(it.Orphans), it.Repaired+it.RepairedStranded,
			it.Oversold, len(it.Stranded), it.Waiting, float64(it.OldestWaitingMs)/1000, verdict)
		for _, ref := range it.Stranded {
			fmt.Fprintf(w, "  item %d: order %s stranded in the relay group's pending list\n", it.ItemID, ref)
		}
		for _, n := range it.OverNetwork {
			fmt.Fprintf(w, "  item %d: network %s, over max_per_network %d\n", it.ItemID, n, it.MaxPerNetwork)
		}
	}
	fmt.Fprintf(w, "duplicate orders (user, item) in PostgreSQL: %d\n", rep.Duplicates)
	if len(rep.RelaysAlive) == 0 {
		fmt.Fprintln(w, "relays alive: none")
	} else {
		fmt.Fprintf(w, "relays alive: %s\n", strings.Join(rep.RelaysAlive, ", "))
	}
	if n := rep.Waiting(); n > 0 {
		fmt.Fprintf(w, "backlog: %d orders waiting in the outbox longer than %s (%s)\n",
			n, time.Duration(rep.StrandedAfterMs)*time.Millisecond, rep.WaitingReason())
	}
	switch {
	case !rep.OK():
		fmt.Fprintln(w, "reconcile: MISMATCH")
	case rep.Waiting() > 0:
		fmt.Fprintln(w, "reconcile: everything adds up, but orders are waiting (backlog)")
	default:
		fmt.Fprintln(w, "reconcile: everything adds up")
	}
}
