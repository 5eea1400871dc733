package chaos

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
)

// Stored is what PostgreSQL holds for an item: order ref per username.
type Stored struct {
	Refs   map[string][]string // username -> order refs
	Count  int
	Failed int
}

// ReadStored reads the item's orders straight from PostgreSQL.
func ReadStored(ctx context.Context, pgURL string, item int64) (Stored, error) {
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return Stored{}, fmt.Errorf("connecting to postgres: %w", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT u.username, o.order_ref FROM orders o JOIN users u ON u.id = o.user_id WHERE o.item_id = $1`, item)
	if err != nil {
		return Stored{}, fmt.Errorf("reading orders: %w", err)
	}
	s := Stored{Refs: map[string][]string{}}
	for rows.Next() {
		var u, ref string
		if err := rows.Scan(&u, &ref); err != nil {
			return Stored{}, err
		}
		s.Refs[u] = append(s.Refs[u], ref)
		s.Count++
	}
	if err := rows.Err(); err != nil {
		return Stored{}, err
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM failed_orders WHERE item_id = $1`, item).Scan(&s.Failed); err != nil {
		return Stored{}, fmt.Errorf("counting failed orders: %w", err)
	}
	return s, nil
}

// Verdict is the checker's judgement of one sale.
type Verdict struct {
	Told          int `json:"told"` // buyers told 202 (or 409 with their order ref)
	Stored        int `json:"stored"`
	Failed        int `json:"failed"`        // dead-lettered orders
	Lost          int `json:"lost"`          // told, never stored (or stored under another ref)
	Unexpected    int `json:"unexpected"`    // stored, nobody told, not indeterminate
	Oversold      int `json:"oversold"`      // units above the stock, stored or promised
	Doubled       int `json:"doubled"`       // users with two orders or told two refs
	Indeterminate int `json:"indeterminate"` // buyers whose request had no answer and who never learned
}

// Judge compares what buyers were told with what was stored. It knows
// nothing of the system's internals: only the public answers and the
// orders table.
func Judge(h *History, st Stored, units int) Verdict {
	v := Verdict{Stored: st.Count, Failed: st.Failed}
	indeterminate := map[string]bool{}
	told := map[string]string{}
	for _, b := range h.Buyers {
		refs := map[string]bool{}
		for _, r := range b.Told {
			refs[r] = true
		}
		if len(refs) > 1 {
			v.Doubled++
		}
		if len(b.Told) > 0 {
			told[b.Name] = b.Told[0]
		} else if b.Ambiguous {
			indeterminate[b.Name] = true
		}
	}
	v.Told = len(told)
	v.Indeterminate = len(indeterminate)
	for u, ref := range told {
		got := st.Refs[u]
		if len(got) != 1 || got[0] != ref {
			v.Lost++
		}
	}
	for u, refs := range st.Refs {
		if len(refs) > 1 {
			v.Doubled++
		}
		if _, ok := told[u]; !ok && !indeterminate[u] {
			v.Unexpected++
		}
	}
	v.Oversold = max(0, max(st.Count, v.Told)-units)
	return v
}

// Timing is how the sale went around the fault.
type Timing struct {
	PreRate float64       `json:"pre_rate"`       // 202s in the second before the fault
	Freeze  time.Duration `json:"freeze_ns"`      // probe OK to the first 202 after it, when the fault paused 202s for over a second
	Flow    time.Duration `json:"flow_ns"`        // probe OK to flowing again; -1: never (sold out first or never back)
	MaxGap  time.Duration `json:"longest_gap_ns"` // longest stretch without a 202 during the sale
	// SoldOutFirst: every unit was sold before flowing could be measured
	// after the probe, and 202s never stopped for a second after the fault.
	SoldOutFirst bool `json:"sold_out_first"`
}

// Timings measures the accepted rate around a fault injected at inject
// whose component answered its health probe at probe. "Flowing" is at
// least half the pre-fault rate over one second: Flow is the time from the
// probe to the first 202 of the first such second (0 when the second
// before the probe already flowed).
func Timings(acc []time.Time, inject, probe time.Time, soldOut bool) Timing {
	sort.Slice(acc, func(i, j int) bool { return acc[i].Before(acc[j]) })
	count := func(from, to time.Time) int {
		i := sort.Search(len(acc), func(i int) bool { return !acc[i].Before(from) })
		j := sort.Search(len(acc), func(i int) bool { return !acc[i].Before(to) })
		return j - i
	}
	t := Timing{PreRate: float64(count(inject.Add(-time.Second), inject)), Flow: -1}
	if longestGap(acc, inject, probe) > time.Second { // the fault stopped the 202s
		i := sort.Search(len(acc), func(i int) bool { return acc[i].After(probe) })
		if i < len(acc) {
			t.Freeze = acc[i].Sub(probe)
		}
	}
	thr := max(1, int(t.PreRate*0.5+0.999))
	if count(probe.Add(-time.Second), probe) >= thr {
		t.Flow = 0 // the second before the probe already flowed
	} else if len(acc) > 0 {
		for w := probe; !w.After(acc[len(acc)-1]); w = w.Add(10 * time.Millisecond) {
			if count(w, w.Add(time.Second)) >= thr {
				i := sort.Search(len(acc), func(i int) bool { return !acc[i].Before(w) })
				t.Flow = acc[i].Sub(probe) // the first 202 of the first good second
				break
			}
		}
	}
	for i := 1; i < len(acc); i++ {
		t.MaxGap = max(t.MaxGap, acc[i].Sub(acc[i-1]))
	}
	if t.Flow < 0 && soldOut && len(acc) > 0 && acc[len(acc)-1].Before(probe) {
		// Sold out during the fault: flowing if 202s never paused a second.
		last, stalled := inject, false
		for _, a := range acc {
			if a.After(inject) {
				stalled = stalled || a.Sub(last) > time.Second
				last = a
			}
		}
		if !stalled {
			t.Flow, t.SoldOutFirst = 0, true
		}
	}
	return t
}
