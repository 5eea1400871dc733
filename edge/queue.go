package edge

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/rkeys"
)

// The waiting room (allocation queue, issue 16). Its whole state is in
// Redis, in the item's hash slot (rkeys.Queue), and one Lua script
// (queueScript) reads and changes it, so every edge sees one queue and
// admission is decided atomically whichever edge a poll reaches:
//
//   - a ticket per account (tickets: user -> ticket id);
//   - waiting users ordered by place (waiting): an arrival before the
//     start draws a place uniformly at random in [0,1) (the pre-queue:
//     arriving early buys nothing), an arrival after it takes the next
//     integer (arrival order);
//   - admitted users by the end of their admission (active);
//   - waiting users by their last poll (seen): a ticket not polled for
//     abandon_after is dropped, so it neither takes a turn nor counts in
//     the positions behind it.
//
// Admission runs inside the same script, at most once per tick: a credit
// grows with the time elapsed since the start × new_users_per_minute ×
// the edge's load factor (Edge.pressure, the one signal shared with load
// shedding and the proof-of-work difficulty), capped at one second's worth
// (at least one user). The head of the queue is admitted while there is
// credit and room: the admitted users who do not hold a unit yet must
// stay at most total_active_users (0: no bound of its own) and at most the
// units left (the item's stock counter, read in the same script). An
// admitted user who holds a unit is moved to held; when its order fails and
// the unit comes back (the release script counts the units it gives back),
// it is admitted again until its admission ends (its pass is still valid),
// so the unit is its own until then. A unit
// is still taken only by the backend's reservation script: the queue
// decides who may try, never how many are sold. An admission lasts
// session_duration; its slot is held for a grace period after that, so a
// purchase let in by the edge just before the pass expired still finds
// its slot counted when it reaches Redis.
//
// Cost: a poll is O(log n) (ZRANK, ZADD); a step adds O(k log n) for the k
// users it admits or drops (at most 256 dropped per step) and O(a) for the
// a admitted users it checks against the buyers (at most once per tick, and
// only when a, all counted as not holding a unit, would leave no room under
// the units left or total_active_users: with 6,000 admitted a minute for a
// 60 s session that check was 150,000 HEXISTS a second, most of Redis's CPU
// in the lab's 100,000-entrant run, docs/BENCHMARKS.md).
//
// Retry safety (ARCHITECTURE.md): a join chooses its ticket id and place
// before the first try and keeps an existing ticket, so a join retried
// after a lost reply answers the same ticket; a poll's writes (last poll,
// admission by elapsed time) converge.
type waitingRoom struct {
	rdb    redis.UniversalClient
	prefix string
	grace  time.Duration
	tick   time.Duration
	// place draws a pre-queue place, uniform in [0,1).
	place func() float64
	// stale: how old a view may be and still answer a poll while a
	// refresh is on its way or failed (queue_view.go).
	stale time.Duration

	mu    sync.Mutex
	views map[int64]*roomView // by item

	// polls answered from a view, handed to Redis (recorded), and answered
	// by the script (seckill_edge_queue_polls_total)
	viewPolls, recordedPolls, scriptPolls atomic.Int64
	// of the recorded, those the script checked (toldPolls)
	checkedPolls atomic.Int64
}

// Defaults of the waiting room's settings of the edge (Config).
const (
	DefaultQueueGrace     = 15 * time.Second // longer than a backend call (backendclient's 10 s)
	DefaultQueuePollRate  = 2000             // polls per second of the whole waiting room
	DefaultQueueViewStale = time.Second
	queueTick             = 50 * time.Millisecond
)

func newWaitingRoom(rdb redis.UniversalClient, prefix string, grace, stale time.Duration) *waitingRoom {
	if grace <= 0 {
		grace = DefaultQueueGrace
	}
	if stale <= 0 {
		stale = DefaultQueueViewStale
	}
	return &waitingRoom{rdb: rdb, prefix: prefix, grace: grace, tick: queueTick, place: randomPlace,
		stale: stale, views: map[int64]*roomView{}}
}

// recordEvery is how often at most an edge hands Redis the polls of one
// ticket it answered from its view (roomView.record): half of
// abandon_after.
func recordEvery(it seckill.Item) time.Duration { return it.QueueAbandon() / 2 }

// dropAfter is how long a waiting ticket may go without a poll recorded in
// Redis before the script drops it: abandon_after plus recordEvery, since
// an edge may have answered polls it has not handed over for that long.
// So a ticket is dropped once it has not been polled for abandon_after
// (never sooner), and at most recordEvery later; one that polls at least
// every abandon_after is never dropped.
func dropAfter(it seckill.Item) time.Duration { return it.QueueAbandon() + recordEvery(it) }

// randomPlace is uniform in [0,1) with 53 random bits (crypto/rand).
func randomPlace() float64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return float64(binary.BigEndian.Uint64(b[:])>>11) / (1 << 53)
}

// Ticket states (docs/API.md).
const (
	qWaiting  = "waiting"
	qAdmitted = "admitted"
	qExpired  = "expired"
	qSoldOut  = "sold_out"
	qBought   = "bought"
	qNone     = "none"
)

// queueStatus is what one run of the script tells.
type queueStatus struct {
	State    string
	Ticket   string
	Position int64     // 1 = next; 0 when not waiting
	Waiting  int64     // tickets waiting
	Until    time.Time // end of the admission (admitted)
	Left     int64     // units left
	Active   int64     // admitted and unexpired (peek: and not holding a unit yet)
	Admitted int64     // admissions since the queue began
	Now      time.Time // Redis's clock
	Place    float64   // the ticket's place (HasPlace: waiting)
	HasPlace bool
	// FromView: answered from the edge's view of the queue, not by Redis
	// (the position is an estimate).
	FromView bool
	// Run: the Redis server that answered (the start of its run_id), as
	// far as the edge can tell: the one the script told, else the one the
	// edge knew before the call when it saw no other during it; "" not
	// known. A poll token names it (pollToken.Run).
	Run string
}

// queueScript is the waiting room: join or poll one user (or only look),
// then admit by elapsed time, then tell where the user stands.
//
// KEYS: 1 tickets, 2 waiting, 3 active, 4 seen, 5 state, 6 item stock, 7 item buyers,
// 8 held, 9 item meta
// ARGV: 1 op (join | poll | peek), 2 user, 3 new ticket id, 4 pre-queue place,
// 5 starts_ms, 6 ends_ms, 7 new users per minute, 8 total active (0: none),
// 9 session ms, 10 abandon ms, 11 grace ms, 12 load factor (0..1), 13 tick ms,
// 14 '1' to be told the server's run_id whatever op, 15 n, 16.. n × (user, place, age ms),
// then groups of (age ms, count, users):
// polls answered from a view (to check, then known waiting; waitingRoom.script)
var queueScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, user = ARGV[1], ARGV[2]
local starts, ends = tonumber(ARGV[5]), tonumber(ARGV[6])
local rate, cap, session = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local abandon, grace, factor, tick = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local left = tonumber(redis.call('GET', KEYS[6]) or '0')

-- admitted: in active, or held (bought) and its order failed since (the
-- next step puts it back in active)
local function admittedUntil(u)
  local a = redis.call('ZSCORE', KEYS[3], u)
  if not a and redis.call('HEXISTS', KEYS[7], u) == 0 then a = redis.call('ZSCORE', KEYS[8], u) end
  if a and tonumber(a) > now then return tonumber(a) end
  return 0
end

-- polls an edge answered from its view since its last run. First those
-- of tickets it has not seen Redis confirm waiting lately (ARGV[15]
-- triples from ARGV[16]: user, place and the poll's age in ms): still
-- waiting there, they count as polled when they were made, however late
-- the edge tells them (GT: a later poll already told stays); the others
-- are told back (gone: their numbers in the list), and that edge asks
-- Redis about them from then on. Two bulk commands per 1,000 polls. (A
-- place names one ticket: drawn at random with 53 bits, or the next
-- arrival number.)
local gone = {}
local nv = tonumber(ARGV[15] or '0')
for from = 0, nv - 1, 1000 do
  local m = math.min(1000, nv - from)
  local users = {}
  for j = 1, m do users[j] = ARGV[13 + (from + j) * 3] end
  local places = redis.call('ZMSCORE', KEYS[2], unpack(users))
  local polled = {}
  for j = 1, m do
    local b = 13 + (from + j) * 3
    if places[j] and tonumber(places[j]) == tonumber(ARGV[b + 1]) then
      polled[#polled + 1] = now - math.max(0, tonumber(ARGV[b + 2]))
      polled[#polled + 1] = users[j]
    else
      gone[#gone + 1] = from + j
    end
  end
  if #polled > 0 then redis.call('ZADD', KEYS[4], 'GT', unpack(polled)) end
end
-- Then those of tickets the edge saw confirmed waiting at their place, by
-- a poll made less than abandon_after before it sent this (groups: age in
-- ms, count, users): such a ticket cannot have been dropped since (its
-- last poll in Redis is that recent, and a ticket is dropped only
-- abandon_after plus half of it after that), only admitted, so they need
-- no check: XX (an admitted ticket is not put back), GT, one bulk command
-- per 1,000 polls, no work per poll in Lua but a copy.
local i, zs, nz = 16 + 3 * nv, {}, 0
while i < #ARGV do
  local score = string.format('%d', now - math.max(0, tonumber(ARGV[i])))
  local last = i + 1 + tonumber(ARGV[i + 1])
  for j = i + 2, last do
    zs[nz + 1] = score
    zs[nz + 2] = ARGV[j]
    nz = nz + 2
    if nz >= 2000 then
      redis.call('ZADD', KEYS[4], 'XX', 'GT', unpack(zs, 1, nz))
      nz = 0
    end
  end
  i = last + 1
end
if nz > 0 then redis.call('ZADD', KEYS[4], 'XX', 'GT', unpack(zs, 1, nz)) end

local tk = false
if op ~= 'peek' then tk = redis.call('HGET', KEYS[1], user) end
if op == 'poll' and tk and redis.call('ZSCORE', KEYS[2], user) then
  redis.call('ZADD', KEYS[4], now, user)
end
if op == 'join' and left > 0 and now < ends then
  local place = false
  if not tk then
    tk = ARGV[3]
    redis.call('HSET', KEYS[1], user, tk)
    place = true
  elseif not redis.call('ZSCORE', KEYS[2], user) and admittedUntil(user) == 0
      and redis.call('HEXISTS', KEYS[7], user) == 0 then
    place = true -- expired or dropped: a new arrival
  end
  if place then
    local score = ARGV[4]
    if now >= starts then score = redis.call('HINCRBY', KEYS[5], 'seq', 1) end
    redis.call('ZADD', KEYS[2], score, user)
  end
  if redis.call('ZSCORE', KEYS[2], user) then redis.call('ZADD', KEYS[4], now, user) end
end

-- one admission step per tick, whoever's call runs it
local st = redis.call('HMGET', KEYS[5], 'last', 'credit', 'released')
local last, credit = tonumber(st[1]), tonumber(st[2] or '0')
if not last or now - last >= tick then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - abandon, 'LIMIT', 0, 256)
  for _, u in ipairs(stale) do
    redis.call('ZREM', KEYS[2], u)
    redis.call('ZREM', KEYS[4], u)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - grace)
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now - grace)
  -- a failed order's unit came back (the release script counts them in
  -- the item's meta): its buyer, still admitted, holds no unit again and
  -- takes a slot again (O(held), only after a release)
  local released = redis.call('HGET', KEYS[9], 'released') or '0'
  if released ~= (st[3] or '0') then
    local h = redis.call('ZRANGE', KEYS[8], 0, -1, 'WITHSCORES')
    for i = 1, #h, 2 do
      if redis.call('HEXISTS', KEYS[7], h[i]) == 0 then
        redis.call('ZREM', KEYS[8], h[i])
        redis.call('ZADD', KEYS[3], h[i + 1], h[i])
      end
    end
    redis.call('HSET', KEYS[5], 'released', released)
  end
  if now >= starts and now < ends then
    local from = starts
    if last and last > from then from = last end
    credit = credit + (now - from) * rate * factor / 60000
    local burst = math.max(1, rate / 60)
    if credit > burst then credit = burst end
    local n = math.floor(credit)
    if n > 0 and redis.call('ZCARD', KEYS[2]) > 0 then
      -- At most every admitted user holds no unit yet: count them one by
      -- one (O(admitted) a tick) only when that bound leaves no room for n.
      local holders = redis.call('ZCARD', KEYS[3])
      if holders + n > left or (cap > 0 and holders + n > cap) then
        holders = 0
        local a = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
        for i = 1, #a, 2 do
          local u = a[i]
          if redis.call('HEXISTS', KEYS[7], u) == 1 then
            redis.call('ZREM', KEYS[3], u) -- holds a unit: needs no slot (held, until its order fails)
            redis.call('ZADD', KEYS[8], a[i + 1], u)
          else
            holders = holders + 1
          end
        end
      end
      local room = left - holders
      if cap > 0 and cap - holders < room then room = cap - holders end
      if n > room then n = room end
      local admitted, tries = 0, 0
      while admitted < n and tries < n + 256 do
        local head = redis.call('ZPOPMIN', KEYS[2])
        if #head == 0 then break end
        tries = tries + 1
        local seen = redis.call('ZSCORE', KEYS[4], head[1])
        redis.call('ZREM', KEYS[4], head[1])
        if seen and tonumber(seen) > now - abandon then
          redis.call('ZADD', KEYS[3], now + session, head[1])
          admitted = admitted + 1
        end
      end
      credit = credit - admitted
      if admitted > 0 then redis.call('HINCRBY', KEYS[5], 'admitted', admitted) end
    end
  end
  redis.call('HSET', KEYS[5], 'last', now, 'credit', tostring(credit))
end

local state, pos, untilms = 'none', 0, 0
if tk then
  untilms = admittedUntil(user)
  if untilms > 0 and redis.call('HEXISTS', KEYS[7], user) == 1 then untilms = 0 end -- holds a unit
  if untilms > 0 then
    state = 'admitted'
  else
    local r = redis.call('ZRANK', KEYS[2], user)
    if r then
      state = 'waiting'
      pos = r + 1
    elseif redis.call('HEXISTS', KEYS[7], user) == 1 then
      state = 'bought'
    else
      state = 'expired'
    end
    if left <= 0 and state ~= 'bought' then state = 'sold_out' end
  end
end
local active = 0
if op == 'peek' then -- exact: admitted, unexpired, not holding a unit yet (O(admitted))
  for _, u in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf')) do
    if redis.call('HEXISTS', KEYS[7], u) == 0 then active = active + 1 end
  end
else
  active = redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
end
local total = tonumber(redis.call('HGET', KEYS[5], 'admitted') or '0')
-- this user's place, and for a step or a peek the view an edge answers
-- polls from (queueView): the places of the first 128 waiting tickets, the
-- pre-queue's size, the lowest and highest arrival number (scores as
-- strings: Lua would truncate them)
local mine = ''
if tk then mine = redis.call('ZSCORE', KEYS[2], user) or '' end
local heads, pre, lo, hi, run = {}, 0, {}, {}, ''
-- the server's run_id, for a step or a peek or when asked (an edge
-- that does not know it yet): an edge that sees it change forgets which
-- tickets it knew waiting (a restarted Redis may have lost them;
-- roomView.observe)
-- (pcall: a server without INFO server, as miniredis in seckill dev,
-- tells none, and the edge then trusts no token and checks every record)
if op == 'step' or op == 'peek' or ARGV[14] == '1' then
  local info = redis.pcall('INFO', 'server')
  if type(info) == 'string' then run = string.match(info, 'run_id:(%x+)') or '' end
end
if op == 'step' or op == 'peek' then
  local h = redis.call('ZRANGE', KEYS[2], 0, 127, 'WITHSCORES')
  for i = 2, #h, 2 do heads[#heads + 1] = h[i] end
  pre = redis.call('ZCOUNT', KEYS[2], '-inf', '(1')
  lo = redis.call('ZRANGEBYSCORE', KEYS[2], '1', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  hi = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
end
return {state, tk or '', pos, redis.call('ZCARD', KEYS[2]), untilms, left, active, total, now,
  heads, pre, lo[2] or '', hi[2] or '', mine, gone, run}`)

// runLen is how much of a Redis server's run_id (40 hex digits) an edge
// keeps and a poll token carries: enough to tell a restarted server.
const runLen = 12

// queueOp names what a run of queueScript does for its user.
type queueOp string

const (
	opJoin queueOp = "join"
	opPoll queueOp = "poll"
	opPeek queueOp = "peek" // no user: the counters (dashboard)
	opStep queueOp = "step" // no user: the admission step and the view (queue_view.go)
)

// run runs the script for one user of item it. factor (0..1) scales the
// admission rate (Edge.admissionFactor). It also hands Redis the polls
// answered from this edge's view of the item since the last run, and
// refreshes that view.
func (w *waitingRoom) run(ctx context.Context, op queueOp, it seckill.Item, user int64, factor float64) (queueStatus, error) {
	v := w.view(it.ID)
	v.mu.Lock()
	seen := v.seen
	v.seen = nil
	run, epoch := v.run, v.epoch
	v.item = it
	v.mu.Unlock()
	for i := range seen { // known on a server the edge has forgotten since: checked
		if seen[i].epoch != epoch {
			seen[i].known, seen[i].epoch = time.Time{}, epoch
		}
	}
	st, view, told, err := w.script(ctx, op, it, user, factor, seen)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		if len(v.seen)+len(seen) <= maxSeen {
			v.seen = append(v.seen, seen...) // told next time
		} else {
			for _, s := range seen { // not told: recorded at their next poll
				delete(v.recorded, s.key())
			}
		}
		return st, err
	}
	same := v.observe(view.Run)
	// Another server seen while this call was on its way (by it or by a
	// concurrent one: a restart, a failover): the script may have run on
	// either, so what it confirmed is not known of the server the edge
	// knows now.
	unchanged := v.epoch == epoch
	v.update(op == opStep || op == opPeek, view, told.gone)
	if unchanged {
		v.confirm(told.confirmed)
	}
	if same && unchanged { // only a run that told the server's run_id, the one before
		v.confirm(told.known)
	}
	switch {
	case view.Run != "":
		st.Run = view.Run
	case unchanged:
		st.Run = run
	}
	return st, nil
}

// toldPolls is what a run of the script did with the polls it told.
type toldPolls struct {
	gone      []recKey   // checked, no longer waiting at their place
	confirmed []seenPoll // checked, counted, their ticket waiting then (recState.known)
	known     []seenPoll // unchecked, counted, their ticket surely not dropped by then
}

// ageStep is the age of a known ticket's poll as told to Redis: in 10 ms
// steps (the polls of one step go as one group), rounded down (counted at
// most 10 ms later than made, never sooner).
func ageStep(sent, at time.Time) int64 {
	ms := max(0, sent.Sub(at).Milliseconds())
	return ms - ms%10
}

func (w *waitingRoom) script(ctx context.Context, op queueOp, it seckill.Item, user int64, factor float64, seen []seenPoll) (queueStatus, queueView, toldPolls, error) {
	qk := rkeys.Space(w.prefix).Queue(it.ID)
	ik := rkeys.Space(w.prefix).Item(it.ID)
	var tk [16]byte
	_, _ = rand.Read(tk[:])
	r := it.SaleRules
	// The polls of tickets this edge saw Redis confirm waiting, by a poll
	// made less than abandon_after ago, go unchecked (known); the others
	// are checked (the script tells back those gone).
	sent := time.Now()
	var check, known []seenPoll
	for _, s := range seen {
		if !s.known.IsZero() && sent.Sub(s.known) < it.QueueAbandon() {
			known = append(known, s)
		} else {
			check = append(check, s)
		}
	}
	// The server's run_id, when this edge does not know it yet, or to
	// confirm known polls (roomView.observe): a step tells it anyway.
	wantRun := "0"
	if len(known) > 0 || w.runOf(it.ID) == "" {
		wantRun = "1"
	}
	args := make([]any, 0, 15+3*len(check)+len(known)+8)
	args = append(args,
		string(op), user, hex.EncodeToString(tk[:]), strconv.FormatFloat(w.place(), 'g', 17, 64),
		it.StartsAt.UnixMilli(), it.EndsAt.UnixMilli(),
		r.QueueRate(), r.TotalActiveUsers, r.QueueSession().Milliseconds(), dropAfter(it).Milliseconds(),
		w.grace.Milliseconds(), strconv.FormatFloat(factor, 'f', 3, 64), w.tick.Milliseconds(), wantRun, len(check))
	for _, s := range check {
		args = append(args, s.user, strconv.FormatFloat(s.place, 'g', -1, 64), max(0, sent.Sub(s.at).Milliseconds()))
	}
	for i := 0; i < len(known); { // in groups of one age step (seen is in the order of the polls, mostly)
		age := ageStep(sent, known[i].at)
		j := i + 1
		for j < len(known) && ageStep(sent, known[j].at) == age {
			j++
		}
		args = append(args, age, j-i)
		for _, s := range known[i:j] {
			args = append(args, s.user)
		}
		i = j
	}
	fetched := time.Now()
	v, err := queueScript.Run(ctx, w.rdb, []string{qk.Tickets, qk.Waiting, qk.Active, qk.Seen, qk.State, ik.Stock, ik.Buyers, qk.Held, ik.Meta}, args...).Slice()
	received := time.Now()
	if err != nil {
		return queueStatus{}, queueView{}, toldPolls{}, seckill.Unavailable(fmt.Errorf("running the waiting room of item %d: %w", it.ID, err),
			"the waiting room cannot be reached right now; retry shortly")
	}
	if len(v) != 16 {
		return queueStatus{}, queueView{}, toldPolls{}, fmt.Errorf("waiting room script: %d values, want 16", len(v))
	}
	num := func(i int) int64 { n, _ := v[i].(int64); return n }
	score := func(i int) (float64, bool) {
		s, _ := v[i].(string)
		f, err := strconv.ParseFloat(s, 64)
		return f, s != "" && err == nil
	}
	st := queueStatus{Position: num(2), Waiting: num(3), Left: num(5), Active: num(6), Admitted: num(7), Now: time.UnixMilli(num(8))}
	st.State, _ = v[0].(string)
	st.Ticket, _ = v[1].(string)
	if ms := num(4); ms > 0 {
		st.Until = time.UnixMilli(ms)
	}
	st.Place, st.HasPlace = score(13)
	strs := func(i int) []string {
		l, _ := v[i].([]any)
		out := make([]string, 0, len(l))
		for _, x := range l {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	view := queueView{Fetched: fetched, Now: st.Now, Waiting: st.Waiting, Pre: num(10), Left: st.Left}
	view.Run, _ = v[15].(string)
	view.Run = view.Run[:min(len(view.Run), runLen)]
	for _, h := range strs(9) {
		f, err := strconv.ParseFloat(h, 64)
		if err != nil {
			return queueStatus{}, queueView{}, toldPolls{}, fmt.Errorf("waiting room script: a place %q: %w", h, err)
		}
		view.Heads = append(view.Heads, f)
	}
	view.SeqMin, _ = score(11)
	view.SeqMax, _ = score(12)
	w.checkedPolls.Add(int64(len(check)))
	var goneAt []int64
	l, _ := v[14].([]any)
	for _, x := range l {
		if i, ok := x.(int64); ok {
			goneAt = append(goneAt, i)
		}
	}
	return st, view, tell(check, known, goneAt, received, dropAfter(it)), nil
}

// tell says what a run of the script did with the polls it was given:
// those checked (check) and told back gone (their numbers from 1 in
// goneAt) are gone; the other checked ones are confirmed; the known ones
// still are when the script surely ran before their ticket could have
// been dropped (drop after the poll that made them known: it ran before
// the reply came, received), and on the same Redis server (run checks
// that). A ticket admitted since is confirmed too, harmlessly: its place
// is at or before the view's head, so its polls go to the script.
func tell(check, known []seenPoll, goneAt []int64, received time.Time, drop time.Duration) toldPolls {
	var told toldPolls
	isGone := make([]bool, len(check))
	for _, i := range goneAt {
		if i >= 1 && int(i) <= len(check) && !isGone[i-1] {
			isGone[i-1] = true
			told.gone = append(told.gone, check[i-1].key())
		}
	}
	for i, s := range check {
		if !isGone[i] {
			told.confirmed = append(told.confirmed, s)
		}
	}
	for _, s := range known {
		if received.Sub(s.known) < drop {
			told.known = append(told.known, s)
		}
	}
	return told
}

// ticket returns the user's ticket id ("" when none): a plain read.
func (w *waitingRoom) ticket(ctx context.Context, itemID, user int64) (string, error) {
	tk, err := w.rdb.HGet(ctx, rkeys.Space(w.prefix).Queue(itemID).Tickets, strconv.FormatInt(user, 10)).Result()
	if err == redis.Nil {
		return "", nil
	}
	if err != nil {
		return "", seckill.Unavailable(fmt.Errorf("reading a ticket: %w", err), "the waiting room cannot be reached right now; retry shortly")
	}
	return tk, nil
}
