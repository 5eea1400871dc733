// Package limit rate-limits the edge with token buckets
// (golang.org/x/time/rate): a set of Rules, each applying to one route class
// (or all) and keyed on the client IP, the user, the item or nothing
// (global). A request is allowed only if every applicable enforced rule has a
// token; tokens are then taken from all of them, and a refused request takes
// none.
//
// Token buckets do not let twice the rate through at a window edge the way
// fixed windows do (see /work/shared/notes/pitfalls.md).
//
// # Memory
//
// Buckets live in per-rule sharded maps keyed by a 64-bit seeded hash of the
// key (hash/maphash; a collision, probability ~n²/2⁶⁵, only makes two keys
// share a bucket, and the seed is random per Limiter so it cannot be aimed).
// A bucket that has been idle for Burst/Rate is full, hence equivalent to a
// new one, and is evicted by a janitor goroutine; in addition each rule holds
// at most about MaxKeysPerRule buckets. Measured (TestMemoryBounded, amd64,
// Go 1.26): about 110-130 bytes per live key (an 80-byte rate.Limiter plus
// the map slot), i.e. ~120 MB for the default cap of 2^20 keys per rule.
package limit

import (
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Keys identifies the client of a request. An empty User or Item means rules
// keyed on it do not apply (anonymous request, route without an item). An
// empty IP also skips ip rules; use clientip.Key, which never returns "".
type Keys struct{ IP, User, Item string }

// Decision is the outcome of Allow.
type Decision struct {
	Allowed bool
	// Rule is the enforced rule that refused, or, when allowed, the enforced
	// rule with the fewest remaining tokens ("" if no enforced rule applied).
	Rule string
	// RetryAfter is, when refused, the time until the refusing rule (the one
	// with the longest wait if several refuse) has a token again.
	RetryAfter time.Duration
	Limit      int           // burst of Rule (the quota, q=)
	Window     time.Duration // Burst/Rate of Rule (w=)
	Remaining  int           // whole tokens left in Rule's bucket (r=)
	// Reset (t=): when allowed, the time until Rule's bucket is full again;
	// when refused, RetryAfter (the client gets nothing before that).
	Reset      time.Duration
	ShadowHits []string // shadow rules that would have refused
}

// Options tune a Limiter. The zero value is usable.
type Options struct {
	// MaxKeysPerRule caps the buckets of one rule (default 1<<20). It is
	// enforced per shard (ceil(MaxKeysPerRule/64) each), so the total can
	// exceed it by at most 63. On overflow a full (idle) bucket is evicted if
	// one is found among a few sampled, else a random one.
	MaxKeysPerRule int
	// IdleAfter is the janitor period (default 1 minute; negative: no
	// janitor). The janitor evicts buckets that are full, i.e. idle for at
	// least Burst/Rate, so eviction never changes a decision.
	IdleAfter time.Duration
	// Now is the clock (default time.Now); tests inject a fake one.
	Now func() time.Time
}

const (
	nShards          = 64 // power of two
	defaultMaxKeys   = 1 << 20
	defaultIdleAfter = time.Minute
	evictSample      = 16
)

type shard struct {
	mu sync.Mutex
	m  map[uint64]*rate.Limiter
	_  [48]byte // keep shards on separate cache lines
}

// bucketID is what must stay equal for a rule's buckets to survive Update.
type bucketID struct {
	Name, Class, Key string
	Rate             float64
	Burst            int
}

// ruleState holds the buckets of one rule.
type ruleState struct {
	id       bucketID
	limit    rate.Limit
	burst    int
	window   time.Duration
	seed     maphash.Seed
	perShard int
	global   *rate.Limiter // Key == global
	shards   *[nShards]shard
}

type activeRule struct {
	name   string
	shadow bool
	key    string
	st     *ruleState
}

type ruleSet struct {
	rules   []Rule
	all     []*activeRule
	byClass map[string][]*activeRule // enforced first, then shadow; includes "*" rules
	star    []*activeRule            // for classes no rule names
}

// Limiter applies a rule set. It is safe for concurrent use.
type Limiter struct {
	set     atomic.Pointer[ruleSet]
	updMu   sync.Mutex
	now     func() time.Time
	maxKeys int
	seed    maphash.Seed

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// New validates rules and returns a Limiter, starting its janitor unless
// opt.IdleAfter < 0. Call Close to stop the janitor.
func New(rules []Rule, opt Options) (*Limiter, error) {
	l := &Limiter{now: opt.Now, maxKeys: opt.MaxKeysPerRule, seed: maphash.MakeSeed()}
	if l.now == nil {
		l.now = time.Now
	}
	if l.maxKeys <= 0 {
		l.maxKeys = defaultMaxKeys
	}
	if err := l.Update(rules); err != nil {
		return nil, err
	}
	l.stop = make(chan struct{})
	l.done = make(chan struct{})
	every := opt.IdleAfter
	if every == 0 {
		every = defaultIdleAfter
	}
	if every > 0 {
		go l.janitor(every)
	} else {
		close(l.done)
	}
	return l, nil
}

// Close stops the janitor. The Limiter keeps working without it (the
// MaxKeysPerRule cap still bounds memory).
func (l *Limiter) Close() error {
	l.closeOnce.Do(func() { close(l.stop) })
	<-l.done
	return nil
}

func (l *Limiter) janitor(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.sweep()
		}
	}
}

// sweep evicts full buckets; it returns how many it evicted.
func (l *Limiter) sweep() int {
	n := 0
	for _, ar := range l.set.Load().all {
		st := ar.st
		if st.shards == nil {
			continue
		}
		full := float64(st.burst)
		for i := range st.shards {
			sh := &st.shards[i]
			now := l.now()
			sh.mu.Lock()
			for h, lim := range sh.m {
				if lim.TokensAt(now) >= full {
					delete(sh.m, h)
					n++
				}
			}
			sh.mu.Unlock()
		}
	}
	return n
}

func newRuleState(r Rule, maxKeys int, seed maphash.Seed) *ruleState {
	st := &ruleState{
		id:     bucketID{r.Name, r.Class, r.Key, r.Rate, r.Burst},
		limit:  rate.Limit(r.Rate),
		burst:  r.Burst,
		window: time.Duration(float64(r.Burst) / r.Rate * float64(time.Second)),
		seed:   seed,
	}
	if r.Key == KeyGlobal {
		st.global = rate.NewLimiter(st.limit, st.burst)
		return st
	}
	st.perShard = (maxKeys + nShards - 1) / nShards
	st.shards = new([nShards]shard)
	for i := range st.shards {
		st.shards[i].m = make(map[uint64]*rate.Limiter)
	}
	return st
}

// Update validates rules and swaps them in atomically. Buckets of rules whose
// (Name, Class, Key, Rate, Burst) did not change keep their tokens (a change
// of Shadow alone keeps them too); other rules start with full buckets.
func (l *Limiter) Update(rules []Rule) error {
	if err := ValidateRules(rules); err != nil {
		return err
	}
	l.updMu.Lock()
	defer l.updMu.Unlock()
	old := map[bucketID]*ruleState{}
	if cur := l.set.Load(); cur != nil {
		for _, ar := range cur.all {
			old[ar.st.id] = ar.st
		}
	}
	set := &ruleSet{rules: slices.Clone(rules), byClass: map[string][]*activeRule{}}
	for _, r := range rules {
		id := bucketID{r.Name, r.Class, r.Key, r.Rate, r.Burst}
		st := old[id]
		if st == nil {
			st = newRuleState(r, l.maxKeys, l.seed)
		}
		set.all = append(set.all, &activeRule{name: r.Name, shadow: r.Shadow, key: r.Key, st: st})
	}
	// Enforced rules first so a refusal is found before shadow buckets are
	// looked at.
	ordered := slices.Clone(set.all)
	slices.SortStableFunc(ordered, func(a, b *activeRule) int {
		switch {
		case a.shadow == b.shadow:
			return 0
		case b.shadow:
			return -1
		}
		return 1
	})
	for _, ar := range ordered {
		st := ar.st
		if st.id.Class == "*" {
			set.star = append(set.star, ar)
		}
	}
	for _, c := range Classes {
		for _, ar := range ordered {
			if ar.st.id.Class == "*" || ar.st.id.Class == c {
				set.byClass[c] = append(set.byClass[c], ar)
			}
		}
	}
	l.set.Store(set)
	return nil
}

// Rules returns a copy of the current rule set.
func (l *Limiter) Rules() []Rule { return slices.Clone(l.set.Load().rules) }

// Stats returns the live bucket count per rule (1 for a global rule).
func (l *Limiter) Stats() map[string]int {
	out := map[string]int{}
	for _, ar := range l.set.Load().all {
		st := ar.st
		if st.shards == nil {
			out[ar.name] = 1
			continue
		}
		n := 0
		for i := range st.shards {
			sh := &st.shards[i]
			sh.mu.Lock()
			n += len(sh.m)
			sh.mu.Unlock()
		}
		out[ar.name] = n
	}
	return out
}

// bucket returns the bucket of key, creating it (full) if needed.
func (st *ruleState) bucket(key string, now time.Time) *rate.Limiter {
	if st.global != nil {
		return st.global
	}
	h := maphash.String(st.seed, key)
	sh := &st.shards[h&(nShards-1)]
	sh.mu.Lock()
	lim := sh.m[h]
	if lim == nil {
		if len(sh.m) >= st.perShard {
			st.evictLocked(sh, now)
		}
		lim = rate.NewLimiter(st.limit, st.burst)
		sh.m[h] = lim
	}
	sh.mu.Unlock()
	return lim
}

// evictLocked removes one bucket from a shard at its cap: a full one among
// a few sampled if possible (no state lost), else a random one (map iteration
// starts at a random position).
func (st *ruleState) evictLocked(sh *shard, now time.Time) {
	full := float64(st.burst)
	var victim uint64
	seen := 0
	for h, lim := range sh.m {
		if seen == 0 {
			victim = h
		}
		if lim.TokensAt(now) >= full {
			victim = h
			break
		}
		if seen++; seen >= evictSample {
			break
		}
	}
	delete(sh.m, victim)
}

// tokenWait is the time until tokens reach 1.
func (st *ruleState) tokenWait(tokens float64) time.Duration {
	return durationFromTokens(st.limit, 1-tokens)
}

func durationFromTokens(l rate.Limit, tokens float64) time.Duration {
	if tokens <= 0 {
		return 0
	}
	s := tokens / float64(l)
	if s >= math.MaxInt64/float64(time.Second) {
		return time.Duration(math.MaxInt64)
	}
	// Round up so a client that waits RetryAfter is not refused again.
	return time.Duration(math.Ceil(s * float64(time.Second)))
}

func (ar *activeRule) keyOf(k *Keys) (string, bool) {
	switch ar.key {
	case KeyIP:
		return k.IP, k.IP != ""
	case KeyUser:
		return k.User, k.User != ""
	case KeyItem:
		return k.Item, k.Item != ""
	}
	return "", true
}

const stackRules = 8

// Allow decides a request of route class class (an unknown class matches
// only "*" rules) from client k. It takes one token from every applicable
// rule only if every applicable enforced rule has one: it first checks the
// buckets (TokensAt), then reserves, and cancels the reservations made if one
// of them was lost to a concurrent request, so a refused request drains
// nothing. Shadow rules never refuse; those that would have are listed in
// ShadowHits (their tokens are taken only when the request is allowed).
func (l *Limiter) Allow(class string, k Keys) Decision {
	now := l.now()
	set := l.set.Load()
	list, ok := set.byClass[class]
	if !ok {
		list = set.star
	}
	var limBuf [stackRules]*rate.Limiter
	var tokBuf [stackRules]float64
	lims, toks := limBuf[:0], tokBuf[:0]
	if len(list) > stackRules {
		lims, toks = make([]*rate.Limiter, 0, len(list)), make([]float64, 0, len(list))
	}

	d := Decision{Allowed: true}
	refusing := -1
	// Phase 1: look up and check.
	for i, ar := range list {
		key, ok := ar.keyOf(&k)
		if !ok {
			lims, toks = append(lims, nil), append(toks, 0)
			continue
		}
		lim := ar.st.bucket(key, now)
		tok := lim.TokensAt(now)
		if tok < 1 {
			if ar.shadow {
				d.ShadowHits = append(d.ShadowHits, ar.name)
				lim = nil // nothing to take
			} else if wait := ar.st.tokenWait(tok); refusing < 0 || wait > d.RetryAfter {
				refusing, d.RetryAfter = i, wait
			}
		}
		lims, toks = append(lims, lim), append(toks, tok)
	}
	if refusing >= 0 {
		return l.refuse(d, list[refusing].st, list[refusing].name)
	}

	// Phase 2: take a token from each enforced rule; undo on a lost race.
	// Reservations are kept by value (ReserveN is inlined, so its result
	// does not escape): no allocation on the hot path.
	var resBuf [stackRules]rate.Reservation
	res := resBuf[:0]
	if len(list) > stackRules {
		res = make([]rate.Reservation, 0, len(list))
	}
	for i, ar := range list {
		if lims[i] == nil || ar.shadow {
			continue
		}
		res = append(res, *lims[i].ReserveN(now, 1))
		r := &res[len(res)-1]
		if wait := r.DelayFrom(now); !r.OK() || wait > 0 {
			for j := range res {
				res[j].CancelAt(now)
			}
			d.RetryAfter = max(wait, time.Nanosecond)
			return l.refuse(d, ar.st, ar.name)
		}
	}
	best := -1
	for i, ar := range list {
		if lims[i] == nil {
			continue
		}
		if ar.shadow {
			if !lims[i].AllowN(now, 1) { // lost a race since phase 1
				d.ShadowHits = append(d.ShadowHits, ar.name)
			}
			continue
		}
		left := toks[i] - 1
		if best < 0 || int(left) < d.Remaining || (int(left) == d.Remaining && ar.st.burst < d.Limit) {
			best = i
			d.Rule, d.Limit, d.Window = ar.name, ar.st.burst, ar.st.window
			d.Remaining = max(int(left), 0)
			d.Reset = durationFromTokens(ar.st.limit, float64(ar.st.burst)-left)
		}
	}
	return d
}

func (l *Limiter) refuse(d Decision, st *ruleState, name string) Decision {
	d.Allowed = false
	d.Rule, d.Limit, d.Window = name, st.burst, st.window
	d.Remaining = 0
	d.Reset = d.RetryAfter
	return d
}
