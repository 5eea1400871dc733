package stock

import "github.com/redis/go-redis/v9"

// The scripts take an item's keys (internal/rkeys: <prefix>item:{42}:meta,
// :stock, :buyers, :outbox), which share the hash tag {<id>} so every script
// stays valid in Redis Cluster.
//
// A script never writes before every check has passed: Redis has no rollback.

// reserveScript takes one unit for one user, atomically.
//
// KEYS: meta, stock, buyers, outbox
// ARGV: user id, request id, order ref, item id
//
// Replies {outcome, order ref, units left}. Checks run cheapest and most
// final first. The buyer record carries the request id, so a retried call
// (go-redis retries after a lost reply) finds its own first answer and
// never takes a second unit.
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
  local left = redis.call('GET', KEYS[2]) or '0'
  if req ~= '' and req == ARGV[2] then
    return {'queued', ref, left}
  end
  return {'already_bought', ref, left}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = redis.call('HMGET', KEYS[1], 'starts_ms', 'ends_ms')
if now < tonumber(w[1]) or now >= tonumber(w[2]) then
  return {'not_live', '', redis.call('GET', KEYS[2]) or '0'}
end
local left = tonumber(redis.call('GET', KEYS[2]) or '0')
if left <= 0 then
  return {'sold_out', '', '0'}
end
left = redis.call('DECR', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3] .. '|' .. ARGV[2])
redis.call('XADD', KEYS[4], '*', 'ref', ARGV[3], 'user', ARGV[1], 'item', ARGV[4], 'req', ARGV[2])
return {'queued', ARGV[3], tostring(left)}
`

// loadScript writes an item's window and total, and sets its stock only
// when no live counter exists, so a restart never overwrites a sale in
// progress. Buyers already stored in PostgreSQL are written beforehand (with
// HSETNX) so a Redis that lost its data resumes from the database.
//
// KEYS: meta, stock, buyers
// ARGV: total, starts_ms, ends_ms
var loadScript = redis.NewScript(`
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'starts_ms', ARGV[2], 'ends_ms', ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 0 then
  local left = tonumber(ARGV[1]) - redis.call('HLEN', KEYS[3])
  if left < 0 then left = 0 end
  redis.call('SET', KEYS[2], left)
  return 1
end
return 0
`)

// releaseScript gives a failed order's unit back: only when the buyer
// record still names that order, so calling it twice gives back one unit.
//
// KEYS: meta, stock, buyers
// ARGV: user id, order ref
var releaseScript = redis.NewScript(`
local held = redis.call('HGET', KEYS[3], ARGV[1])
if not held then return 0 end
local sep = string.find(held, '|', 1, true)
if string.sub(held, 1, sep - 1) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('HINCRBY', KEYS[1], 'released', 1)
return 1
`)

// reseedScript brings one item of a Redis that came back from an older
// state (or lost its data) in line with PostgreSQL: it writes the item's
// window and total, adds every stored buyer that Redis does not hold
// (HSETNX: a buyer Redis already holds keeps its record), and, on the last
// call for the item, sets the stock to total - HLEN(buyers), which is
// total - |stored ∪ Redis buyers|. Running it twice, or while another
// backend sells, changes nothing more: every reservation keeps
// total = stock + HLEN(buyers).
//
// KEYS: meta, stock, buyers
// ARGV: total, starts_ms, ends_ms, last ('1' or '0'), then user id, order ref pairs
var reseedScript = redis.NewScript(`
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'starts_ms', ARGV[2], 'ends_ms', ARGV[3])
for i = 5, #ARGV, 2 do
  redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1] .. '|')
end
if ARGV[4] ~= '1' then
  return -1
end
local left = tonumber(ARGV[1]) - redis.call('HLEN', KEYS[3])
if left < 0 then left = 0 end
redis.call('SET', KEYS[2], left)
return left
`)
