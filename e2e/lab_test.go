package e2e

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"seckill/edge"
	"seckill/lab"
)

// runLab plays a scenario file through the lab package against a fresh
// backend + edge on the real servers (the edge trusts 127.0.0.1 for
// X-Forwarded-For, as the lab needs).
func runLab(t *testing.T, file string, defencesOff ...string) *lab.Report {
	t.Helper()
	env := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 8, PathTTL: 2 * time.Second})
	sc, err := lab.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.SwitchOff(defencesOff...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := lab.Run(ctx, sc, lab.Config{EdgeURL: env.pub.URL, AdminURL: env.adm.URL, AdminToken: env.token})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	t.Logf("%s (defences off %v):\n%s", file, defencesOff, buf.String())
	switch {
	case len(defencesOff) == 0 && !rep.Passed():
		t.Errorf("verdict %s: %s", rep.Verdict, rep.Headline)
	case len(defencesOff) > 0 && !rep.InvariantsHeld():
		t.Errorf("verdict %s: %s", rep.Verdict, rep.Headline)
	}
	return rep
}

// TestLabSmall: configs/lab/small.yaml against the real servers. The
// honest users get all the stock, except the one unit a repeat_clicker
// account may win with its first (honest) purchase; bots that skip or
// replay challenges, guess or share paths, flood, come too late or too
// slowly get none; the invariants hold.
func TestLabSmall(t *testing.T) {
	t.Parallel()
	rep := runLab(t, "../configs/lab/small.yaml")
	honest, clicker := rep.Actor(lab.Honest), rep.Actor(lab.RepeatClicker)
	if honest.UnitsWon+clicker.UnitsWon != rep.Units {
		t.Errorf("honest won %d, repeat_clicker %d, of %d units", honest.UnitsWon, clicker.UnitsWon, rep.Units)
	}
	if clicker.UnitsWon > clicker.Accounts {
		t.Errorf("repeat_clicker won %d units with %d accounts", clicker.UnitsWon, clicker.Accounts)
	}
	if honest.UnitsWon < rep.Units-clicker.Accounts {
		t.Errorf("honest won only %d of %d", honest.UnitsWon, rep.Units)
	}
	for _, k := range []string{lab.SkipChallenge, lab.PathGuesser, lab.ChallengeReplayer, lab.OneIPFlood, lab.ManyIPFlood,
		lab.SoldOutHammerer, lab.SlowClient, lab.PathSharer} {
		a := rep.Actor(k)
		if a.Requests == 0 {
			t.Errorf("%s sent no request", k)
		}
		if a.UnitsWon != 0 {
			t.Errorf("%s won %d units", k, a.UnitsWon)
		}
	}
	if n := rep.Actor(lab.PathGuesser).Outcomes["403 bad_path"]; n == 0 {
		t.Errorf("path_guesser never got 403 bad_path: %v", rep.Actor(lab.PathGuesser).Outcomes)
	}
	// The slow client's late buy meets the expired path (403 bad_path) or,
	// when the sale sold out meanwhile, the sold-out marker checked first.
	if o := rep.Actor(lab.SlowClient).Outcomes; o["403 bad_path"]+o["410 sold_out"] == 0 {
		t.Errorf("slow_client's late buy was not refused: %v", o)
	}
	if inv := rep.Invariants; inv.Accepted != int64(rep.Units) || inv.Final.Orders != int64(rep.Units) {
		t.Errorf("accepted %d, orders %d, want %d", inv.Accepted, inv.Final.Orders, rep.Units)
	}

	// The files, and reading them back.
	dir := t.TempDir()
	if err := rep.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	back, err := lab.ReadReport(filepath.Join(dir, "report.json"))
	if err != nil || back.Verdict != rep.Verdict || back.Actor(lab.Honest).UnitsWon != honest.UnitsWon {
		t.Fatalf("report.json read back: %v %+v", err, back)
	}
}

// TestLabPathSharing: configs/lab/path-sharing.yaml twice. With
// path_binding off the path_sharer receivers win units; with it on, none.
func TestLabPathSharing(t *testing.T) {
	t.Parallel()
	for _, off := range []bool{false, true} {
		name := "binding_on"
		var defences []string
		if off {
			name, defences = "binding_off", []string{"path_binding"}
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rep := runLab(t, "../configs/lab/path-sharing.yaml", defences...)
			won := rep.Actor(lab.PathSharer).UnitsWon
			switch {
			// The sale is not scarce (100 units for 50 honest users and 15
			// sharer accounts), so the sharers win units without beating
			// their share: the verdict is labelled, and says whether the
			// attack won by the share test.
			case off && (rep.Verdict != lab.VerdictAttackWon && rep.Verdict != lab.VerdictAttackLost || !strings.HasPrefix(rep.Headline, "ATTACK EXPECTED TO WIN (defences off: path_binding)")):
				t.Errorf("path_binding off: verdict %s: %s", rep.Verdict, rep.Headline)
			case off && won == 0:
				t.Errorf("path_binding off: path_sharer won nothing: %v", rep.Actor(lab.PathSharer).Outcomes)
			case !off && won != 0:
				t.Errorf("path_binding on: path_sharer won %d units", won)
			}
		})
	}
}

// farmScenario: 60 honest users (6 of them register through the route,
// 30 behind one carrier-NAT /24) arriving over 3 s, an account farm of 20
// fresh accounts from 4 networks (2 to an address: the registration
// bucket's burst of 5 holds both of an address's challenges and
// registrations) at the first instant and one
// early-arrival bot, for 20 units, two seeds.
const farmScenario = `
name: farm-e2e
units: 20
challenge: pow
start_in: 14s
next_start_in: 3s
xff: true
duration: 20s
bot_linger: 500ms
settle: 20s
seeds: [1, 2]
honest:
  users: 60
  arrival: uniform
  over: 3s
  register: 6
  addresses:
    - {name: carrier_nat, users: 30, per_ip: 15, ips_per_network: 2}
bots:
  - {kind: account_farm, accounts: 20, networks: 4, per_ip: 2, register_before: 12s}
  - {kind: early_arrival, count: 1}
`

// TestLabFarm: the farm registers its 20 accounts through the public route
// (registration challenge, 2 to an address, 4 fresh /24s), plays them at
// the first instant of both sales and takes far more than its share of the
// accounts: the verdict is BOTS_WON and names it; the invariants hold over
// both seeds.
func TestLabFarm(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 8, PathTTL: 2 * time.Second})
	sc, err := lab.Parse([]byte(farmScenario))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := lab.Run(ctx, sc, lab.Config{EdgeURL: env.pub.URL, AdminURL: env.adm.URL, AdminToken: env.token})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	t.Logf("farm:\n%s", buf.String())
	if !rep.InvariantsHeld() || len(rep.Seeds) != 2 {
		t.Fatalf("verdict %s over %d seeds: %s", rep.Verdict, len(rep.Seeds), rep.Headline)
	}
	pop := rep.Population
	if pop.FarmRegistration["201"] != 20 || len(pop.FarmRegistration) != 1 {
		t.Errorf("farm registrations %v, want 20 × 201 (once, for both sales)", pop.FarmRegistration)
	}
	if pop.HonestRegistration["201"] != 6 || pop.HonestRefusedBudget != 0 || pop.HonestNotEligible != 0 {
		t.Errorf("honest registration %v, refused %d + %d", pop.HonestRegistration, pop.HonestRefusedBudget, pop.HonestNotEligible)
	}
	var farm, sold int
	for _, s := range rep.Shares {
		sold = s.UnitsSold
		if s.Kind == lab.AccountFarm {
			farm = s.Units
			if s.Accounts != 40 || !s.Beat {
				t.Errorf("farm share test: %+v", s)
			}
		}
	}
	if sold != 40 || rep.Invariants.Final.Orders != 40 {
		t.Errorf("sold %d (orders %d), want 40 over two sales of 20", sold, rep.Invariants.Final.Orders)
	}
	if rep.Verdict != lab.VerdictBotsWon || !slices.Contains(rep.BotsThatBeat(), lab.AccountFarm) || !strings.Contains(rep.Headline, "account_farm won") {
		t.Errorf("farm won %d of %d: verdict %s: %s", farm, sold, rep.Verdict, rep.Headline)
	}
	if ea := rep.Actor(lab.EarlyArrival); ea.Requests == 0 || ea.UnitsWon > 2 {
		t.Errorf("early_arrival: %d requests, %d units", ea.Requests, ea.UnitsWon)
	}
}

// TestLabFarmTooYoung: the farm scenario with min_account_age 60s. The
// honest accounts are made when the run begins and the lab waits real time
// until they are older than that before the first sale; the farm registers
// from 8 s before it (the sale is created once the farm is done), so its
// accounts are well under a minute old at either sale: every farm account is refused (409 not_eligible) in both sales,
// the farm wins nothing, no honest account is refused, and the verdict is
// PASS.
func TestLabFarmTooYoung(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 8, PathTTL: 2 * time.Second})
	raw := strings.Replace(farmScenario, "start_in: 14s\n", "start_in: 14s\nmin_account_age: 60s\n", 1)
	raw = strings.Replace(raw, "register_before: 12s", "register_before: 8s", 1)
	sc, err := lab.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	rep, err := lab.Run(ctx, sc, lab.Config{EdgeURL: env.pub.URL, AdminURL: env.adm.URL, AdminToken: env.token})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	t.Logf("farm, min_account_age 60s (run took %s):\n%s", time.Since(began).Round(time.Second), buf.String())
	if rep.Verdict != lab.VerdictPass || rep.MinAccountAge != "1m0s" {
		t.Errorf("verdict %s: %s", rep.Verdict, rep.Headline)
	}
	pop := rep.Population
	if pop.FarmRegistration["201"] != 20 || pop.FarmNotEligible != 40 {
		t.Errorf("farm: registrations %v, refused as not eligible %d times, want 20 and 40 (20 accounts, 2 sales)", pop.FarmRegistration, pop.FarmNotEligible)
	}
	if pop.HonestRefusedBudget+pop.HonestNotEligible != 0 || pop.HonestRegistration["201"] != 6 {
		t.Errorf("honest refused: %d at registration, %d not eligible", pop.HonestRefusedBudget, pop.HonestNotEligible)
	}
	farm := rep.Actor(lab.AccountFarm)
	if farm.UnitsWon != 0 || farm.Outcomes["409 not_eligible"] < 40 {
		t.Errorf("farm won %d units; outcomes %v", farm.UnitsWon, farm.Outcomes)
	}
	if rep.Invariants.Final.Orders != 40 || rep.Actor(lab.Honest).UnitsWon+rep.Actor(lab.EarlyArrival).UnitsWon != 40 {
		t.Errorf("orders %d, honest won %d, early_arrival %d; want 40 to them", rep.Invariants.Final.Orders, rep.Actor(lab.Honest).UnitsWon, rep.Actor(lab.EarlyArrival).UnitsWon)
	}
}
