package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/rkeys"
)

// Defences are the protections of one sale that an admin may turn off for
// teaching: a class watches an attack win, turns the defence back on and
// watches it lose. All are on unless switched off. They live in Redis so
// every edge applies the same switches, and every change is logged at WARN
// and listed in the item's stats.
type Defences struct {
	Challenge   bool `json:"challenge"`    // off: a path is handed out without checking the answer
	PathBinding bool `json:"path_binding"` // off: a path is valid for any user of the item
	SingleUse   bool `json:"single_use"`   // off: paths and challenges are not burned by use
	Bloom       bool `json:"bloom"`        // off: repeat buyers are not stopped at the edge
	Buckets     bool `json:"buckets"`      // off: no token bucket applies to the item's routes
	Breaker     bool `json:"breaker"`      // off: the circuit breaker is bypassed
	Shedding    bool `json:"shedding"`     // off: no bound on backend calls in flight
}

// allOn is the default: every defence on.
var allOn = Defences{Challenge: true, PathBinding: true, SingleUse: true, Bloom: true, Buckets: true, Breaker: true, Shedding: true}

// Off lists the defences that are off, sorted.
func (d Defences) Off() []string {
	var off []string
	m := map[string]bool{"challenge": d.Challenge, "path_binding": d.PathBinding, "single_use": d.SingleUse,
		"bloom": d.Bloom, "buckets": d.Buckets, "breaker": d.Breaker, "shedding": d.Shedding}
	for k, on := range m {
		if !on {
			off = append(off, k)
		}
	}
	sort.Strings(off)
	return off
}

// defenceSwitches caches the switches of every item, refreshed from Redis
// on the "defences" event.
type defenceSwitches struct {
	rdb    redis.UniversalClient
	prefix string
	mu     sync.RWMutex
	byItem map[int64]Defences
}

func (s *defenceSwitches) key() string { return rkeys.Space(s.prefix).EdgeDefences() }

// get returns the switches of an item (all on when never changed).
func (s *defenceSwitches) get(item int64) Defences {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if d, ok := s.byItem[item]; ok {
		return d
	}
	return allOn
}

// load reads every item's switches from Redis.
func (s *defenceSwitches) load(ctx context.Context) error {
	m, err := s.rdb.HGetAll(ctx, s.key()).Result()
	if err != nil {
		return fmt.Errorf("reading defences: %w", err)
	}
	by := make(map[int64]Defences, len(m))
	for k, v := range m {
		id, err := strconv.ParseInt(k, 10, 64)
		if err != nil {
			continue
		}
		d := allOn
		if json.Unmarshal([]byte(v), &d) == nil {
			by[id] = d
		}
	}
	s.mu.Lock()
	s.byItem = by
	s.mu.Unlock()
	return nil
}

// set stores an item's switches.
func (s *defenceSwitches) set(ctx context.Context, item int64, d Defences) error {
	raw, _ := json.Marshal(d)
	if err := s.rdb.HSet(ctx, s.key(), strconv.FormatInt(item, 10), raw).Err(); err != nil {
		return seckill.Unavailable(fmt.Errorf("storing defences: %w", err), "the defence switches cannot be stored right now; retry shortly")
	}
	s.mu.Lock()
	if s.byItem == nil {
		s.byItem = map[int64]Defences{}
	}
	s.byItem[item] = d
	s.mu.Unlock()
	return nil
}
