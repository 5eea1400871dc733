package limit

import (
	"context"
	"time"
)

// Budget counts scarce actions (new accounts) per key over a sliding
// window, shared by every edge: unlike the token buckets of Limiter, which
// live in one edge's memory, a Budget lives in a store all edges see
// (package limit/redislimit: one Lua script in Redis). Later shared limits
// reuse it.
//
// Take is all or nothing over its quotas and idempotent per id: the same id
// taken again (a client's blind retry after a lost reply) is allowed again
// without counting twice, and a refused Take counts nothing. Give returns
// what id took (the action failed after all: a name already taken).
//
// Every quota of one call shares scope (in Redis: one hash slot, so the
// script stays valid in Redis Cluster); quotas of different scopes are
// separate calls. A store failure is an error, never a decision: callers
// fail closed (503 with Retry-After).
type Budget interface {
	Take(ctx context.Context, scope, id string, qs ...Quota) (Decision, error)
	Give(ctx context.Context, scope, id string, qs ...Quota) error
	// Peek answers what a Take would answer now, taking nothing (a client
	// told before it does work that a Take would refuse).
	Peek(ctx context.Context, scope string, qs ...Quota) (Decision, error)
}

// Quota is one counter of a Budget: at most Limit takes per Window under
// Name and Key. Name is told to clients in the RateLimit header fields
// ([A-Za-z0-9._-], like a rule's name).
type Quota struct {
	Name   string
	Key    string
	Limit  int
	Window time.Duration
}

// Registration is how the edge makes accounts cost something (issue 15):
// the challenge a registration must solve and the per-network account
// budgets, from the limits file (`registration:`) or a pushed dynamic
// configuration.
type Registration struct {
	// Challenge is "pow" (proof of work) or "captcha" (an image).
	Challenge string `yaml:"challenge" json:"challenge"`
	// Difficulty is the proof of work's leading zero bits (0..32).
	Difficulty int `yaml:"difficulty" json:"difficulty"`
	// PerIP is the most accounts one IP address (an IPv6 /64) may create
	// per Window; PerNetwork the most per /24 (IPv6 /48). 0 switches that
	// budget off.
	PerIP      int    `yaml:"per_ip" json:"per_ip"`
	PerNetwork int    `yaml:"per_network" json:"per_network"`
	Window     Window `yaml:"window" json:"window"`
}

// DefaultRegistration is what an edge uses when neither the limits file
// nor a pushed configuration says otherwise. Difficulty 19: a median of
// ln 2 × 2^19 ≈ 363,000 hashes, about 0.05 s for Go's solver (7.5 M hashes
// per second on one core of the project's machine) and within 2 s for the
// storefront's Web Worker down to 182,000 hashes per second (Chromium did
// 250,000 to 470,000 on that machine under a load average of 22,
// BenchmarkBrowserPoWSolve).
var DefaultRegistration = Registration{
	Challenge: "pow", Difficulty: 19, PerIP: 5, PerNetwork: 50, Window: Window(24 * time.Hour),
}

// Bounds of the registration settings.
const (
	maxRegDifficulty = 32
	maxRegBudget     = 1 << 20
	minRegWindow     = time.Second
	maxRegWindow     = 366 * 24 * time.Hour
)

// Validate returns every problem of r, each naming its field.
func (r Registration) Validate() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, errorf(format, args...)) }
	if r.Challenge != "pow" && r.Challenge != "captcha" {
		add("challenge %q must be pow or captcha", r.Challenge)
	}
	if r.Difficulty < 0 || r.Difficulty > maxRegDifficulty {
		add("difficulty %d must be between 0 and %d bits", r.Difficulty, maxRegDifficulty)
	}
	if r.PerIP < 0 || r.PerIP > maxRegBudget {
		add("per_ip %d must be between 0 (off) and %d", r.PerIP, maxRegBudget)
	}
	if r.PerNetwork < 0 || r.PerNetwork > maxRegBudget {
		add("per_network %d must be between 0 (off) and %d", r.PerNetwork, maxRegBudget)
	}
	if w := r.Window.D(); w < minRegWindow || w > maxRegWindow {
		add("window %v must be between %v and %v", w, minRegWindow, maxRegWindow)
	}
	return errs
}

// Quotas returns the registration quotas of a client: its IP key
// (clientip.Key) and its network (clientip.Network). A budget set to 0 is
// left out.
func (r Registration) Quotas(ip, network string) []Quota {
	var qs []Quota
	if r.PerIP > 0 {
		qs = append(qs, Quota{Name: "accounts-per-ip", Key: ip, Limit: r.PerIP, Window: r.Window.D()})
	}
	if r.PerNetwork > 0 {
		qs = append(qs, Quota{Name: "accounts-per-network", Key: network, Limit: r.PerNetwork, Window: r.Window.D()})
	}
	return qs
}
