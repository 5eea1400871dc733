package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one run (report.json).
type Report struct {
	Scenario        string    `json:"scenario"`
	Description     string    `json:"description,omitempty"`
	Item            int64     `json:"item"`
	Units           int       `json:"units"`
	Challenge       string    `json:"challenge"`
	DefencesOff     []string  `json:"defences_off"`
	XFF             bool      `json:"xff"`
	StartedAt       time.Time `json:"started_at"`
	Played          float64   `json:"played_s"`
	HonestDoneAfter float64   `json:"honest_done_after_s"`
	Requests        int       `json:"requests"`
	// Throughput figures: requests/s over the run and at the busiest
	// second, purchases accepted per second (between the first and the last
	// 202), orders stored per second (from the stock samples).
	MeanRPS        float64          `json:"mean_rps"`
	PeakRPS        float64          `json:"peak_rps"`
	AcceptedPerSec float64          `json:"accepted_per_s"`
	OrdersPerSec   float64          `json:"orders_per_s"`
	Actors         []ActorSummary   `json:"actors"`
	HonestOutcomes map[string]int   `json:"honest_outcomes"`
	Defences       []DefenceFinding `json:"defences"`
	Series         []SecondBucket   `json:"series"`
	Routes         []RouteLatency   `json:"routes"`
	Stock          []Sample         `json:"stock"`
	Invariants     Invariants       `json:"invariants"`
	Reconcile      *ReconcileResult `json:"reconcile,omitempty"`
	Notes          []string         `json:"notes,omitempty"`
	Verdict        string           `json:"verdict"`
}

// ActorSummary is the figures of one actor kind.
type ActorSummary struct {
	Kind        string         `json:"kind"`
	Actors      int            `json:"actors"`   // users or bots
	Accounts    int            `json:"accounts"` // sessions used
	Requests    int            `json:"requests"`
	Outcomes    map[string]int `json:"outcomes"`         // "202", "403 bad_path", "error:timeout"
	ByRoute     map[string]int `json:"by_route"`         // requests per route
	Limits      map[string]int `json:"limits,omitempty"` // 429s by token bucket rule
	UnitsWon    int            `json:"units_won"`        // 202s on buy
	SuccessRate float64        `json:"success_rate"`     // share of 2xx answers
	P50Ms       float64        `json:"p50_ms"`
	P99Ms       float64        `json:"p99_ms"`
}

// DefenceFinding says what stopped one bot kind: its rejection codes.
type DefenceFinding struct {
	Kind      string      `json:"kind"`
	UnitsWon  int         `json:"units_won"`
	StoppedBy []CodeCount `json:"stopped_by"`
}

// CodeCount is one outcome and how often.
type CodeCount struct {
	Outcome string `json:"outcome"`
	N       int    `json:"n"`
}

func (d DefenceFinding) String() string {
	var parts []string
	for _, c := range d.StoppedBy {
		parts = append(parts, fmt.Sprintf("%s ×%d", c.Outcome, c.N))
	}
	if len(parts) == 0 {
		parts = []string{"nothing (no rejections)"}
	}
	return strings.Join(parts, ", ")
}

// SecondBucket is one second of the run.
type SecondBucket struct {
	Second      int     `json:"second"`
	OK          int     `json:"ok"`          // 2xx
	Rejected    int     `json:"rejected"`    // 4xx but 429
	Limited     int     `json:"limited"`     // 429
	Unavailable int     `json:"unavailable"` // 5xx
	Errors      int     `json:"errors"`      // transport errors
	HonestOK    int     `json:"honest_ok"`
	BotOK       int     `json:"bot_ok"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
}

// RouteLatency is the latency of one route, all actors.
type RouteLatency struct {
	Route string  `json:"route"`
	N     int     `json:"n"`
	P50Ms float64 `json:"p50_ms"`
	P90Ms float64 `json:"p90_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

func outcomeClass(r Record) string {
	switch {
	case r.Status == 0:
		return "error"
	case r.Status < 300:
		return "ok"
	case r.Status == 429:
		return "limited"
	case r.Status >= 500:
		return "unavailable"
	default:
		return "rejected"
	}
}

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted)-1) + 0.5)
	return float64(sorted[i]) / float64(time.Millisecond)
}

func sortDurations(d []time.Duration) { slices.Sort(d) }

func (r *runner) build(start time.Time, played, honestDone time.Duration, inv Invariants, rc *ReconcileResult) *Report {
	recs := r.c.rec.snapshot()
	rep := &Report{
		Scenario: r.sc.Name, Description: strings.TrimSpace(r.sc.Description), Item: r.item, Units: r.sc.Units, Challenge: r.sc.Challenge,
		DefencesOff: r.sc.DefencesOff(), XFF: r.sc.XFF, StartedAt: start.UTC(),
		Played: played.Seconds(), HonestDoneAfter: honestDone.Seconds(), Requests: len(recs),
		Invariants: inv, Reconcile: rc,
	}
	if rep.DefencesOff == nil {
		rep.DefencesOff = []string{}
	}
	r.mu.Lock()
	rep.HonestOutcomes = maps.Clone(r.outcomes)
	rep.Notes = slices.Clone(r.notes)
	rep.Stock = slices.Clone(r.samples)
	r.mu.Unlock()

	// Actor kinds, honest first, bots in scenario order.
	kinds := []string{Honest}
	actors := map[string]int{Honest: r.sc.Honest.Users}
	accounts := map[string]int{Honest: r.sc.Honest.Users}
	for _, b := range r.sc.Bots {
		if !slices.Contains(kinds, b.Kind) {
			kinds = append(kinds, b.Kind)
		}
		actors[b.Kind] += b.Count
		acc := 1
		switch b.Kind {
		case ChallengeReplayer:
			acc = 2
		case PathSharer:
			acc = 1 + b.ShareWith
		case OneIPFlood, ManyIPFlood:
			acc = max(b.Accounts, 1)
		}
		accounts[b.Kind] += b.Count * acc
	}
	sums := map[string]*ActorSummary{}
	lat := map[string][]time.Duration{}
	for _, k := range kinds {
		sums[k] = &ActorSummary{Kind: k, Actors: actors[k], Accounts: accounts[k], Outcomes: map[string]int{}, ByRoute: map[string]int{}}
	}
	routeLat := map[string][]time.Duration{}
	var buckets []SecondBucket
	bucketLat := map[int][]time.Duration{}
	for _, x := range recs {
		s := sums[x.Actor]
		if s == nil {
			continue
		}
		s.Requests++
		s.Outcomes[x.Outcome()]++
		s.ByRoute[x.Route]++
		if x.Rule != "" {
			if s.Limits == nil {
				s.Limits = map[string]int{}
			}
			s.Limits[x.Rule]++
		}
		if x.Route == "buy" && x.Status == 202 {
			s.UnitsWon++
		}
		if outcomeClass(x) == "ok" {
			s.SuccessRate++
		}
		lat[x.Actor] = append(lat[x.Actor], x.Latency)
		routeLat[x.Route] = append(routeLat[x.Route], x.Latency)
		sec := max(int(x.At/time.Second), 0)
		for len(buckets) <= sec {
			buckets = append(buckets, SecondBucket{Second: len(buckets)})
		}
		b := &buckets[sec]
		switch outcomeClass(x) {
		case "ok":
			b.OK++
			if x.Actor == Honest {
				b.HonestOK++
			} else {
				b.BotOK++
			}
		case "rejected":
			b.Rejected++
		case "limited":
			b.Limited++
		case "unavailable":
			b.Unavailable++
		default:
			b.Errors++
		}
		bucketLat[sec] = append(bucketLat[sec], x.Latency)
	}
	for i := range buckets {
		l := bucketLat[i]
		sortDurations(l)
		buckets[i].P50Ms, buckets[i].P99Ms = pct(l, 0.5), pct(l, 0.99)
	}
	rep.Series = buckets
	for _, b := range buckets {
		rep.PeakRPS = max(rep.PeakRPS, float64(b.OK+b.Rejected+b.Limited+b.Unavailable+b.Errors))
	}
	if played > 0 {
		rep.MeanRPS = float64(len(recs)) / played.Seconds()
	}
	var first, last time.Duration = -1, 0
	accepted := 0
	for _, x := range recs {
		if x.Route == "buy" && x.Status == 202 {
			accepted++
			if first < 0 || x.At < first {
				first = x.At
			}
			last = max(last, x.At+x.Latency)
		}
	}
	if accepted > 0 {
		rep.AcceptedPerSec = float64(accepted) / max(last-first, 100*time.Millisecond).Seconds()
	}
	if n := len(rep.Stock); n > 0 {
		final := rep.Stock[n-1].Orders
		var t0, t1 time.Duration = -1, -1
		for _, s := range rep.Stock {
			if t0 < 0 && s.Orders > 0 {
				t0 = s.At
			}
			if t1 < 0 && s.Orders == final {
				t1 = s.At
			}
		}
		if final > 0 && t0 >= 0 {
			rep.OrdersPerSec = float64(final) / max(t1-t0+250*time.Millisecond, 250*time.Millisecond).Seconds()
		}
	}
	for _, k := range kinds {
		s := sums[k]
		if s.Requests > 0 {
			s.SuccessRate /= float64(s.Requests)
		}
		l := lat[k]
		sortDurations(l)
		s.P50Ms, s.P99Ms = pct(l, 0.5), pct(l, 0.99)
		rep.Actors = append(rep.Actors, *s)
		if k == Honest {
			continue
		}
		d := DefenceFinding{Kind: k, UnitsWon: s.UnitsWon}
		for o, n := range s.Outcomes {
			if !strings.HasPrefix(o, "2") {
				d.StoppedBy = append(d.StoppedBy, CodeCount{o, n})
			}
		}
		sort.Slice(d.StoppedBy, func(i, j int) bool {
			if d.StoppedBy[i].N != d.StoppedBy[j].N {
				return d.StoppedBy[i].N > d.StoppedBy[j].N
			}
			return d.StoppedBy[i].Outcome < d.StoppedBy[j].Outcome
		})
		rep.Defences = append(rep.Defences, d)
	}
	for _, route := range []string{"challenge", "path", "buy", "order"} {
		l := routeLat[route]
		if len(l) == 0 {
			continue
		}
		sortDurations(l)
		rep.Routes = append(rep.Routes, RouteLatency{Route: route, N: len(l), P50Ms: pct(l, 0.5), P90Ms: pct(l, 0.9), P99Ms: pct(l, 0.99), MaxMs: pct(l, 1)})
	}
	rep.Verdict = "PASS"
	for _, c := range inv.Checks {
		if !c.OK {
			rep.Verdict = "FAIL"
		}
	}
	if rc != nil && rc.ExitCode != 0 {
		rep.Verdict = "FAIL"
	}
	return rep
}

// Actor returns the summary of one actor kind (zero when absent).
func (rep *Report) Actor(kind string) ActorSummary {
	for _, a := range rep.Actors {
		if a.Kind == kind {
			return a
		}
	}
	return ActorSummary{Kind: kind}
}

// Passed reports whether the verdict is PASS.
func (rep *Report) Passed() bool { return rep.Verdict == "PASS" }

// topOutcomes formats the outcomes, most frequent first.
func topOutcomes(m map[string]int) string {
	type kv struct {
		k string
		n int
	}
	var l []kv
	for k, n := range m {
		l = append(l, kv{k, n})
	}
	sort.Slice(l, func(i, j int) bool {
		if l[i].n != l[j].n {
			return l[i].n > l[j].n
		}
		return l[i].k < l[j].k
	})
	var parts []string
	for _, x := range l {
		parts = append(parts, fmt.Sprintf("%s×%d", x.k, x.n))
	}
	return strings.Join(parts, ", ")
}

// WriteTable prints the terminal summary.
func (rep *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "scenario %s: item %d, %d units, challenge %s, defences off %v, played %.1fs (honest done after %.1fs), %d requests\n\n",
		rep.Scenario, rep.Item, rep.Units, rep.Challenge, rep.DefencesOff, rep.Played, rep.HonestDoneAfter, rep.Requests)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "actor\tn\trequests\twon\tp50 ms\tp99 ms\toutcomes")
	for _, a := range rep.Actors {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f\t%.1f\t%s\n", a.Kind, a.Actors, a.Requests, a.UnitsWon, a.P50Ms, a.P99Ms, topOutcomes(a.Outcomes))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nhonest users: %s\n", topOutcomes(rep.HonestOutcomes))
	fmt.Fprintf(w, "throughput: %.0f req/s mean, %.0f req/s peak second, %.0f purchases accepted/s, %.0f orders stored/s\n",
		rep.MeanRPS, rep.PeakRPS, rep.AcceptedPerSec, rep.OrdersPerSec)
	if len(rep.Defences) > 0 {
		fmt.Fprintln(w, "\nwhat stopped each bot kind:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, d := range rep.Defences {
			limits := ""
			if l := rep.Actor(d.Kind).Limits; len(l) > 0 {
				limits = "  (429 by rule: " + topOutcomes(l) + ")"
			}
			fmt.Fprintf(tw, "  %s\twon %d\t%s%s\n", d.Kind, d.UnitsWon, d, limits)
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\ninvariants:")
	for _, c := range rep.Invariants.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %s: %s\n", mark, c.Name, c.Detail)
	}
	if rc := rep.Reconcile; rc != nil {
		fmt.Fprintf(w, "  reconcile %q: exit %d\n", rc.Command, rc.ExitCode)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "\nverdict: %s\n", rep.Verdict)
}

// WriteFiles writes report.json and report.html into dir.
func (rep *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(raw, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.html"))
	if err != nil {
		return err
	}
	if err := rep.WriteHTML(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadReport reads a report.json.
func ReadReport(file string) (*Report, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var rep Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &rep, nil
}

// Compare prints two reports side by side.
func Compare(w io.Writer, a, b *Report, nameA, nameB string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, va, vb any) { fmt.Fprintf(tw, "%s\t%v\t%v\n", k, va, vb) }
	row("", nameA, nameB)
	row("scenario", a.Scenario, b.Scenario)
	row("defences off", fmt.Sprint(a.DefencesOff), fmt.Sprint(b.DefencesOff))
	row("verdict", a.Verdict, b.Verdict)
	row("units", a.Units, b.Units)
	row("played s", fmt.Sprintf("%.1f", a.Played), fmt.Sprintf("%.1f", b.Played))
	row("requests", a.Requests, b.Requests)
	row("req/s mean / peak", fmt.Sprintf("%.0f / %.0f", a.MeanRPS, a.PeakRPS), fmt.Sprintf("%.0f / %.0f", b.MeanRPS, b.PeakRPS))
	row("accepted/s", fmt.Sprintf("%.0f", a.AcceptedPerSec), fmt.Sprintf("%.0f", b.AcceptedPerSec))
	row("orders/s", fmt.Sprintf("%.0f", a.OrdersPerSec), fmt.Sprintf("%.0f", b.OrdersPerSec))
	row("final orders", a.Invariants.Final.Orders, b.Invariants.Final.Orders)
	var kinds []string
	for _, r := range []*Report{a, b} {
		for _, x := range r.Actors {
			if !slices.Contains(kinds, x.Kind) {
				kinds = append(kinds, x.Kind)
			}
		}
	}
	for _, k := range kinds {
		xa, xb := a.Actor(k), b.Actor(k)
		row(k+" won", xa.UnitsWon, xb.UnitsWon)
		row(k+" requests", xa.Requests, xb.Requests)
		row(k+" p50/p99 ms", fmt.Sprintf("%.1f/%.1f", xa.P50Ms, xa.P99Ms), fmt.Sprintf("%.1f/%.1f", xb.P50Ms, xb.P99Ms))
		if k != Honest {
			row(k+" stopped by", firstN(rejections(xa.Outcomes), 3), firstN(rejections(xb.Outcomes), 3))
		}
	}
	for _, r := range []string{"challenge", "path", "buy", "order"} {
		ra, rb := routeOf(a, r), routeOf(b, r)
		if ra.N+rb.N == 0 {
			continue
		}
		row(r+" p50/p99 ms", fmt.Sprintf("%.1f/%.1f", ra.P50Ms, ra.P99Ms), fmt.Sprintf("%.1f/%.1f", rb.P50Ms, rb.P99Ms))
	}
	tw.Flush()
}

func routeOf(r *Report, route string) RouteLatency {
	for _, x := range r.Routes {
		if x.Route == route {
			return x
		}
	}
	return RouteLatency{Route: route}
}

// rejections keeps the outcomes that are not 2xx.
func rejections(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, n := range m {
		if !strings.HasPrefix(k, "2") {
			out[k] = n
		}
	}
	return out
}

func firstN(m map[string]int, n int) string {
	parts := strings.Split(topOutcomes(m), ", ")
	if len(parts) > n {
		parts = parts[:n]
	}
	if len(parts) == 1 && parts[0] == "" {
		return "-"
	}
	return strings.Join(parts, ", ")
}
