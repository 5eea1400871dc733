// Package lab plays a flash sale against a running edge: it creates the
// sale through the admin API, sends honest users (who do exactly what the
// storefront does) and bots of several kinds, records the outcome of every
// request, checks the invariants at the end and writes a report.
//
// The lab only drives pow and none items: for a captcha item an honest lab
// user cannot read the image, so it gives up honestly (outcome
// "captcha_unsolved") and wins nothing.
//
// Client addresses: honest users and most bots send X-Forwarded-For with an
// address of their own when the scenario says xff: true. The edge believes
// X-Forwarded-For only from its trusted proxies, so it must run with
// --trusted-proxies 127.0.0.1/32 (or the lab's address); otherwise every lab
// user shares the lab's address and the per-IP token buckets throttle the
// honest users.
package lab

import (
	"fmt"
	"os"
	"slices"
	"time"

	"gopkg.in/yaml.v3"
)

// Bot kinds.
const (
	SkipChallenge     = "skip_challenge"     // buys without a path, or with a made-up one
	PathGuesser       = "path_guesser"       // random 128-bit paths
	ChallengeReplayer = "challenge_replayer" // replays one solved challenge id/answer
	OneIPFlood        = "one_ip_flood"       // one address hammering challenge and buy
	ManyIPFlood       = "many_ip_flood"      // random spoofed X-Forwarded-For per request
	RepeatClicker     = "repeat_clicker"     // one account buying again and again with fresh paths
	SoldOutHammerer   = "sold_out_hammerer"  // keeps trying once the sale is sold out
	SlowClient        = "slow_client"        // gets a path, waits past its expiry, then buys
	PathSharer        = "path_sharer"        // solves once, shares the path with K accounts of its own
	// AccountFarm registers Accounts fresh accounts from Networks /24
	// networks (PerIP accounts per address) ahead of the sale, solving the
	// registration challenge, then plays the sale with all of them at its
	// first instant, as fast as it can.
	AccountFarm = "account_farm"
	// EarlyArrival is one old account that acts in the first millisecond
	// of every window (the sale's start; later the queue and entry
	// windows), spinning on 409 not_live, then plays as fast as it can.
	EarlyArrival = "early_arrival"
	// OCRBot plays like an honest user but reads captchas with the lab's
	// captcha solver (Config.SolveCaptcha; the OCR of lab/ocr*.go).
	OCRBot = "ocr_bot"
)

// BotKinds lists every bot kind.
var BotKinds = []string{SkipChallenge, PathGuesser, ChallengeReplayer, OneIPFlood, ManyIPFlood,
	RepeatClicker, SoldOutHammerer, SlowClient, PathSharer, AccountFarm, EarlyArrival, OCRBot}

// Honest is the actor kind of honest users.
const Honest = "honest"

// Defence switch names (PUT /admin/items/{id}/defences).
var DefenceNames = []string{"challenge", "path_binding", "single_use", "bloom", "buckets", "breaker", "shedding"}

// Scenario is one lab run, read from YAML (configs/lab/*.yaml).
type Scenario struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Sale.
	Units      int           `yaml:"units"`
	PriceCents int           `yaml:"price_cents"`
	Challenge  string        `yaml:"challenge"`   // pow (default) or none; captcha: honest users give up
	StartIn    time.Duration `yaml:"start_in"`    // the sale starts this long after it is created
	SaleLength time.Duration `yaml:"sale_length"` // ends_at - starts_at (default 1h)
	// NextStartIn: the sales after the first start this long after they
	// are created (default start_in).
	NextStartIn time.Duration `yaml:"next_start_in"`
	// Seeds: one sale per seed, played one after the other; the verdict
	// pools them. The seed fixes every actor's arrival (default [1];
	// seckill lab run --seeds N plays seeds 1..N).
	Seeds []uint64 `yaml:"seeds"`
	// Eligibility rules of the sale (issue 15): accounts younger than
	// MinAccountAge when the sale opens cannot take part (409
	// not_eligible); MaxPerNetwork caps the units per registration
	// network. With MinAccountAge set the lab makes sure the population's
	// accounts (all but the farm's, which registers register_before the
	// start) are older than it when the first sale opens, by waiting: it
	// never backdates an account.
	MinAccountAge time.Duration `yaml:"min_account_age"`
	MaxPerNetwork int64         `yaml:"max_per_network"`
	// Queue, when set, makes the sale a waiting room (lab/queue.go).
	Queue *QueueSpec `yaml:"queue"`
	// Defences maps switch names to false to turn them off for the sale
	// (only false is sent; true keeps the default).
	Defences map[string]bool `yaml:"defences"`
	// XFF: send X-Forwarded-For with a per-actor address (the edge must
	// trust the lab's address: --trusted-proxies 127.0.0.1/32).
	XFF bool `yaml:"xff"`
	// Duration is the longest the sale is played (honest users who have
	// not finished by then stop); bots stop at Duration or BotLinger after
	// the last honest user finished, whichever comes first.
	Duration  time.Duration `yaml:"duration"`
	BotLinger time.Duration `yaml:"bot_linger"`
	// Settle is the longest wait at the end for outbox_pending = 0 and
	// orders = reserved.
	Settle time.Duration `yaml:"settle"`
	// Connections caps the lab's connections to the edge.
	Connections int `yaml:"connections"`
	// Timeout of one request.
	Timeout time.Duration `yaml:"timeout"`

	Honest HonestSpec `yaml:"honest"`
	Bots   []BotSpec  `yaml:"bots"`

	// Draw (allocation: draw, issue 17; lab/draw.go): entries open at
	// the sale's start for EntryWindow; the draw is made 1 s after they
	// close; winners buy within ClaimWindow (0: until the sale ends);
	// Waitlist places take unclaimed units.
	Allocation  string        `yaml:"allocation"`
	EntryWindow time.Duration `yaml:"entry_window"`
	ClaimWindow time.Duration `yaml:"claim_window"`
	Waitlist    int           `yaml:"waitlist"`
}

// HonestSpec describes the honest users.
type HonestSpec struct {
	Users int `yaml:"users"`
	// Arrival: all_at_once, linear (ramp over Over) or poisson (Rate users/s).
	Arrival string        `yaml:"arrival"`
	Over    time.Duration `yaml:"over"`
	Rate    float64       `yaml:"rate"`
	// PollInitial/PollMax: backoff of the order status poll.
	PollInitial time.Duration `yaml:"poll_initial"`
	PollMax     time.Duration `yaml:"poll_max"`
	// MaxAttempts bounds the challenge/path/buy restarts of one user.
	MaxAttempts int `yaml:"max_attempts"`
	// Addresses: how honest users share addresses (carrier NAT, offices);
	// users not in a group get an address of their own (254 to a /24, as
	// homes of one provider).
	Addresses []AddressGroup `yaml:"addresses"`
	// Register: this many honest users (spread evenly over the
	// population, so over its address groups) register through
	// the public route (registration challenge, per-network budgets) before
	// the first sale, from their own (shared) addresses; the others have
	// accounts of long standing (made through POST /admin/sessions). The
	// report counts those the budgets refused.
	Register int `yaml:"register"`
}

// AddressGroup is a group of honest users behind shared addresses.
type AddressGroup struct {
	Name  string `yaml:"name" json:"name"`     // e.g. carrier_nat, office
	Users int    `yaml:"users" json:"users"`   // honest users in the group
	PerIP int    `yaml:"per_ip" json:"per_ip"` // users behind one address (default 1)
	// IPsPerNetwork: addresses of the group in one /24 (default 1).
	IPsPerNetwork int `yaml:"ips_per_network" json:"ips_per_network"`
}

// BotSpec is one bot profile.
type BotSpec struct {
	Kind  string  `yaml:"kind"`
	Count int     `yaml:"count"` // bots of this kind (each with its own account)
	Rate  float64 `yaml:"rate"`  // requests per second of each bot
	// StartIn delays the bots after the sale starts.
	StartIn time.Duration `yaml:"start_in"`
	// Accounts (one_ip_flood, many_ip_flood): sessions each flood bot
	// rotates through (default 5), so the per-IP buckets, not only the
	// per-user ones, have something to catch.
	Accounts int `yaml:"accounts"`
	// ShareWith (path_sharer): accounts each sharer gives its paths to.
	ShareWith int `yaml:"share_with"`
	// WaitPastExpiry (slow_client): wait this long past the path's
	// expires_at before buying; MaxWait: if the path lives longer than
	// that, the bot does not buy (noted in the report).
	WaitPastExpiry time.Duration `yaml:"wait_past_expiry"`
	MaxWait        time.Duration `yaml:"max_wait"`
	// Networks (account_farm): /24 networks the farm's Accounts come
	// from; PerIP accounts share one address (default 5, the shipped
	// budget of one address). RegisterBefore: the farm starts registering
	// this long before the first sale starts (default: when the sale is
	// created). FreshAccounts: the farm registers new accounts (from new
	// networks) before every sale; by default it registers once and plays
	// every seed's sale with the same accounts, as a farm keeps its
	// accounts.
	Networks       int           `yaml:"networks"`
	PerIP          int           `yaml:"per_ip"`
	RegisterBefore time.Duration `yaml:"register_before"`
	FreshAccounts  bool          `yaml:"fresh_accounts"`
}

// Load reads and checks a scenario file.
func Load(file string) (*Scenario, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return Parse(raw)
}

// Parse reads and checks a scenario.
func Parse(raw []byte) (*Scenario, error) {
	var s Scenario
	if err := yaml.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	s.defaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Scenario) defaults() {
	h := &s.Honest
	if s.Challenge == "" {
		s.Challenge = "pow"
	}
	if s.PriceCents == 0 {
		s.PriceCents = 999
	}
	if s.SaleLength == 0 {
		s.SaleLength = time.Hour
	}
	if s.Duration == 0 {
		s.Duration = 30 * time.Second
	}
	if s.BotLinger == 0 {
		s.BotLinger = time.Second
	}
	if s.Settle == 0 {
		s.Settle = 30 * time.Second
	}
	if s.NextStartIn == 0 {
		s.NextStartIn = s.StartIn
	}
	if len(s.Seeds) == 0 {
		s.Seeds = []uint64{1}
	}
	for i := range h.Addresses {
		g := &h.Addresses[i]
		g.PerIP = max(g.PerIP, 1)
		g.IPsPerNetwork = max(g.IPsPerNetwork, 1)
	}
	if s.Connections == 0 {
		s.Connections = 512
	}
	if s.Timeout == 0 {
		s.Timeout = 10 * time.Second
	}
	if h.Arrival == "" {
		h.Arrival = "all_at_once"
	}
	if h.PollInitial == 0 {
		h.PollInitial = 200 * time.Millisecond
	}
	if h.PollMax == 0 {
		h.PollMax = 2 * time.Second
	}
	if h.MaxAttempts == 0 {
		h.MaxAttempts = 5
	}
	for i := range s.Bots {
		b := &s.Bots[i]
		if b.Count == 0 {
			b.Count = 1
		}
		if b.Rate == 0 {
			b.Rate = 5
		}
		if (b.Kind == OneIPFlood || b.Kind == ManyIPFlood) && b.Accounts == 0 {
			b.Accounts = 5
		}
		if b.Kind == AccountFarm {
			if b.Accounts == 0 {
				b.Accounts = 100
			}
			if b.Networks == 0 {
				b.Networks = 10
			}
			if b.PerIP == 0 {
				b.PerIP = 5
			}
		}
		if b.Kind == PathSharer && b.ShareWith == 0 {
			b.ShareWith = 3
		}
		if b.Kind == SlowClient {
			if b.WaitPastExpiry == 0 {
				b.WaitPastExpiry = 500 * time.Millisecond
			}
			if b.MaxWait == 0 {
				b.MaxWait = 90 * time.Second
			}
		}
	}
}

// Validate reports the first problem of the scenario.
func (s *Scenario) Validate() error {
	if err := s.validateDraw(); err != nil { // lab/draw.go
		return err
	}
	if s.Units <= 0 {
		return fmt.Errorf("units must be > 0")
	}
	switch s.Challenge {
	case "pow", "none", "captcha":
	default:
		return fmt.Errorf("challenge %q: want pow, none or captcha", s.Challenge)
	}
	for k := range s.Defences {
		if !slices.Contains(DefenceNames, k) {
			return fmt.Errorf("defences: unknown switch %q (known: %v)", k, DefenceNames)
		}
	}
	switch s.Honest.Arrival {
	case "all_at_once":
	case "linear", "uniform":
		if s.Honest.Over <= 0 {
			return fmt.Errorf("honest.arrival %s needs honest.over > 0", s.Honest.Arrival)
		}
	case "poisson":
		if s.Honest.Rate <= 0 {
			return fmt.Errorf("honest.arrival poisson needs honest.rate > 0")
		}
	default:
		return fmt.Errorf("honest.arrival %q: want all_at_once, linear, uniform or poisson", s.Honest.Arrival)
	}
	if s.Honest.Users < 0 {
		return fmt.Errorf("honest.users must be >= 0")
	}
	grouped := 0
	for _, g := range s.Honest.Addresses {
		if g.Users < 0 {
			return fmt.Errorf("honest.addresses %s: users must be >= 0", g.Name)
		}
		grouped += g.Users
	}
	if grouped > s.Honest.Users {
		return fmt.Errorf("honest.addresses hold %d users, more than honest.users (%d)", grouped, s.Honest.Users)
	}
	if s.Honest.Register < 0 || s.Honest.Register > s.Honest.Users {
		return fmt.Errorf("honest.register must be between 0 and honest.users")
	}
	if s.MinAccountAge < 0 || s.MaxPerNetwork < 0 {
		return fmt.Errorf("min_account_age and max_per_network must be >= 0")
	}
	for _, b := range s.Bots {
		if !slices.Contains(BotKinds, b.Kind) {
			return fmt.Errorf("bots: unknown kind %q (known: %v)", b.Kind, BotKinds)
		}
		if b.Count < 0 || b.Rate < 0 {
			return fmt.Errorf("bots %s: count and rate must be >= 0", b.Kind)
		}
		if b.Kind == AccountFarm && (b.Accounts < 1 || b.Networks < 1 || b.PerIP < 1) {
			return fmt.Errorf("bots account_farm: accounts, networks and per_ip must be >= 1")
		}
	}
	return nil
}

// SetSeeds replaces the scenario's seeds by 1..n.
func (s *Scenario) SetSeeds(n int) error {
	if n < 1 {
		return fmt.Errorf("seeds must be >= 1")
	}
	s.Seeds = s.Seeds[:0]
	for i := 1; i <= n; i++ {
		s.Seeds = append(s.Seeds, uint64(i))
	}
	return nil
}

// SwitchOff sets the named defences off, overriding the scenario.
func (s *Scenario) SwitchOff(names ...string) error {
	for _, n := range names {
		if !slices.Contains(DefenceNames, n) {
			return fmt.Errorf("unknown defence %q (known: %v)", n, DefenceNames)
		}
		if s.Defences == nil {
			s.Defences = map[string]bool{}
		}
		s.Defences[n] = false
	}
	return nil
}

// DefencesOff lists the switches the scenario turns off, sorted.
func (s *Scenario) DefencesOff() []string {
	var off []string
	for k, v := range s.Defences {
		if !v {
			off = append(off, k)
		}
	}
	slices.Sort(off)
	return off
}
