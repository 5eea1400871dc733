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
	MeanRPS float64 `json:"mean_rps"` // over the seeds' sales
	// Series is the requests per second since each sale's start, summed
	// over the seeds; PeakRPS the busiest second of any one sale.
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
	// Verdict is one of VerdictPass, VerdictFail, VerdictBotsWon,
	// VerdictAttackWon, VerdictAttackLost; Headline says it in a sentence,
	// naming every bot kind that beat its share.
	Verdict  string `json:"verdict"`
	Headline string `json:"headline"`
	// Seeds: one sale per seed; every figure above pools them (Units and
	// Item are those of one sale; Stock is the first seed's).
	Seeds []SeedResult `json:"seeds"`
	// Shares: each actor kind's share of the units against its share of
	// the accounts, pooled over the seeds (the verdict's test).
	Shares []ShareTest `json:"shares"`
	// Population: who could take part, and whom the account budgets and
	// the eligibility rules refused.
	Population Population `json:"population"`
	// Rules of the sale.
	MinAccountAge string `json:"min_account_age,omitempty"`
	MaxPerNetwork int64  `json:"max_per_network,omitempty"`
	// Queue: the waiting room measured (a queue sale; the first seed's
	// sale; queue_measure.go).
	Queue *QueueReport `json:"queue,omitempty"`
}

// SeedResult is one seed's sale.
type SeedResult struct {
	Seed         uint64         `json:"seed"`
	Item         int64          `json:"item"`
	UnitsWon     map[string]int `json:"units_won"` // per actor kind
	Accounts     map[string]int `json:"accounts"`  // per actor kind
	InvariantsOK bool           `json:"invariants_ok"`
	Played       float64        `json:"played_s"`
}

// Population says who took part and who was refused, pooled over seeds
// for the farms (fresh accounts each sale); honest accounts are counted
// once (the same users play every seed).
type Population struct {
	HonestUsers int `json:"honest_users"`
	// HonestRegistered: honest users who registered through the route;
	// HonestRegistration their outcomes ("201", "429 ...").
	HonestRegistered   int            `json:"honest_registered"`
	HonestRegistration map[string]int `json:"honest_registration,omitempty"`
	// HonestRefusedBudget: honest users refused an account at
	// registration (a 429 of the per-network budgets, or any other
	// refusal); HonestNotEligible: honest accounts refused by a sale's
	// eligibility rules (409 not_eligible) in at least one seed.
	HonestRefusedBudget int     `json:"honest_refused_registration"`
	HonestNotEligible   int     `json:"honest_not_eligible"`
	HonestRefusedShare  float64 `json:"honest_refused_share"`
	// Farm: registration outcomes of the farms' accounts (all seeds) and
	// the accounts refused as not eligible.
	FarmRegistration map[string]int `json:"farm_registration,omitempty"`
	FarmNotEligible  int            `json:"farm_not_eligible"`
	// FarmAge: how old the farms' accounts were when the sales opened
	// (youngest to oldest, Go duration text).
	FarmAge [2]string `json:"farm_age,omitempty"`
	// SharedAddresses: the honest address groups of the scenario.
	SharedAddresses []AddressGroup `json:"shared_addresses,omitempty"`
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

// preSale: the routes of registration, played before a sale starts (not in
// its series).
func preSale(route string) bool { return route == "register" || route == "register_challenge" }

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

// build pools the seeds' sales into one report and decides the verdict.
func (p *play) build(sales []*saleResult, pop *population) *Report {
	sc := p.sc
	first := sales[0]
	var recs []Record
	var played, honestDone time.Duration
	rep := &Report{
		Scenario: sc.Name, Description: strings.TrimSpace(sc.Description), Item: first.item, Units: sc.Units, Challenge: sc.Challenge,
		DefencesOff: sc.DefencesOff(), XFF: sc.XFF, StartedAt: first.start.UTC(), HonestOutcomes: map[string]int{},
		Stock: first.samples, Notes: p.notes.list(), MaxPerNetwork: sc.MaxPerNetwork,
	}
	if sc.MinAccountAge > 0 {
		rep.MinAccountAge = sc.MinAccountAge.String()
	}
	if rep.DefencesOff == nil {
		rep.DefencesOff = []string{}
	}
	// Actor kinds, honest first, bots in scenario order.
	kinds := []string{Honest}
	for _, b := range sc.Bots {
		if !slices.Contains(kinds, b.Kind) {
			kinds = append(kinds, b.Kind)
		}
	}
	actors, accounts := map[string]int{}, map[string]int{}
	inv := Invariants{Settled: true}
	honestRefused := map[string]bool{}
	pp := &rep.Population
	pp.HonestUsers, pp.HonestRegistered, pp.SharedAddresses = sc.Honest.Users, sc.Honest.Register, sc.Honest.Addresses
	if len(pop.honestReg) > 0 {
		pp.HonestRegistration = maps.Clone(pop.honestReg)
	}
	for o, n := range pop.honestReg {
		if o != "201" {
			pp.HonestRefusedBudget += n
		}
	}
	for _, s := range sales {
		recs = append(recs, s.recs...)
		played += s.played
		honestDone += s.honestDone
		for k, n := range s.actors {
			actors[k] = max(actors[k], n)
		}
		for k, n := range s.accounts {
			accounts[k] += n
		}
		for o, n := range s.outcomes {
			rep.HonestOutcomes[o] += n
		}
		for o, n := range s.farmReg {
			if pp.FarmRegistration == nil {
				pp.FarmRegistration = map[string]int{}
			}
			pp.FarmRegistration[o] += n
		}
		for name := range s.refused {
			switch s.kindOf[name] {
			case Honest:
				honestRefused[name] = true
			case AccountFarm:
				pp.FarmNotEligible++
			}
		}
		sr := SeedResult{Seed: s.seed, Item: s.item, UnitsWon: map[string]int{}, Accounts: maps.Clone(s.accounts), InvariantsOK: true, Played: s.played.Seconds()}
		for name, n := range s.wins {
			sr.UnitsWon[s.kindOf[name]] += n
		}
		for _, c := range s.inv.Checks {
			if !c.OK {
				sr.InvariantsOK = false
			}
			if len(sales) > 1 {
				c.Name = fmt.Sprintf("seed %d: %s", s.seed, c.Name)
			}
			inv.Checks = append(inv.Checks, c)
		}
		if s.rc != nil {
			rep.Reconcile = s.rc
			if s.rc.ExitCode != 0 {
				sr.InvariantsOK = false
				inv.Checks = append(inv.Checks, Check{Name: fmt.Sprintf("seed %d: reconcile", s.seed), OK: false, Detail: fmt.Sprintf("%q exited %d", s.rc.Command, s.rc.ExitCode)})
			}
		}
		inv.Settled = inv.Settled && s.inv.Settled
		inv.SettleIn = s.inv.SettleIn
		inv.Accepted += s.inv.Accepted
		f := s.inv.Final
		inv.Final.StockTotal += f.StockTotal
		inv.Final.StockLeft += f.StockLeft
		inv.Final.Reserved += f.Reserved
		inv.Final.Orders += f.Orders
		inv.Final.OutboxPending += f.OutboxPending
		inv.Final.Failed += f.Failed
		inv.Final.ItemID = f.ItemID
		rep.Seeds = append(rep.Seeds, sr)
	}
	pp.HonestNotEligible = len(honestRefused)
	if len(p.farmAges) > 0 {
		pp.FarmAge = [2]string{slices.Min(p.farmAges).Round(time.Second).String(), slices.Max(p.farmAges).Round(time.Second).String()}
	}
	if pp.HonestUsers > 0 {
		pp.HonestRefusedShare = float64(pp.HonestRefusedBudget+pp.HonestNotEligible) / float64(pp.HonestUsers)
	}
	rep.Invariants = inv
	rep.Played, rep.HonestDoneAfter, rep.Requests = played.Seconds(), honestDone.Seconds(), len(recs)
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
		if x.At < 0 || x.At > 24*time.Hour || preSale(x.Route) { // registration before the sale
			continue
		}
		sec := int(x.At / time.Second)
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
	rep.Series = buckets      // summed over the seeds
	for _, s := range sales { // the busiest second of any one sale
		per := map[int]int{}
		for _, x := range s.recs {
			if x.At >= 0 && !preSale(x.Route) {
				per[int(x.At/time.Second)]++
			}
		}
		for _, n := range per {
			rep.PeakRPS = max(rep.PeakRPS, float64(n))
		}
	}
	if played > 0 {
		rep.MeanRPS = float64(len(recs)) / played.Seconds()
	}
	// Accepted per second: between the first and the last 202 of each
	// seed, averaged over the seeds.
	var ratesSum float64
	for _, s := range sales {
		var t0, t1 time.Duration = -1, 0
		accepted := 0
		for _, x := range s.recs {
			if x.Route == "buy" && x.Status == 202 {
				accepted++
				if t0 < 0 || x.At < t0 {
					t0 = x.At
				}
				t1 = max(t1, x.At+x.Latency)
			}
		}
		if accepted > 0 {
			ratesSum += float64(accepted) / max(t1-t0, 100*time.Millisecond).Seconds()
		}
	}
	rep.AcceptedPerSec = ratesSum / float64(len(sales))
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
	units := map[string]int{}
	for _, a := range rep.Actors {
		units[a.Kind] = a.UnitsWon
	}
	rep.Shares = ShareTests(kinds, accounts, units)
	var broken []string
	for _, c := range inv.Checks {
		if !c.OK {
			broken = append(broken, c.Name+" ("+c.Detail+")")
		}
	}
	rep.Verdict, rep.Headline = decide(len(broken) == 0, broken, rep.DefencesOff, rep.Shares)
	if sc.Queue != nil {
		rep.Queue = measureQueue(queueInput{rate: sc.Queue.rules(first.start).QueueRate(), pollRate: sc.Queue.pollRate(), saleStart: sc.Queue.PreQueue,
			runEnd: first.played, samples: first.samples, admits: first.admits, recs: first.recs, load1: p.load1Before})
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

// Passed reports whether the verdict is PASS: every invariant held and no
// bot kind won significantly more than its share.
func (rep *Report) Passed() bool { return rep.Verdict == VerdictPass }

// InvariantsHeld reports whether every invariant held (the verdict is not
// FAIL), whoever won.
func (rep *Report) InvariantsHeld() bool { return rep.Verdict != VerdictFail && rep.Verdict != "" }

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
	seeds := ""
	if len(rep.Seeds) > 1 {
		seeds = fmt.Sprintf(", %d seeds pooled", len(rep.Seeds))
	}
	rules := ""
	if rep.MinAccountAge != "" {
		rules += ", min_account_age " + rep.MinAccountAge
	}
	if rep.MaxPerNetwork > 0 {
		rules += fmt.Sprintf(", max_per_network %d", rep.MaxPerNetwork)
	}
	fmt.Fprintf(w, "scenario %s: item %d, %d units, challenge %s%s, defences off %v%s, played %.1fs (honest done after %.1fs), %d requests\n\n",
		rep.Scenario, rep.Item, rep.Units, rep.Challenge, rules, rep.DefencesOff, seeds, rep.Played, rep.HonestDoneAfter, rep.Requests)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "actor\tn\trequests\twon\tp50 ms\tp99 ms\toutcomes")
	for _, a := range rep.Actors {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f\t%.1f\t%s\n", a.Kind, a.Actors, a.Requests, a.UnitsWon, a.P50Ms, a.P99Ms, topOutcomes(a.Outcomes))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nhonest users: %s\n", topOutcomes(rep.HonestOutcomes))
	rep.writePopulation(w)
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
	rep.writeShares(w)
	if rep.Queue != nil {
		rep.Queue.write(w)
	}
	fmt.Fprintln(w, "\ninvariants:")
	bad := 0
	for _, c := range rep.Invariants.Checks {
		if !c.OK {
			bad++
		}
		if len(rep.Seeds) > 1 && c.OK {
			continue
		}
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %s: %s\n", mark, c.Name, c.Detail)
	}
	if len(rep.Seeds) > 1 {
		fmt.Fprintf(w, "  %d of %d checks held over %d seeds (accepted %d, orders %d, reserved %d)\n", len(rep.Invariants.Checks)-bad, len(rep.Invariants.Checks),
			len(rep.Seeds), rep.Invariants.Accepted, rep.Invariants.Final.Orders, rep.Invariants.Final.Reserved)
	}
	if rc := rep.Reconcile; rc != nil {
		fmt.Fprintf(w, "  reconcile %q: exit %d\n", rc.Command, rc.ExitCode)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "\nverdict: %s\n%s\n", rep.Verdict, rep.Headline)
}

// writePopulation prints who could take part and who was refused.
func (rep *Report) writePopulation(w io.Writer) {
	p := rep.Population
	if p.HonestUsers == 0 && p.FarmRegistration == nil {
		return
	}
	var groups []string
	for _, g := range p.SharedAddresses {
		groups = append(groups, fmt.Sprintf("%s: %d users, %d per address, %d addresses per /24", g.Name, g.Users, g.PerIP, g.IPsPerNetwork))
	}
	if len(groups) > 0 {
		fmt.Fprintf(w, "shared addresses: %s\n", strings.Join(groups, "; "))
	}
	fmt.Fprintf(w, "honest accounts refused: %d of %d (%.2f%%): %d at registration (%d registered through the route: %s), %d not eligible (409 not_eligible)\n",
		p.HonestRefusedBudget+p.HonestNotEligible, p.HonestUsers, 100*p.HonestRefusedShare, p.HonestRefusedBudget, p.HonestRegistered,
		orDash(topOutcomes(p.HonestRegistration)), p.HonestNotEligible)
	if p.FarmRegistration != nil {
		fmt.Fprintf(w, "farm accounts: registration %s; %s to %s old when the sales opened; %d refused as not eligible (in a sale)\n",
			topOutcomes(p.FarmRegistration), p.FarmAge[0], p.FarmAge[1], p.FarmNotEligible)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeShares prints the verdict's test of every actor kind.
func (rep *Report) writeShares(w io.Writer) {
	if len(rep.Shares) == 0 {
		return
	}
	fmt.Fprintf(w, "\nshare of units vs share of accounts (one-sided binomial, alpha %g, %d seeds pooled):\n", Alpha, max(len(rep.Seeds), 1))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  kind\taccounts\tpopulation share\tunits\tunit share\tp-value\tbeat its share")
	for _, t := range rep.Shares {
		beat := "no"
		if t.Beat {
			beat = "YES"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%.1f%%\t%d/%d\t%.1f%%\t%s\t%s\n", t.Kind, t.Accounts, 100*t.PopulationShare, t.Units, t.UnitsSold, 100*t.UnitShare, t.P(), beat)
	}
	tw.Flush()
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

// Compare prints reports (scenarios, or one scenario with different
// defences) side by side, one column each.
func Compare(w io.Writer, reps []*Report, names []string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, f func(r *Report) any) {
		cells := []string{k}
		for _, r := range reps {
			cells = append(cells, fmt.Sprint(f(r)))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	fmt.Fprintln(tw, "\t"+strings.Join(names, "\t"))
	row("scenario", func(r *Report) any { return r.Scenario })
	row("verdict", func(r *Report) any { return r.Verdict })
	row("bot kinds that beat their share", func(r *Report) any { return orDash(strings.Join(r.BotsThatBeat(), ", ")) })
	row("seeds", func(r *Report) any { return max(len(r.Seeds), 1) })
	row("defences off", func(r *Report) any { return fmt.Sprint(r.DefencesOff) })
	row("min_account_age", func(r *Report) any { return orDash(r.MinAccountAge) })
	row("max_per_network", func(r *Report) any { return r.MaxPerNetwork })
	row("units per sale", func(r *Report) any { return r.Units })
	row("played s", func(r *Report) any { return fmt.Sprintf("%.1f", r.Played) })
	row("requests", func(r *Report) any { return r.Requests })
	row("req/s mean / peak", func(r *Report) any { return fmt.Sprintf("%.0f / %.0f", r.MeanRPS, r.PeakRPS) })
	row("accepted/s", func(r *Report) any { return fmt.Sprintf("%.0f", r.AcceptedPerSec) })
	row("final orders", func(r *Report) any { return r.Invariants.Final.Orders })
	row("honest refused", func(r *Report) any {
		p := r.Population
		return fmt.Sprintf("%d of %d (%.2f%%)", p.HonestRefusedBudget+p.HonestNotEligible, p.HonestUsers, 100*p.HonestRefusedShare)
	})
	var kinds []string
	for _, r := range reps {
		for _, x := range r.Actors {
			if !slices.Contains(kinds, x.Kind) {
				kinds = append(kinds, x.Kind)
			}
		}
	}
	for _, k := range kinds {
		row(k+" won", func(r *Report) any { return r.Actor(k).UnitsWon })
		row(k+" units / accounts share", func(r *Report) any {
			for _, t := range r.Shares {
				if t.Kind == k {
					return fmt.Sprintf("%.1f%% / %.1f%% (p %s)", 100*t.UnitShare, 100*t.PopulationShare, t.P())
				}
			}
			return "-"
		})
		row(k+" requests", func(r *Report) any { return r.Actor(k).Requests })
		row(k+" p50/p99 ms", func(r *Report) any { x := r.Actor(k); return fmt.Sprintf("%.1f/%.1f", x.P50Ms, x.P99Ms) })
		if k != Honest {
			row(k+" stopped by", func(r *Report) any { return firstN(rejections(r.Actor(k).Outcomes), 3) })
		}
	}
	for _, route := range []string{"challenge", "path", "buy", "order"} {
		n := 0
		for _, r := range reps {
			n += routeOf(r, route).N
		}
		if n == 0 {
			continue
		}
		row(route+" p50/p99 ms", func(r *Report) any { x := routeOf(r, route); return fmt.Sprintf("%.1f/%.1f", x.P50Ms, x.P99Ms) })
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
