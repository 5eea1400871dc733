// Package rkeys is the whole Redis key space of seckill, in one file: every
// key (and the pub/sub channel) a part reads or writes is built here from
// the deployment's prefix (--redis-prefix, "seckill:" by default; tests use
// a prefix of their own). Nothing else joins a prefix to a key name.
//
//	key                                       type    owner    what
//	<p>item:{<item>}:meta                     hash    stock    total, starts_ms, ends_ms, released, min_age_ms, max_net
//	<p>item:{<item>}:stock                    string  stock    units left
//	<p>item:{<item>}:buyers                   hash    stock    user id -> "<order ref>|<request id>[|<network>]"
//	<p>item:{<item>}:networks                 hash    stock    registration network -> units held (max_per_network)
//	<p>item:{<item>}:outbox                   stream  stock    accepted orders not yet confirmed by RabbitMQ
//	                                                           (fields ref, user, item, req; group "relay")
//	<p>outboxes                               set     stock    every outbox stream, read by the relay
//	<p>redis:verified_run_id                  string  stock    run_id of the Redis server last verified (Guard)
//	<p>relay:alive:<relay id>                 string  stock    heartbeat of a live relay (JSON), TTL a few seconds
//	<p>path:{<item>}:<user>                   string  edge     the hidden purchase path of a user, TTL
//	<p>path:{<item>}:<user>:attempt           string  edge     set when a buy used that path, same TTL
//	<p>path:{<item>}:shared:<path>            string  edge     a path valid for any user (path binding off)
//	<p>queue:{<item>}:tickets                 hash    edge     waiting room: user id -> ticket id (one per account)
//	<p>queue:{<item>}:waiting                 zset    edge     waiting users by place (pre-queue: random in [0,1); then 1, 2, ...)
//	<p>queue:{<item>}:active                  zset    edge     admitted users by admitted-until (unix ms)
//	<p>queue:{<item>}:seen                    zset    edge     waiting users by last poll (unix ms): abandoned ones are skipped
//	<p>queue:{<item>}:held                    zset    edge     admitted users holding a unit, by admitted-until: back to active when their order fails
//	<p>queue:{<item>}:state                   hash    edge     seq, last (ms), credit, admitted (total), released (last seen)
//	<p>edge:defences                          hash    edge     item id -> the defence switches (JSON)
//	<p>edge:events                            pub/sub edge     sold-out, defences and catalogue events
//	<p>ch:<challenge id>                      hash    captcha  a challenge: kind, user, item, answer or seed, difficulty
//	                                                           (registration: user = "register <network>", no item)
//	<p>budget:{<scope>}:<name>:<key>          zset    limit    a shared budget's takes in its window: attempt id -> ms
//	                                                           (registration: scope = the /24 or /48, names
//	                                                           accounts-per-ip and accounts-per-network), TTL the window
//
// The keys of one item share the hash tag {<item>}, so every script stays
// valid in Redis Cluster: the stock scripts touch meta, stock, buyers and
// outbox together; the edge's path scripts touch a path and its attempt
// mark together. A key outside any item's slot (outboxes, the heartbeat) is
// written by a command of its own.
//
// The strings are a contract with the data already in a Redis: a change
// here strands live counters and outboxes (rkeys_test.go pins them).
package rkeys

import "strconv"

// Space is the key space under one prefix.
type Space string

// Item holds the keys of one item, all in the item's hash slot.
type Item struct {
	Meta, Stock, Buyers, Outbox string
	// Networks counts the units held per registration network (items
	// with max_per_network).
	Networks string
}

// Item returns the keys of an item.
func (p Space) Item(id int64) Item {
	base := string(p) + "item:{" + strconv.FormatInt(id, 10) + "}:"
	return Item{Meta: base + "meta", Stock: base + "stock", Buyers: base + "buyers", Outbox: base + "outbox", Networks: base + "networks"}
}

// Outboxes is the set of every outbox stream.
func (p Space) Outboxes() string { return string(p) + "outboxes" }

// VerifiedRunID holds the run_id of the Redis server the stock guard last
// verified.
func (p Space) VerifiedRunID() string { return string(p) + "redis:verified_run_id" }

// RelayAlive is the heartbeat key of a relay; RelayAlive("*") matches every
// one, and the relay id is what follows RelayAlive("").
func (p Space) RelayAlive(relayID string) string { return string(p) + "relay:alive:" + relayID }

// Path holds the hidden purchase path issued to a user for an item.
func (p Space) Path(itemID, userID int64) string {
	return string(p) + "path:{" + strconv.FormatInt(itemID, 10) + "}:" + strconv.FormatInt(userID, 10)
}

// PathAttempt marks a path as used by a purchase attempt (same slot as
// Path).
func (p Space) PathAttempt(itemID, userID int64) string { return p.Path(itemID, userID) + ":attempt" }

// SharedPath holds a path valid for any user of an item.
func (p Space) SharedPath(itemID int64, path string) string {
	return string(p) + "path:{" + strconv.FormatInt(itemID, 10) + "}:shared:" + path
}

// Queue holds the keys of an item's waiting room, in the item's hash slot
// (its admission script also reads the item's stock and buyers).
type Queue struct {
	Tickets, Waiting, Active, Seen, State string
	Held                                  string
}

// Queue returns the keys of an item's waiting room.
func (p Space) Queue(itemID int64) Queue {
	base := string(p) + "queue:{" + strconv.FormatInt(itemID, 10) + "}:"
	return Queue{Tickets: base + "tickets", Waiting: base + "waiting", Active: base + "active", Seen: base + "seen", State: base + "state",
		Held: base + "held"}
}

// EdgeDefences is the hash of every item's defence switches.
func (p Space) EdgeDefences() string { return string(p) + "edge:defences" }

// EdgeEvents is the pub/sub channel of the edges' events.
func (p Space) EdgeEvents() string { return string(p) + "edge:events" }

// Challenge holds one human challenge.
func (p Space) Challenge(id string) string { return string(p) + "ch:" + id }

// Budget holds the takes of one quota of a shared budget (limit.Budget);
// the quotas of one scope share its hash slot, so one script takes them
// all.
func (p Space) Budget(scope, name, key string) string {
	return string(p) + "budget:{" + scope + "}:" + name + ":" + key
}
