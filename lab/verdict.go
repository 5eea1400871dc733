package lab

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Alpha is the significance level of the lab's verdict: an actor kind won
// significantly more than its fair share when the one-sided binomial
// p-value of its units is below Alpha.
const Alpha = 0.01

// Verdicts (Report.Verdict). The headline (Report.Headline) says it in a
// sentence.
const (
	// VerdictPass: every invariant held and no bot kind won significantly
	// more than its share of the population.
	VerdictPass = "PASS"
	// VerdictFail: an invariant broke (oversold, an account with two
	// units, an acknowledged purchase lost, or the reconcile command
	// failed). It wins over every other verdict.
	VerdictFail = "FAIL"
	// VerdictBotsWon: the defences were on and at least one bot kind won
	// significantly more than its share.
	VerdictBotsWon = "BOTS_WON"
	// VerdictAttackWon: a defence was switched off (the attack was
	// expected to win) and a bot kind won significantly more than its share.
	VerdictAttackWon = "ATTACK_WON"
	// VerdictAttackLost: a defence was switched off and yet no bot kind
	// won significantly more than its share.
	VerdictAttackLost = "ATTACK_LOST"
)

// ShareTest is one actor kind's share of the units sold against its share
// of the population (the accounts that took part), pooled over the run's
// seeds, with the one-sided binomial test: under a fair sale each unit goes
// to this kind with probability PopulationShare, so the units it won follow
// Binomial(UnitsSold, PopulationShare), and PValue = P(X >= Units).
type ShareTest struct {
	Kind            string  `json:"kind"`
	Accounts        int     `json:"accounts"`         // pooled over seeds
	PopulationShare float64 `json:"population_share"` // Accounts / all accounts
	Units           int     `json:"units"`            // units won, pooled
	UnitsSold       int     `json:"units_sold"`       // all kinds, pooled
	UnitShare       float64 `json:"unit_share"`       // Units / UnitsSold
	PValue          float64 `json:"p_value"`
	// Beat: Units is significantly above the fair share (PValue < Alpha).
	Beat bool `json:"beat_share"`
}

func (s ShareTest) String() string {
	return fmt.Sprintf("%s won %d of %d units (%.1f%%) with %.1f%% of the accounts (p = %s)",
		s.Kind, s.Units, s.UnitsSold, 100*s.UnitShare, 100*s.PopulationShare, fmtP(s.PValue))
}

func fmtP(p float64) string {
	switch {
	case p == 0:
		return "< 1e-300"
	case p < 1e-3:
		return fmt.Sprintf("%.1e", p)
	default:
		return fmt.Sprintf("%.3f", p)
	}
}

// ShareTests computes the test of every kind. accounts and units map each
// actor kind to its accounts and units won (pooled over seeds); kinds gives
// the order.
func ShareTests(kinds []string, accounts, units map[string]int) []ShareTest {
	total, sold := 0, 0
	for _, k := range kinds {
		total += accounts[k]
		sold += units[k]
	}
	out := make([]ShareTest, 0, len(kinds))
	for _, k := range kinds {
		t := ShareTest{Kind: k, Accounts: accounts[k], Units: units[k], UnitsSold: sold, PValue: 1}
		if total > 0 {
			t.PopulationShare = float64(t.Accounts) / float64(total)
		}
		if sold > 0 {
			t.UnitShare = float64(t.Units) / float64(sold)
			t.PValue = BinomialUpperTail(sold, t.Units, t.PopulationShare)
		}
		t.Beat = t.PValue < Alpha
		out = append(out, t)
	}
	return out
}

// BinomialUpperTail is P(X >= k) for X ~ Binomial(n, p), summed exactly
// term by term in log space (log-gamma binomial coefficients), so it is
// accurate for tails far below 1e-300 down to the float64 range, and for n
// in the millions.
func BinomialUpperTail(n, k int, p float64) float64 {
	switch {
	case k <= 0:
		return 1
	case k > n:
		return 0
	case p <= 0:
		return 0
	case p >= 1:
		return 1
	}
	lp, lq := math.Log(p), math.Log1p(-p)
	lgn, _ := math.Lgamma(float64(n) + 1)
	logTerm := func(i int) float64 {
		a, _ := math.Lgamma(float64(i) + 1)
		b, _ := math.Lgamma(float64(n-i) + 1)
		return lgn - a - b + float64(i)*lp + float64(n-i)*lq
	}
	// Sum the terms i = k..n relative to the largest one (log-sum-exp).
	// The terms rise up to the mode and fall after it.
	mode := int(math.Floor(float64(n+1) * p))
	peak := logTerm(max(k, min(mode, n)))
	sum := 0.0
	for i := k; i <= n; i++ {
		t := logTerm(i) - peak
		sum += math.Exp(t)
		if i > mode && t < -745 { // every later term is smaller still
			break
		}
	}
	return min(1, math.Exp(peak+math.Log(sum)))
}

// decide sets the verdict and the headline from the invariants and the
// share tests: FAIL when an invariant broke; with defences switched off,
// ATTACK_WON or ATTACK_LOST ("attack expected to win", and whether it
// did); otherwise BOTS_WON naming every bot kind that beat its share, or
// PASS.
func decide(invariantsOK bool, broken []string, defencesOff []string, tests []ShareTest) (verdict, headline string) {
	var beat []string
	for _, t := range tests {
		if t.Kind != Honest && t.Beat {
			beat = append(beat, t.String())
		}
	}
	winners := strings.Join(beat, "; ")
	switch {
	case !invariantsOK:
		h := "FAIL: invariant broken: " + strings.Join(broken, "; ")
		if len(beat) > 0 {
			h += "; and bots beat their share: " + winners
		}
		return VerdictFail, h
	case len(defencesOff) > 0 && len(beat) > 0:
		return VerdictAttackWon, fmt.Sprintf("ATTACK EXPECTED TO WIN (defences off: %s), AND IT DID: %s", strings.Join(defencesOff, ", "), winners)
	case len(defencesOff) > 0:
		return VerdictAttackLost, fmt.Sprintf("ATTACK EXPECTED TO WIN (defences off: %s), BUT IT DID NOT: no bot kind won significantly more than its share (one-sided binomial, alpha %g); invariants held", strings.Join(defencesOff, ", "), Alpha)
	case len(beat) > 0:
		return VerdictBotsWon, "BOTS WON: " + winners + "; invariants held"
	}
	return VerdictPass, fmt.Sprintf("PASS: invariants held and no bot kind won significantly more than its share of the population (one-sided binomial, alpha %g)", Alpha)
}

// BotsThatBeat lists the bot kinds that won significantly more than their
// share, in report order.
func (rep *Report) BotsThatBeat() []string {
	var out []string
	for _, t := range rep.Shares {
		if t.Kind != Honest && t.Beat && !slices.Contains(out, t.Kind) {
			out = append(out, t.Kind)
		}
	}
	return out
}
