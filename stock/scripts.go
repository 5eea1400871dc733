package stock

import (
	"github.com/redis/go-redis/v9"

	"seckill"
)

// The scripts take an item's keys (internal/rkeys: <prefix>item:{42}:meta,
// :stock, :buyers, :outbox), which share the hash tag {<id>} so every script
// stays valid in Redis Cluster.
//
// A script never writes before every check has passed: Redis has no rollback.

// reserveScript takes one unit for one user, atomically.
//
// KEYS: meta, stock, buyers, outbox, networks
// ARGV: user id, request id, order ref, item id, account created (unix ms,
// '0' when unknown), account network (empty: none)
//
// Replies {outcome, order ref or reason, units left}. Checks run cheapest
// and most final first. The buyer record carries the request id, so a
// retried call (go-redis retries after a lost reply) finds its own first
// answer and never takes a second unit, nor counts its network twice.
//
// Eligibility (the item's meta min_age_ms and max_net, written by the load
// script): an item with either refuses an account whose creation time is
// unknown; min_age_ms refuses an account created after starts_ms -
// min_age_ms; max_net refuses a unit to a network already holding max_net
// of them. The networks hash counts the units held per network; it moves
// with the unit in this script and in the release script, and the buyer
// record names the network it was counted under ("ref|req|network"). An
// account without a network (made in bulk) counts as a network of its own:
// it holds at most one unit anyway, so it is not counted.
//
// A guarded Store (see Guard) runs it with EVALSHA only and never falls back
// to EVAL: a Redis that restarted has an empty script cache, so its first
// reservation fails with NOSCRIPT instead of selling from counters that may
// be stale. Only Guard's recovery loads it again (SCRIPT LOAD), after the
// items are re-seeded. Redis 7.0 and later neither persist the script cache
// (RDB, AOF) nor propagate SCRIPT LOAD or EVAL to replicas, so a promoted
// replica starts without it too.
var reserveScript = redis.NewScript(reserveSrc)

const reserveSrc = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unknown_item', '', '0'}
end
local held = redis.call('HGET', KEYS[3], ARGV[1])
if held then
  local sep = string.find(held, '|', 1, true)
  local ref = string.sub(held, 1, sep - 1)
  local req = string.sub(held, sep + 1)
  local sep2 = string.find(req, '|', 1, true)
  if sep2 then req = string.sub(req, 1, sep2 - 1) end
  local left = redis.call('GET', KEYS[2]) or '0'
  if req ~= '' and req == ARGV[2] then
    return {'queued', ref, left}
  end
  return {'already_bought', ref, left}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = redis.call('HMGET', KEYS[1], 'starts_ms', 'ends_ms', 'min_age_ms', 'max_net')
if now < tonumber(w[1]) or now >= tonumber(w[2]) then
  return {'not_live', '', redis.call('GET', KEYS[2]) or '0'}
end
local minAge = tonumber(w[3] or '0') or 0
local maxNet = tonumber(w[4] or '0') or 0
local created = tonumber(ARGV[5]) or 0
if minAge > 0 or maxNet > 0 then
  if created <= 0 then
    return {'not_eligible', 'unknown_account', redis.call('GET', KEYS[2]) or '0'}
  end
  if minAge > 0 and created > tonumber(w[1]) - minAge then
    return {'not_eligible', 'account_age', redis.call('GET', KEYS[2]) or '0'}
  end
end
local left = tonumber(redis.call('GET', KEYS[2]) or '0')
if left <= 0 then
  return {'sold_out', '', '0'}
end
local net = ''
if maxNet > 0 and ARGV[6] ~= '' then
  net = ARGV[6]
  if tonumber(redis.call('HGET', KEYS[5], net) or '0') >= maxNet then
    return {'not_eligible', 'network', tostring(left)}
  end
end
left = redis.call('DECR', KEYS[2])
local rec = ARGV[3] .. '|' .. ARGV[2]
if net ~= '' then
  rec = rec .. '|' .. net
  redis.call('HINCRBY', KEYS[5], net, 1)
end
redis.call('HSET', KEYS[3], ARGV[1], rec)
redis.call('XADD', KEYS[4], '*', 'ref', ARGV[3], 'user', ARGV[1], 'item', ARGV[4], 'req', ARGV[2])
return {'queued', ARGV[3], tostring(left)}
`

// recountSrc rebuilds an item's networks hash (KEYS[4]) from its buyers
// hash (KEYS[3]): one unit per buyer record that names a network
// ("ref|req|network"). The load and reseed scripts run it after writing
// the buyers PostgreSQL holds, so the count is exact whatever Redis lost.
const recountSrc = `
local function recount()
  redis.call('DEL', KEYS[4])
  local all = redis.call('HGETALL', KEYS[3])
  for i = 2, #all, 2 do
    local v = all[i]
    local s1 = string.find(v, '|', 1, true)
    local s2 = s1 and string.find(v, '|', s1 + 1, true)
    if s2 and s2 < #v then
      redis.call('HINCRBY', KEYS[4], string.sub(v, s2 + 1), 1)
    end
  end
end
`

// loadScript writes an item's window, total and eligibility rules, and
// sets its stock only when no live counter exists, so a restart never
// overwrites a sale in progress. Buyers already stored in PostgreSQL are
// written beforehand (with HSETNX, "ref||network") so a Redis that lost its
// data resumes from the database; the networks hash is then counted again
// from the buyers.
//
// KEYS: meta, stock, buyers, networks
// ARGV: total, starts_ms, ends_ms, min_age_ms, max_net
var loadScript = redis.NewScript(recountSrc + `
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'starts_ms', ARGV[2], 'ends_ms', ARGV[3], 'min_age_ms', ARGV[4], 'max_net', ARGV[5])
if redis.call('EXISTS', KEYS[2]) == 0 then
  local left = tonumber(ARGV[1]) - redis.call('HLEN', KEYS[3])
  if left < 0 then left = 0 end
  redis.call('SET', KEYS[2], left)
  recount()
  return 1
end
return 0
`)

// releaseScript gives a failed order's unit back: only when the buyer
// record still names that order, so calling it twice gives back one unit
// (and one network slot: the network the record was counted under).
//
// KEYS: meta, stock, buyers, networks
// ARGV: user id, order ref
var releaseScript = redis.NewScript(`
local held = redis.call('HGET', KEYS[3], ARGV[1])
if not held then return 0 end
local sep = string.find(held, '|', 1, true)
if string.sub(held, 1, sep - 1) ~= ARGV[2] then return 0 end
local sep2 = string.find(held, '|', sep + 1, true)
if sep2 and sep2 < #held then
  local net = string.sub(held, sep2 + 1)
  if redis.call('HINCRBY', KEYS[4], net, -1) <= 0 then
    redis.call('HDEL', KEYS[4], net)
  end
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('HINCRBY', KEYS[1], 'released', 1)
return 1
`)

// reseedScript brings one item of a Redis that came back from an older
// state (or lost its data) in line with PostgreSQL: it writes the item's
// window, total and rules, adds every stored buyer that Redis does not hold
// (HSETNX: a buyer Redis already holds keeps its record; a stored buyer is
// written "ref||network" when its account has a network and the item a
// max_per_network), and, on the last call for the item, sets the stock to
// total - HLEN(buyers), which is total - |stored ∪ Redis buyers|, and
// counts the networks hash again from the buyers. Running it twice, or while another
// backend sells, changes nothing more: every reservation keeps
// total = stock + HLEN(buyers).
//
// KEYS: meta, stock, buyers, networks
// ARGV: total, starts_ms, ends_ms, min_age_ms, max_net, last ('1' or '0'),
// then user id, buyer record pairs
var reseedScript = redis.NewScript(recountSrc + `
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'starts_ms', ARGV[2], 'ends_ms', ARGV[3], 'min_age_ms', ARGV[4], 'max_net', ARGV[5])
for i = 7, #ARGV, 2 do
  redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1])
end
if ARGV[6] ~= '1' then
  return -1
end
local left = tonumber(ARGV[1]) - redis.call('HLEN', KEYS[3])
if left < 0 then left = 0 end
redis.call('SET', KEYS[2], left)
recount()
return left
`)

// storedRecord is the buyer record of an order PostgreSQL holds: no
// request id, and the network when it is counted (the item has a
// max_per_network and the account a network).
func storedRecord(it seckill.Item, ref, network string) string {
	if it.MaxPerNetwork > 0 && network != "" {
		return ref + "||" + network
	}
	return ref + "|"
}
