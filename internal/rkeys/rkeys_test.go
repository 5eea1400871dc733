package rkeys_test

import (
	"testing"

	"seckill/internal/rkeys"
)

// TestKeysPinned pins every key byte for byte: a Redis already in service
// holds these names (counters, outboxes, paths), and a script's keys must
// share one hash slot ({<item>}) in Redis Cluster.
func TestKeysPinned(t *testing.T) {
	s := rkeys.Space("seckill:")
	it := s.Item(42)
	for _, c := range []struct{ got, want string }{
		{it.Meta, "seckill:item:{42}:meta"},
		{it.Stock, "seckill:item:{42}:stock"},
		{it.Buyers, "seckill:item:{42}:buyers"},
		{it.Outbox, "seckill:item:{42}:outbox"},
		{it.Networks, "seckill:item:{42}:networks"},
		{s.Outboxes(), "seckill:outboxes"},
		{s.VerifiedRunID(), "seckill:redis:verified_run_id"},
		{s.RelayAlive("relay-1"), "seckill:relay:alive:relay-1"},
		{s.RelayAlive("*"), "seckill:relay:alive:*"},
		{s.Path(42, 7), "seckill:path:{42}:7"},
		{s.PathAttempt(42, 7), "seckill:path:{42}:7:attempt"},
		{s.SharedPath(42, "0123abcd"), "seckill:path:{42}:shared:0123abcd"},
		{s.EdgeDefences(), "seckill:edge:defences"},
		{s.EdgeEvents(), "seckill:edge:events"},
		{s.Challenge("c1"), "seckill:ch:c1"},
		{s.Queue(42).Tickets, "seckill:queue:{42}:tickets"},
		{s.Queue(42).Waiting, "seckill:queue:{42}:waiting"},
		{s.Queue(42).Active, "seckill:queue:{42}:active"},
		{s.Queue(42).Seen, "seckill:queue:{42}:seen"},
		{s.Queue(42).State, "seckill:queue:{42}:state"},
		{s.Queue(42).Held, "seckill:queue:{42}:held"},
		{s.Budget("192.0.2.0/24", "accounts-per-ip", "192.0.2.7"), "seckill:budget:{192.0.2.0/24}:accounts-per-ip:192.0.2.7"},
		{rkeys.Space("").Item(-1).Stock, "item:{-1}:stock"},
		{rkeys.Space("t_x:").Path(1, 2), "t_x:path:{1}:2"},
	} {
		if c.got != c.want {
			t.Errorf("key %q, want %q", c.got, c.want)
		}
	}
}

// The keys a script takes together hash to one slot: the part between the
// first { and the next } is the item id.
func TestHashTags(t *testing.T) {
	s := rkeys.Space("seckill:")
	it := s.Item(9)
	for _, k := range []string{it.Meta, it.Stock, it.Buyers, it.Outbox, it.Networks, s.Path(9, 3), s.PathAttempt(9, 3), s.SharedPath(9, "ab"),
		s.Queue(9).Tickets, s.Queue(9).Waiting, s.Queue(9).Active, s.Queue(9).Seen, s.Queue(9).State, s.Queue(9).Held} {
		if tag := hashTag(k); tag != "9" {
			t.Errorf("%s: hash tag %q, want 9", k, tag)
		}
	}
	for _, k := range []string{s.Budget("2001:db8:1::/48", "accounts-per-ip", "2001:db8:1:2::/64"), s.Budget("2001:db8:1::/48", "accounts-per-network", "2001:db8:1::/48")} {
		if tag := hashTag(k); tag != "2001:db8:1::/48" {
			t.Errorf("%s: hash tag %q, want the network", k, tag)
		}
	}
}

// hashTag is Redis Cluster's rule (CLUSTER KEYSLOT): the text between the
// first '{' and the first '}' after it, when not empty.
func hashTag(k string) string {
	for i := 0; i < len(k); i++ {
		if k[i] == '{' {
			for j := i + 1; j < len(k); j++ {
				if k[j] == '}' {
					if j == i+1 {
						return k
					}
					return k[i+1 : j]
				}
			}
			return k
		}
	}
	return k
}
