package lab

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// TestBinomialUpperTail against exact values: sum of C(n,i) p^i (1-p)^(n-i)
// for i >= k computed with Python's fractions (exact rational arithmetic):
//
//	from fractions import Fraction as F; from math import comb
//	float(sum(comb(n,i)*p**i*(1-p)**(n-i) for i in range(k,n+1)))
func TestBinomialUpperTail(t *testing.T) {
	for _, c := range []struct {
		n, k int
		p    float64
		want float64
	}{
		{10, 3, 1.0 / 10, 7.019082640000000e-02},
		{100, 92, 1.0 / 11, 1.362063179463078e-85}, // a farm of 100 among 1,100 accounts takes 92 of 100 units
		{1000, 120, 1.0 / 10, 2.199614496579435e-02},
		{50, 2, 1.0 / 171, 3.480667731403490e-02},
		{1000, 91, 1.0 / 11, 5.119645976396897e-01}, // exactly the fair share
		{1000, 110, 1.0 / 11, 2.265994029047933e-02},
		{20, 20, 0.5, 9.536743164062500e-07},
		{100, 15, 1.0 / 10, 7.257296526488076e-02},
		{20, 0, 0.5, 1},
		{5, 6, 0.5, 0},
		{5, 1, 0, 0},
		{5, 5, 1, 1},
	} {
		got := BinomialUpperTail(c.n, c.k, c.p)
		if rel := math.Abs(got-c.want) / math.Max(c.want, 1e-300); rel > 1e-9 && !(got == 0 && c.want == 0) {
			t.Errorf("P(X >= %d | n=%d, p=%g) = %.15e, want %.15e (relative error %.2g)", c.k, c.n, c.p, got, c.want, rel)
		}
	}
	// Below float64's range the log still says how small: the farm's 821
	// of 1,000 units with 1/11 of the accounts (exact: -659.8024475093).
	if got := LogBinomialUpperTail(1000, 821, 1.0/11) / math.Ln10; math.Abs(got+659.8024475093) > 1e-6 {
		t.Errorf("log10 P(X >= 821 | 1000, 1/11) = %.10f, want -659.8024475093", got)
	}
	if x := farmTests(821, 179)[1]; x.PValue != 0 || x.P() != "10^-659.8" || !x.Beat {
		t.Errorf("821 of 1,000: %+v, shown as %s", x, x.P())
	}
	// A tail far below float64's smallest normal number still comes out
	// as a number, not NaN, and the tail only falls as k grows.
	prev := 2.0
	for k := 0; k <= 1000; k += 50 {
		v := BinomialUpperTail(1000, k, 0.01)
		if math.IsNaN(v) || v > prev || v < 0 {
			t.Fatalf("P(X >= %d | 1000, 0.01) = %g after %g", k, v, prev)
		}
		prev = v
	}
}

// fair: a farm of 100 accounts among 1,100 wins 9 of 100 units per seed,
// its fair share; biased: it wins 92.
func farmTests(farmUnits, honestUnits int) []ShareTest {
	return ShareTests([]string{Honest, AccountFarm}, map[string]int{Honest: 10000, AccountFarm: 1000},
		map[string]int{Honest: honestUnits, AccountFarm: farmUnits})
}

func TestShareTestsFlagBiasNotFairness(t *testing.T) {
	// 10 seeds of 100 units pooled: 1,000 units.
	biased := farmTests(920, 80)
	if f := biased[1]; !f.Beat || f.PValue > 1e-100 || f.UnitsSold != 1000 || math.Abs(f.PopulationShare-1.0/11) > 1e-12 {
		t.Errorf("a farm with 9.1%% of the accounts and 92%% of the units: %+v", f)
	}
	if biased[0].Beat {
		t.Errorf("honest users with 8%% of the units flagged as beating their share: %+v", biased[0])
	}
	fair := farmTests(91, 909)
	for _, x := range fair {
		if x.Beat {
			t.Errorf("a fair outcome flagged: %+v", x)
		}
	}
	// Slightly above the share but within chance (p = 0.023 > 0.01).
	if x := farmTests(110, 890)[1]; x.Beat || x.PValue < 0.02 || x.PValue > 0.03 {
		t.Errorf("110 of 1,000 units with 1/11 of the accounts: %+v", x)
	}
	// Nothing sold: nobody beat anything.
	for _, x := range farmTests(0, 0) {
		if x.Beat || x.PValue != 1 {
			t.Errorf("nothing sold: %+v", x)
		}
	}
}

func TestDecide(t *testing.T) {
	biased, fair := farmTests(920, 80), farmTests(91, 909)
	for _, c := range []struct {
		name     string
		ok       bool
		off      []string
		tests    []ShareTest
		verdict  string
		contains []string
	}{
		{"fair", true, nil, fair, VerdictPass, []string{"PASS", "alpha 0.01"}},
		{"farm wins", true, nil, biased, VerdictBotsWon, []string{"BOTS WON", "account_farm won 920 of 1000 units (92.0%) with 9.1% of the accounts"}},
		{"defence off, attack won", true, []string{"path_binding"}, biased, VerdictAttackWon, []string{"ATTACK EXPECTED TO WIN (defences off: path_binding), AND IT DID", "account_farm"}},
		{"defence off, attack lost", true, []string{"challenge", "bloom"}, fair, VerdictAttackLost, []string{"ATTACK EXPECTED TO WIN (defences off: challenge, bloom), BUT IT DID NOT"}},
		{"broken and biased", false, nil, biased, VerdictFail, []string{"FAIL: invariant broken: not oversold", "account_farm won 920"}},
		{"broken, defence off", false, []string{"bloom"}, fair, VerdictFail, []string{"FAIL"}},
	} {
		var broken []string
		if !c.ok {
			broken = []string{"not oversold (orders=101 units=100)"}
		}
		v, h := decide(c.ok, broken, c.off, c.tests)
		if v != c.verdict {
			t.Errorf("%s: verdict %s, want %s (%s)", c.name, v, c.verdict, h)
		}
		for _, s := range c.contains {
			if !strings.Contains(h, s) {
				t.Errorf("%s: headline %q lacks %q", c.name, h, s)
			}
		}
		// Never a plain PASS while a bot kind beat its share.
		if strings.HasPrefix(h, "PASS") && c.tests[1].Beat {
			t.Errorf("%s: PASS while %s beat its share", c.name, c.tests[1].Kind)
		}
	}
}

// TestHonestWinningIsNoBotWin: honest users beating their share (the
// defences working) is not named in the headline.
func TestHonestWinningIsNoBotWin(t *testing.T) {
	tests := ShareTests([]string{Honest, EarlyArrival}, map[string]int{Honest: 1000, EarlyArrival: 1000}, map[string]int{Honest: 100, EarlyArrival: 0})
	if !tests[0].Beat {
		t.Fatalf("honest 100 of 100 with half the accounts not flagged: %+v", tests[0])
	}
	if v, h := decide(true, nil, nil, tests); v != VerdictPass {
		t.Errorf("verdict %s: %s", v, h)
	}
}

func TestArrivalsFixedBySeed(t *testing.T) {
	h := HonestSpec{Arrival: "uniform", Over: 10e9}
	a, b, c := arrivals(h, 100, 1), arrivals(h, 100, 1), arrivals(h, 100, 2)
	same := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("seed 1 twice: arrival %d is %s then %s", i, a[i], b[i])
		}
		if a[i] == c[i] {
			same++
		}
		if a[i] < 0 || a[i] >= h.Over {
			t.Fatalf("arrival %s outside [0, %s)", a[i], h.Over)
		}
	}
	if same == len(a) {
		t.Error("seeds 1 and 2 give the same arrivals")
	}
}

func TestAddressPlan(t *testing.T) {
	sc := &Scenario{Units: 1, Honest: HonestSpec{Users: 1000, Addresses: []AddressGroup{
		{Name: "carrier_nat", Users: 300, PerIP: 100, IPsPerNetwork: 3},
		{Name: "office", Users: 100, PerIP: 20, IPsPerNetwork: 5},
	}}}
	sc.defaults()
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	p := &play{sc: sc, honestBase: 7}
	ips := p.addressPlan()
	if len(ips) != 1000 {
		t.Fatalf("%d addresses", len(ips))
	}
	perIP, per24 := map[string]int{}, map[string]int{}
	for _, ip := range ips {
		perIP[ip]++
		per24[ip[:strings.LastIndex(ip, ".")]]++
	}
	// 3 NAT addresses in one /24, 5 office addresses in another, then
	// 600 homes, 254 to a /24 (3 more /24s).
	if perIP[ips[0]] != 100 || perIP[ips[299]] != 100 || perIP[ips[300]] != 20 || perIP[ips[999]] != 1 {
		t.Errorf("users per address: nat %d, office %d, home %d", perIP[ips[0]], perIP[ips[300]], perIP[ips[999]])
	}
	if len(perIP) != 3+5+600 || len(per24) != 1+1+3 {
		t.Errorf("%d addresses in %d /24s, want 608 in 5", len(perIP), len(per24))
	}
	farm := BotSpec{Kind: AccountFarm, Accounts: 100, Networks: 10, PerIP: 5}
	f1, f2 := p.farmAddresses(farm), p.farmAddresses(farm)
	fIP, f24 := map[string]int{}, map[string]int{}
	for _, ip := range append(f1, f2...) {
		fIP[ip]++
		f24[ip[:strings.LastIndex(ip, ".")]]++
	}
	// Two sales: 20 fresh /24s, 10 accounts in each, 5 per address.
	if len(f24) != 20 || len(fIP) != 40 {
		t.Errorf("farm: %d addresses in %d /24s, want 40 in 20", len(fIP), len(f24))
	}
	for ip, n := range fIP {
		if n != 5 {
			t.Errorf("farm address %s holds %d accounts", ip, n)
		}
	}
}

// TestBuildPoolsSeeds: two seeds' sales pooled: units and accounts summed
// per kind, invariants prefixed by seed, the verdict from the pooled
// shares; registrations before a sale stay out of its per-second series.
func TestBuildPoolsSeeds(t *testing.T) {
	sc := &Scenario{Name: "t", Units: 10, Honest: HonestSpec{Users: 90}, Bots: []BotSpec{{Kind: AccountFarm, Accounts: 10, Networks: 1}}}
	sc.defaults()
	p := &play{sc: sc, notes: &noteSet{}}
	sale := func(seed uint64, farmWins int) *saleResult {
		s := &saleResult{seed: seed, accounts: map[string]int{Honest: 90, AccountFarm: 10}, actors: map[string]int{Honest: 90, AccountFarm: 1},
			wins: map[string]int{}, kindOf: map[string]string{}, refused: map[string]string{}, outcomes: map[string]int{}}
		for i := range 10 {
			kind, name := Honest, fmt.Sprintf("h%d", i)
			if i < farmWins {
				kind, name = AccountFarm, fmt.Sprintf("f%d", i)
			}
			s.wins[name], s.kindOf[name] = 1, kind
			s.recs = append(s.recs, Record{Actor: kind, Route: "buy", Status: 202, At: time.Duration(i) * time.Millisecond})
		}
		// A registration timed from a zero start: far in the future.
		s.recs = append(s.recs, Record{Actor: AccountFarm, Route: "register", Status: 201, At: time.Duration(math.MaxInt64)})
		s.inv.Checks = []Check{{Name: "not oversold", OK: true}}
		return s
	}
	rep := p.build([]*saleResult{sale(1, 9), sale(2, 8)}, &population{})
	if len(rep.Series) != 1 || rep.PeakRPS != 10 {
		t.Errorf("series of %d seconds, peak %v: want 1 and 10", len(rep.Series), rep.PeakRPS)
	}
	f := rep.Shares[1]
	if f.Kind != AccountFarm || f.Units != 17 || f.UnitsSold != 20 || f.Accounts != 20 || !f.Beat {
		t.Errorf("farm share: %+v", f)
	}
	if rep.Verdict != VerdictBotsWon || len(rep.Invariants.Checks) != 2 || rep.Invariants.Checks[1].Name != "seed 2: not oversold" {
		t.Errorf("verdict %s, checks %+v", rep.Verdict, rep.Invariants.Checks)
	}
	if rep.Seeds[0].UnitsWon[AccountFarm] != 9 || rep.Seeds[1].UnitsWon[Honest] != 2 {
		t.Errorf("seeds: %+v", rep.Seeds)
	}
}

// TestAcceptedCheck: reserved units must equal the 202s the lab saw, or
// lie between them and the 202s plus the buys it got no answer to.
func TestAcceptedCheck(t *testing.T) {
	for _, c := range []struct {
		accepted, unanswered, reserved int64
		ok                             bool
	}{
		{100, 0, 100, true},
		{99, 0, 100, false},
		{100, 0, 99, false},
		{52, 48, 100, true}, // seed 1 of the first scalpers-queue run: 48 client timeouts
		{52, 48, 52, true},
		{52, 48, 101, false},
		{52, 48, 51, false},
	} {
		if got := acceptedCheck(c.accepted, c.unanswered, c.reserved); got.OK != c.ok {
			t.Errorf("%+v: %+v", c, got)
		}
	}
}
