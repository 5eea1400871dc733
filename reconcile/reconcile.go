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
package reconcile

import (
	"context"
	"fmt"
	"io"
	"sort"
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
}

// Stock is the live side (package stock).
type Stock interface {
	Counters(ctx context.Context, itemID int64) (stock.Counters, error)
	Buyers(ctx context.Context, itemID int64) (map[int64]string, error)
	OutboxRefs(ctx context.Context, itemID int64) (map[string]bool, error)
	Requeue(ctx context.Context, m seckill.OrderMessage) error
}

// Options tune a run.
type Options struct {
	Items  []int64       // only these items; all when empty
	Settle time.Duration // how long to wait for in-flight orders to land
	Repair bool          // requeue missing orders
}

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
}

// OK reports whether the item adds up.
func (r ItemReport) OK() bool {
	return r.CounterDiff == 0 && len(r.Missing) == 0 && len(r.Orphans) == 0
}

// Report is the finding for every item checked.
type Report struct {
	Items      []ItemReport `json:"items"`
	Duplicates int64        `json:"duplicate_orders"`
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

// Run checks every item.
func Run(ctx context.Context, db Catalog, st Stock, opt Options) (Report, error) {
	ids := opt.Items
	if len(ids) == 0 {
		items, err := db.Items(ctx)
		if err != nil {
			return Report{}, fmt.Errorf("listing items: %w", err)
		}
		for _, it := range items {
			ids = append(ids, it.ID)
		}
	}
	var rep Report
	for _, id := range ids {
		ir, err := checkItem(ctx, db, st, id, opt)
		if err != nil {
			return Report{}, err
		}
		rep.Items = append(rep.Items, ir)
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
	fmt.Fprintf(w, "%-8s %8s %8s %8s %8s %8s %9s %7s %6s %7s %7s %8s  %s\n",
		"item", "total", "left", "reserved", "orders", "outbox", "in_flight", "failed", "diff", "missing", "orphans", "repaired", "verdict")
	for _, it := range rep.Items {
		verdict := "ok"
		if !it.OK() {
			verdict = "MISMATCH"
		}
		if !it.Loaded {
			verdict = "not loaded in redis"
		}
		fmt.Fprintf(w, "%-8d %8d %8d %8d %8d %8d %9d %7d %6d %7d %7d %8d  %s\n",
			it.ItemID, it.StockTotal, it.StockLeft, it.Reserved, it.Orders, it.OutboxPending, it.InFlight,
			it.Failed, it.CounterDiff, len(it.Missing), len(it.Orphans), it.Repaired, verdict)
	}
	fmt.Fprintf(w, "duplicate orders (user, item) in PostgreSQL: %d\n", rep.Duplicates)
	if rep.OK() {
		fmt.Fprintln(w, "reconcile: everything adds up")
	} else {
		fmt.Fprintln(w, "reconcile: MISMATCH")
	}
}
