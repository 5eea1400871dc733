// Package stock keeps the live counters of every sale in Redis: units left,
// who holds one, and the outbox of accepted orders waiting for RabbitMQ.
// Every change is one Lua script, so no unit is ever sold twice.
package stock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/rkeys"
)

// Outcome is the answer of a reservation.
type Outcome string

const (
	Queued        Outcome = "queued"
	AlreadyBought Outcome = "already_bought"
	SoldOut       Outcome = "sold_out"
	NotLive       Outcome = "not_live"
	UnknownItem   Outcome = "unknown_item"
	NotEligible   Outcome = "not_eligible"
)

// Reasons of a NotEligible outcome.
const (
	ReasonUnknownAccount = "unknown_account" // the sale has rules and the account's creation time is unknown
	ReasonAccountAge     = "account_age"     // made after starts_at - min_account_age
	ReasonNetwork        = "network"         // its network holds max_per_network units already
)

// Reservation is what Reserve answers.
type Reservation struct {
	Outcome   Outcome
	OrderRef  string // the order of this user for this item, when one exists
	StockLeft int64
	Reason    string // why NotEligible (Reason*)
}

// Store runs the stock scripts on one Redis (or Redis Cluster).
type Store struct {
	rdb   redis.UniversalClient
	ks    rkeys.Space // every key (internal/rkeys)
	guard *Guard      // nil: unguarded, Reserve loads its script when missing
}

// New returns a Store whose keys all start with prefix (for example
// "seckill:"); tests use a prefix of their own.
func New(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, ks: rkeys.Space(prefix)}
}

// Client returns the Redis client.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// relayGroup is the consumer group of the relay on every outbox stream.
const relayGroup = "relay"

// LoadItem makes an item purchasable in Redis, or refreshes its window,
// total and eligibility rules. Live counters are never overwritten. sold
// lists the orders already stored in PostgreSQL (user id -> order ref) and
// nets the registration networks of those buyers (user id -> network, for
// an item with max_per_network); they are used only when Redis holds no
// counter for the item (a new item, or a Redis that lost its data), and the
// per-network counts are then counted again from the buyers.
func (s *Store) LoadItem(ctx context.Context, it seckill.Item, sold, nets map[int64]string) error {
	k := s.ks.Item(it.ID)
	exists, err := s.rdb.Exists(ctx, k.Stock).Result()
	if err != nil {
		return fmt.Errorf("loading item %d: %w", it.ID, unavailable(err))
	}
	if exists == 0 && len(sold) > 0 {
		pipe := s.rdb.Pipeline()
		for user, ref := range sold {
			pipe.HSetNX(ctx, k.Buyers, strconv.FormatInt(user, 10), storedRecord(it, ref, nets[user]))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("loading buyers of item %d: %w", it.ID, unavailable(err))
		}
	}
	if err := s.rdb.XGroupCreateMkStream(ctx, k.Outbox, relayGroup, "0").Err(); err != nil && !isBusyGroup(err) {
		return fmt.Errorf("creating outbox of item %d: %w", it.ID, unavailable(err))
	}
	if err := s.rdb.SAdd(ctx, s.ks.Outboxes(), k.Outbox).Err(); err != nil {
		return fmt.Errorf("registering outbox of item %d: %w", it.ID, unavailable(err))
	}
	err = loadScript.Run(ctx, s.rdb, []string{k.Meta, k.Stock, k.Buyers, k.Networks},
		it.Stock, it.StartsAt.UnixMilli(), it.EndsAt.UnixMilli(), it.MinAccountAge.D().Milliseconds(), it.MaxPerNetwork).Err()
	if err != nil {
		return fmt.Errorf("loading item %d: %w", it.ID, unavailable(err))
	}
	return nil
}

func isBusyGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "BUSYGROUP") }

// Reserve takes one unit of an item for an account, or says why not.
// orderRef names the order if one is taken; requestID makes the call
// idempotent: the same request sent again returns the first answer and
// takes nothing more. The account's creation time and network are checked
// against the item's eligibility rules in the same script (NotEligible).
func (s *Store) Reserve(ctx context.Context, itemID int64, acct seckill.Account, requestID, orderRef string) (Reservation, error) {
	if strings.ContainsRune(requestID, '|') || strings.ContainsRune(acct.Network, '|') {
		return Reservation{}, seckill.Errorf(seckill.EInvalid, "request id and network must not contain '|'")
	}
	userID := acct.ID
	var created int64
	if acct.Known() {
		created = max(acct.CreatedAt.UnixMilli(), 1)
	}
	k := s.ks.Item(itemID)
	keys := []string{k.Meta, k.Stock, k.Buyers, k.Outbox, k.Networks}
	var res []string
	var err error
	if g := s.guard; g != nil {
		if g.Frozen() {
			return Reservation{}, fmt.Errorf("reserving item %d: %w", itemID, ErrFrozen)
		}
		// EVALSHA and never EVAL: NOSCRIPT means this Redis restarted
		// (or lost its scripts) since it was last verified.
		res, err = s.rdb.EvalSha(ctx, reserveScript.Hash(), keys, userID, requestID, orderRef, itemID, created, acct.Network).StringSlice()
		if err != nil {
			return Reservation{}, fmt.Errorf("reserving item %d: %w", itemID, g.failed(err))
		}
	} else {
		res, err = reserveScript.Run(ctx, s.rdb, keys, userID, requestID, orderRef, itemID, created, acct.Network).StringSlice()
		if err != nil && isUnavailable(err) {
			err = reservationUnavailable(err)
		}
		if err != nil {
			return Reservation{}, fmt.Errorf("reserving item %d: %w", itemID, err)
		}
	}
	if len(res) != 3 {
		return Reservation{}, fmt.Errorf("reserving item %d: unexpected reply %q", itemID, res)
	}
	left, _ := strconv.ParseInt(res[2], 10, 64)
	if Outcome(res[0]) == NotEligible {
		return Reservation{Outcome: NotEligible, Reason: res[1], StockLeft: left}, nil
	}
	return Reservation{Outcome: Outcome(res[0]), OrderRef: res[1], StockLeft: left}, nil
}

// Release gives the unit of a failed order back to stock. It returns false
// when the buyer record no longer names that order (already released).
func (s *Store) Release(ctx context.Context, itemID, userID int64, orderRef string) (bool, error) {
	k := s.ks.Item(itemID)
	n, err := releaseScript.Run(ctx, s.rdb, []string{k.Meta, k.Stock, k.Buyers, k.Networks}, userID, orderRef).Int()
	if err != nil {
		return false, fmt.Errorf("releasing order %s: %w", orderRef, unavailable(err))
	}
	return n == 1, nil
}

// Buyer returns the order ref of the unit a user holds, if any.
func (s *Store) Buyer(ctx context.Context, itemID, userID int64) (string, bool, error) {
	v, err := s.rdb.HGet(ctx, s.ks.Item(itemID).Buyers, strconv.FormatInt(userID, 10)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("reading buyer: %w", unavailable(err))
	}
	ref, _, _ := strings.Cut(v, "|")
	return ref, true, nil
}

// Buyers returns every holder of a unit of the item: user id -> order ref.
func (s *Store) Buyers(ctx context.Context, itemID int64) (map[int64]string, error) {
	m, err := s.rdb.HGetAll(ctx, s.ks.Item(itemID).Buyers).Result()
	if err != nil {
		return nil, fmt.Errorf("reading buyers of item %d: %w", itemID, unavailable(err))
	}
	out := make(map[int64]string, len(m))
	for u, v := range m {
		id, err := strconv.ParseInt(u, 10, 64)
		if err != nil {
			continue
		}
		ref, _, _ := strings.Cut(v, "|")
		out[id] = ref
	}
	return out, nil
}

// Networks returns the units held per registration network of an item
// (counted only for items with max_per_network).
func (s *Store) Networks(ctx context.Context, itemID int64) (map[string]int64, error) {
	m, err := s.rdb.HGetAll(ctx, s.ks.Item(itemID).Networks).Result()
	if err != nil {
		return nil, fmt.Errorf("reading networks of item %d: %w", itemID, unavailable(err))
	}
	out := make(map[string]int64, len(m))
	for n, v := range m {
		out[n], _ = strconv.ParseInt(v, 10, 64)
	}
	return out, nil
}

// Counters are the Redis side of an item's stats.
type Counters struct {
	Loaded        bool
	StockTotal    int64
	StockLeft     int64
	Reserved      int64
	OutboxPending int64
	Released      int64
}

// Counters reads an item's counters in one atomic MULTI/EXEC (all keys
// share the item's hash slot), so StockTotal = StockLeft + Reserved holds
// in what it returns even during a sale.
func (s *Store) Counters(ctx context.Context, itemID int64) (Counters, error) {
	k := s.ks.Item(itemID)
	pipe := s.rdb.TxPipeline()
	meta := pipe.HMGet(ctx, k.Meta, "total", "released")
	left := pipe.Get(ctx, k.Stock)
	buyers := pipe.HLen(ctx, k.Buyers)
	outbox := pipe.XLen(ctx, k.Outbox)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Counters{}, fmt.Errorf("reading counters of item %d: %w", itemID, unavailable(err))
	}
	var c Counters
	vals := meta.Val()
	if len(vals) == 2 && vals[0] != nil {
		c.Loaded = true
		c.StockTotal = toInt(vals[0])
		c.Released = toInt(vals[1])
	}
	c.StockLeft, _ = left.Int64()
	c.Reserved = buyers.Val()
	c.OutboxPending = outbox.Val()
	return c, nil
}

func toInt(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// OutboxRefs returns the order refs waiting in an item's outbox, for
// reconcile.
func (s *Store) OutboxRefs(ctx context.Context, itemID int64) (map[string]bool, error) {
	msgs, err := s.rdb.XRange(ctx, s.ks.Item(itemID).Outbox, "-", "+").Result()
	if err != nil {
		return nil, fmt.Errorf("reading outbox of item %d: %w", itemID, unavailable(err))
	}
	out := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		if ref, ok := m.Values["ref"].(string); ok {
			out[ref] = true
		}
	}
	return out, nil
}

// Requeue appends an order to the outbox again, for reconcile to repair an
// order that Redis holds but that reached neither RabbitMQ nor PostgreSQL.
// The worker stores an order ref at most once, so this never makes a second
// order.
func (s *Store) Requeue(ctx context.Context, m seckill.OrderMessage) error {
	k := s.ks.Item(m.ItemID)
	err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: k.Outbox, Values: []any{
		"ref", m.OrderRef, "user", m.UserID, "item", m.ItemID, "req", m.RequestID,
	}}).Err()
	if err != nil {
		return fmt.Errorf("requeueing order %s: %w", m.OrderRef, unavailable(err))
	}
	return nil
}
