package stock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The relay side of the outbox that reconcile and the admin stats read: the
// heartbeat of a live relay (internal/rkeys RelayAlive, JSON RelayBeat, TTL
// a few seconds) and the state of outbox entries.
//
// An entry of an outbox stream is in one of two states:
//
//	unread   not yet handed to any relay (id above the group's last-delivered-id)
//	pending  handed to a relay (XREADGROUP, XCLAIM), in the group's pending
//	         list until XACK after RabbitMQ confirmed it
//
// A pending entry whose relay is alive and that nobody touched for long is
// stranded: its relay read it but does not hold it (a lost reply, a bug).

// RelayBeat is the value of a relay's heartbeat key.
type RelayBeat struct {
	ID           string    `json:"id"`
	At           time.Time `json:"at"`
	PID          int       `json:"pid"`
	Host         string    `json:"host"`
	ClaimIdleMs  int64     `json:"claim_idle_ms"`
	StealAfterMs int64     `json:"steal_after_ms"`
}

// Heartbeat writes the heartbeat of relay id with the given time to live.
// SET with PX: a blind retry is harmless.
func (s *Store) Heartbeat(ctx context.Context, b RelayBeat, ttl time.Duration) error {
	if b.At.IsZero() {
		b.At = time.Now().UTC()
	}
	if b.PID == 0 {
		b.PID = os.Getpid()
	}
	if b.Host == "" {
		b.Host, _ = os.Hostname()
	}
	v, _ := json.Marshal(b)
	if err := s.rdb.Set(ctx, s.ks.RelayAlive(b.ID), v, ttl).Err(); err != nil {
		return fmt.Errorf("writing relay heartbeat: %w", err)
	}
	return nil
}

// StopHeartbeat deletes relay id's heartbeat (a graceful stop).
func (s *Store) StopHeartbeat(ctx context.Context, id string) error {
	return s.rdb.Del(ctx, s.ks.RelayAlive(id)).Err()
}

// LiveRelays returns the heartbeats present: relay id -> beat.
func (s *Store) LiveRelays(ctx context.Context) (map[string]RelayBeat, error) {
	match := s.ks.RelayAlive("*")
	var keys []string
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		iter := c.Scan(ctx, 0, match, 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		return iter.Err()
	}
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, s.rdb)
	}
	if err != nil {
		return nil, fmt.Errorf("listing relay heartbeats: %w", err)
	}
	out := make(map[string]RelayBeat, len(keys))
	for _, k := range keys {
		v, err := s.rdb.Get(ctx, k).Bytes()
		if errors.Is(err, redis.Nil) {
			continue // expired meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("reading relay heartbeat: %w", err)
		}
		id := strings.TrimPrefix(k, s.ks.RelayAlive(""))
		var b RelayBeat
		_ = json.Unmarshal(v, &b) // an unreadable beat still says "alive"
		b.ID = id
		out[id] = b
	}
	return out, nil
}

// PendingEntry is an outbox entry handed to a relay and not yet confirmed.
type PendingEntry struct {
	ID       string
	Consumer string        // the relay holding it
	Idle     time.Duration // since a relay last read or claimed it
	Ref      string        // order ref ("" when the entry is gone)
}

// OutboxState is the relay side of one item's outbox.
type OutboxState struct {
	Pending []PendingEntry
	// Unread are the ids of the entries no relay has read yet, oldest first.
	Unread []string
	// Now is Redis's clock when read (entry ids are in that clock).
	Now time.Time
}

// OutboxState reads the pending list of the relay group of an item's
// outbox, and its unread entries. Read only.
func (s *Store) OutboxState(ctx context.Context, itemID int64) (OutboxState, error) {
	stream := s.ks.Item(itemID).Outbox
	var st OutboxState
	now, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return st, fmt.Errorf("reading redis time: %w", err)
	}
	st.Now = now
	for start := "-"; ; {
		pend, err := s.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: stream, Group: relayGroup, Start: start, End: "+", Count: 1000,
		}).Result()
		if isNoGroup(err) || errors.Is(err, redis.Nil) || isNoKey(err) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("listing pending outbox entries of item %d: %w", itemID, err)
		}
		for _, p := range pend {
			st.Pending = append(st.Pending, PendingEntry{ID: p.ID, Consumer: p.Consumer, Idle: p.Idle})
		}
		if len(pend) < 1000 {
			break
		}
		start = "(" + pend[len(pend)-1].ID
	}
	// The order refs of the pending entries.
	if len(st.Pending) > 0 {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.XMessageSliceCmd, len(st.Pending))
		for i, p := range st.Pending {
			cmds[i] = pipe.XRange(ctx, stream, p.ID, p.ID)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return st, fmt.Errorf("reading pending outbox entries of item %d: %w", itemID, err)
		}
		for i, c := range cmds {
			if msgs := c.Val(); len(msgs) == 1 {
				st.Pending[i].Ref, _ = msgs[0].Values["ref"].(string)
			}
		}
	}
	last, err := s.lastDelivered(ctx, stream)
	if err != nil {
		return st, fmt.Errorf("reading the relay group of item %d: %w", itemID, err)
	}
	unread, err := s.rdb.XRange(ctx, stream, "("+last, "+").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return st, fmt.Errorf("reading unread outbox entries of item %d: %w", itemID, err)
	}
	for _, m := range unread {
		st.Unread = append(st.Unread, m.ID)
	}
	return st, nil
}

// lastDelivered is the relay group's last-delivered-id of a stream ("0-0"
// when the stream or the group does not exist).
func (s *Store) lastDelivered(ctx context.Context, stream string) (string, error) {
	groups, err := s.rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if isNoKey(err) || errors.Is(err, redis.Nil) {
			return "0-0", nil
		}
		return "", err
	}
	for _, g := range groups {
		if g.Name == relayGroup {
			return g.LastDeliveredID, nil
		}
	}
	return "0-0", nil
}

func isNoKey(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "no such key") || strings.HasPrefix(err.Error(), "ERR no such key"))
}

// OutboxAges are the ages of the oldest waiting entries of an outbox, by
// their id (the time of the reservation, Redis's clock); 0 when none.
type OutboxAges struct {
	OldestPending time.Duration // oldest entry handed to a relay, not yet confirmed
	OldestUnread  time.Duration // oldest entry no relay has read yet
}

// Oldest is the larger of the two.
func (a OutboxAges) Oldest() time.Duration { return max(a.OldestPending, a.OldestUnread) }

// OutboxAges reads the ages of the oldest pending and unread entries of an
// item's outbox. Read only: XPENDING (summary), XINFO GROUPS, XRANGE, TIME.
func (s *Store) OutboxAges(ctx context.Context, itemID int64) (OutboxAges, error) {
	pend, unread, now, err := s.oldestIDs(ctx, s.ks.Item(itemID).Outbox)
	if err != nil {
		return OutboxAges{}, fmt.Errorf("reading outbox ages of item %d: %w", itemID, unavailable(err))
	}
	return OutboxAges{OldestPending: idAge(pend, now), OldestUnread: idAge(unread, now)}, nil
}

// oldestIDs returns the lowest pending id and the lowest unread id of a
// stream ("" when none), and Redis's clock.
func (s *Store) oldestIDs(ctx context.Context, stream string) (pending, unread string, now time.Time, err error) {
	now, err = s.rdb.Time(ctx).Result()
	if err != nil {
		return "", "", now, err
	}
	sum, err := s.rdb.XPending(ctx, stream, relayGroup).Result()
	switch {
	case err == nil:
		if sum.Count > 0 {
			pending = sum.Lower
		}
	case isNoGroup(err) || isNoKey(err) || errors.Is(err, redis.Nil):
	default:
		return "", "", now, err
	}
	last, err := s.lastDelivered(ctx, stream)
	if err != nil {
		return "", "", now, err
	}
	first, err := s.rdb.XRangeN(ctx, stream, "("+last, "+", 1).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", "", now, err
	}
	if len(first) > 0 {
		unread = first[0].ID
	}
	return pending, unread, now, nil
}

// IDTime is the time an entry id names (its milliseconds part).
func IDTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || id == "" {
		return time.Time{}
	}
	return time.UnixMilli(n)
}

func idAge(id string, now time.Time) time.Duration {
	if id == "" {
		return 0
	}
	return max(now.Sub(IDTime(id)), 0)
}

// requeueStrandedScript hands a stranded entry back: it appends the entry
// again (a new id, unread: the next relay read takes it) and removes the
// stranded one (XACK + XDEL), atomically, only if the entry is still
// pending and idle at least ARGV[2] ms (a relay that took it back meanwhile
// keeps it). The worker stores an order ref once, so a relay that still
// publishes the old entry makes no second order.
//
// KEYS: outbox
// ARGV: entry id, min idle ms, group
var requeueStrandedScript = redis.NewScript(`
local p = redis.call('XPENDING', KEYS[1], ARGV[3], 'IDLE', ARGV[2], ARGV[1], ARGV[1], 1)
if #p == 0 then return '' end
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then
  redis.call('XACK', KEYS[1], ARGV[3], ARGV[1])
  return ''
end
local id = redis.call('XADD', KEYS[1], '*', unpack(e[1][2]))
redis.call('XACK', KEYS[1], ARGV[3], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return id
`)

// RequeueStranded hands back a pending entry of an item's outbox that has
// been idle at least minIdle: see requeueStrandedScript. It returns the new
// entry id, or "" when the entry was no longer stranded (nothing done). A
// blind retry after a lost reply is safe: the second run finds the old entry
// no longer pending and does nothing.
func (s *Store) RequeueStranded(ctx context.Context, itemID int64, id string, minIdle time.Duration) (string, error) {
	res, err := requeueStrandedScript.Run(ctx, s.rdb, []string{s.ks.Item(itemID).Outbox},
		id, minIdle.Milliseconds(), relayGroup).Text()
	if err != nil {
		return "", fmt.Errorf("requeueing stranded outbox entry %s of item %d: %w", id, itemID, err)
	}
	return res, nil
}

// Ping checks that the relay's Redis answers, returning its clock.
func (o *Outbox) Ping(ctx context.Context) (time.Time, error) {
	return o.s.rdb.Time(ctx).Result()
}
