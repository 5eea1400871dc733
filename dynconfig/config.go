// Package dynconfig distributes the edge's protective settings (token-bucket
// rules, proof-of-work difficulty, the bound on backend calls in flight, the
// circuit breaker and the trusted proxies) through ZooKeeper.
//
// The format is YAML in files and JSON in ZooKeeper (JSON is YAML, so Parse
// reads both). Operators push with `seckill config push`, which validates
// first and writes with compare-and-set; every edge runs a Watcher that
// validates again (a node written around the CLI is rejected, and the
// previous configuration stays in force), swaps the new one in, keeps the
// last good copy on disk and reports the version in force in its
// registration node.
package dynconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"seckill/internal/breaker"

	"seckill/limit"
)

// Config is the limiter configuration.
type Config struct {
	Rules               []limit.Rule `yaml:"rules" json:"rules"`                                 // each may be shadow
	Difficulty          int          `yaml:"difficulty" json:"difficulty"`                       // proof-of-work bits, 0..32
	DifficultyUnderLoad int          `yaml:"difficulty_under_load" json:"difficulty_under_load"` // added while busy
	MaxInFlight         int          `yaml:"max_in_flight" json:"max_in_flight"`                 // backend calls at once
	Breaker             Breaker      `yaml:"breaker" json:"breaker"`
	TrustedProxies      []string     `yaml:"trusted_proxies" json:"trusted_proxies"` // IPs or CIDRs
	// Registration: the registration challenge and the per-network account
	// budgets (optional; fields left out take limit.DefaultRegistration's
	// values; absent, every edge keeps what its limits file says). Left
	// out of the JSON when absent, so versions signed before it existed
	// verify and mean what they meant.
	Registration *limit.Registration `yaml:"registration,omitempty" json:"registration,omitempty"`
}

// Breaker tunes the circuit breaker around the backend (edge.BreakerConfig).
type Breaker struct {
	ConsecutiveFailures uint32   `yaml:"consecutive_failures" json:"consecutive_failures"`
	OpenFor             Duration `yaml:"open_for" json:"open_for"`
	HalfOpenProbes      uint32   `yaml:"half_open_probes" json:"half_open_probes"`
}

// Config returns the breaker's settings as every breaker takes them.
func (b Breaker) Config() breaker.Config {
	return breaker.Config{ConsecutiveFailures: b.ConsecutiveFailures, OpenFor: b.OpenFor.D(), HalfOpenProbes: b.HalfOpenProbes}
}

// Duration is a time.Duration written as a Go duration string ("2s").
type Duration time.Duration

// D returns the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes "2s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads "2s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"2s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes 2s.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads 2s.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		// A *yaml.TypeError lets the decoder go on and report the others.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: duration must be a string such as 2s", n.Line)}}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*d = Duration(v)
	return nil
}

// Bounds of the settings.
const (
	MaxDifficulty  = 32
	MaxInFlightMax = 1 << 20
	maxBreakerN    = 10000
	minOpenFor     = 100 * time.Millisecond
	maxOpenFor     = 10 * time.Minute
	maxRules       = 1000
	maxProxies     = 1000
)

// Problem is one thing wrong with a configuration, with its place.
type Problem struct {
	Line  int    // line in the document, 0 when unknown
	Place string // "rules[3] (buy-per-user)", "breaker.open_for", ...
	Msg   string
}

func (p Problem) Error() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Place != "" {
		b.WriteString(p.Place)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem of a configuration; Validate and Parse return
// it as their error.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap gives every problem to errors.Is and errors.As.
func (ps Problems) Unwrap() []error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errs
}

// ProblemsOf returns the problems in err (nil when err holds none).
func ProblemsOf(err error) Problems {
	var ps Problems
	if errors.As(err, &ps) {
		return ps
	}
	return nil
}

func (ps *Problems) add(place, format string, args ...any) {
	*ps = append(*ps, Problem{Place: place, Msg: fmt.Sprintf(format, args...)})
}

func (ps Problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

func rulePlace(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("rules[%d]", i)
	}
	return fmt.Sprintf("rules[%d] (%s)", i, name)
}

// Validate returns every problem of c (as Problems), each with its place, or
// nil. A configuration that would switch protection off is a problem: no
// rules, or only shadow rules.
func (c Config) Validate() error {
	var ps Problems
	switch {
	case len(c.Rules) == 0:
		ps.add("rules", "at least one rule is needed (an empty list would switch rate limiting off)")
	case len(c.Rules) > maxRules:
		ps.add("rules", "%d rules, at most %d", len(c.Rules), maxRules)
	}
	seen := map[string]int{}
	enforced := 0
	for i, r := range c.Rules {
		place := rulePlace(i, r.Name)
		if err := r.Validate(); err != nil {
			// limit.Rule.Validate: `rule "name": ` + errors.Join(each problem).
			inner := errors.Unwrap(err)
			if j, ok := inner.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					ps.add(place, "%s", e.Error())
				}
			} else {
				ps.add(place, "%s", err.Error())
			}
		}
		if r.Name != "" {
			if j, dup := seen[r.Name]; dup {
				ps.add(place, "duplicate name %q (first at rules[%d])", r.Name, j)
			} else {
				seen[r.Name] = i
			}
		}
		if !r.Shadow {
			enforced++
		}
	}
	if len(c.Rules) > 0 && enforced == 0 {
		ps.add("rules", "every rule is shadow: nothing would be enforced")
	}
	if c.Difficulty < 0 || c.Difficulty > MaxDifficulty {
		ps.add("difficulty", "%d must be between 0 and %d bits", c.Difficulty, MaxDifficulty)
	}
	if c.DifficultyUnderLoad < 0 || c.DifficultyUnderLoad > MaxDifficulty {
		ps.add("difficulty_under_load", "%d must be between 0 and %d bits", c.DifficultyUnderLoad, MaxDifficulty)
	} else if c.Difficulty >= 0 && c.Difficulty <= MaxDifficulty && c.Difficulty+c.DifficultyUnderLoad > MaxDifficulty {
		ps.add("difficulty_under_load", "difficulty + difficulty_under_load = %d exceeds %d bits", c.Difficulty+c.DifficultyUnderLoad, MaxDifficulty)
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > MaxInFlightMax {
		ps.add("max_in_flight", "%d must be between 1 and %d", c.MaxInFlight, MaxInFlightMax)
	}
	if n := c.Breaker.ConsecutiveFailures; n < 1 || n > maxBreakerN {
		ps.add("breaker.consecutive_failures", "%d must be between 1 and %d", n, maxBreakerN)
	}
	if d := c.Breaker.OpenFor.D(); d < minOpenFor || d > maxOpenFor {
		ps.add("breaker.open_for", "%v must be between %v and %v", d, minOpenFor, maxOpenFor)
	}
	if n := c.Breaker.HalfOpenProbes; n < 1 || n > maxBreakerN {
		ps.add("breaker.half_open_probes", "%d must be between 1 and %d", n, maxBreakerN)
	}
	if c.Registration != nil {
		for _, err := range c.Registration.Validate() {
			ps.add("registration", "%s", err.Error())
		}
	}
	if len(c.TrustedProxies) > maxProxies {
		ps.add("trusted_proxies", "%d entries, at most %d", len(c.TrustedProxies), maxProxies)
	}
	for i, s := range c.TrustedProxies {
		if err := checkProxy(s); err != nil {
			ps.add(fmt.Sprintf("trusted_proxies[%d]", i), "not an IP or CIDR: %q: %v", s, err)
		}
	}
	return ps.err()
}

// checkProxy accepts what clientip.New accepts: an address or a CIDR,
// without zone; IPv4-mapped prefixes at least /96.
func checkProxy(s string) error {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "%") {
		return errors.New("zones are not supported")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return err
		}
		if p.Addr().Is4In6() && p.Bits() < 96 {
			return errors.New("IPv4-mapped prefix shorter than /96")
		}
		return nil
	}
	_, err := netip.ParseAddr(s)
	return err
}

// required top-level settings: absent, their zero value would weaken the
// protection silently (difficulty 0 = no proof of work).
var required = []string{"rules", "difficulty", "max_in_flight", "breaker"}

// Parse reads a configuration in YAML (or JSON), rejecting unknown fields,
// and validates it. The error lists every problem (Problems), with line
// numbers where the document gives them.
func Parse(data []byte) (Config, error) {
	var c Config
	def := limit.DefaultRegistration
	c.Registration = &def // fields left out keep the defaults
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return c, Problems{syntaxProblem(data, err)}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return c, Problems{{Msg: "empty document"}}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return c, Problems{{Line: root.Line, Msg: "want a mapping of settings (rules, difficulty, ...)"}}
	}
	var extra yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var ps Problems
	if err := dec.Decode(&c); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, e := range te.Errors {
				ps = append(ps, lineProblem(e))
			}
		} else {
			ps = append(ps, lineProblem(err.Error()))
		}
	} else if err := dec.Decode(&extra); err != io.EOF {
		ps = append(ps, Problem{Msg: "more than one YAML document"})
	}
	keys := map[string]*yaml.Node{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		keys[root.Content[i].Value] = root.Content[i+1]
	}
	if keys["registration"] == nil {
		c.Registration = nil
	}
	for _, k := range required {
		if keys[k] == nil {
			ps = append(ps, Problem{Line: root.Line, Place: k, Msg: "missing (required)"})
		}
	}
	if b := keys["breaker"]; b != nil && b.Kind == yaml.MappingNode {
		have := map[string]bool{}
		for i := 0; i+1 < len(b.Content); i += 2 {
			have[b.Content[i].Value] = true
		}
		for _, k := range []string{"consecutive_failures", "open_for", "half_open_probes"} {
			if !have[k] {
				ps = append(ps, Problem{Line: b.Line, Place: "breaker." + k, Msg: "missing (required)"})
			}
		}
	}
	// Validate what decoded too, so one bad value hides no other problem;
	// a setting that did not decode is reported once, by the decoder.
	bad, missing := map[int]bool{}, map[string]bool{}
	for _, p := range ps {
		if p.Place != "" {
			missing[p.Place] = true
		} else if p.Line > 0 {
			bad[p.Line] = true
		}
	}
	if err := c.Validate(); err != nil {
		for _, p := range ProblemsOf(err) {
			p.Line = lineOf(keys, p.Place)
			if !missing[p.Place] && (p.Line == 0 || !bad[p.Line]) {
				ps = append(ps, p)
			}
		}
	}
	if len(ps) > 0 {
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
		return c, ps
	}
	return c, nil
}

// lineProblem turns a yaml.v3 message ("line 5: field x not found in type
// ...") into a Problem.
// syntaxProblem places a YAML syntax error on its line. yaml.v3 names the
// line where the enclosing block or flow began (line 1 for a brace missing
// on line 20), so the line is taken as the first one whose prefix of the
// document fails with the same message: where the document stops being
// valid YAML.
func syntaxProblem(data []byte, err error) Problem {
	p := lineProblem(err.Error())
	lines := bytes.SplitAfter(data, []byte("\n"))
	var prefix []byte
	for i, l := range lines {
		prefix = append(prefix, l...)
		var n yaml.Node
		if perr := yaml.Unmarshal(prefix, &n); perr != nil && lineProblem(perr.Error()).Msg == p.Msg {
			p.Line = i + 1
			break
		}
	}
	p.Msg = "YAML syntax: " + p.Msg
	return p
}

func lineProblem(msg string) Problem {
	msg = strings.TrimPrefix(msg, "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		if _, rest, ok := strings.Cut(msg, ": "); ok {
			msg = rest
		}
	}
	msg = strings.Replace(msg, "in type dynconfig.Config", "(unknown setting)", 1)
	return Problem{Line: line, Msg: msg}
}

// lineOf finds the line of a place such as "rules[3] (x)" or
// "breaker.open_for".
func lineOf(keys map[string]*yaml.Node, place string) int {
	head, _, _ := strings.Cut(place, " ")
	name, idx, _ := strings.Cut(head, "[")
	sub := ""
	if n, s, ok := strings.Cut(name, "."); ok {
		name, sub = n, s
	}
	n := keys[name]
	if n == nil {
		return 0
	}
	if idx != "" {
		var i int
		if _, err := fmt.Sscanf(idx, "%d]", &i); err == nil && n.Kind == yaml.SequenceNode && i < len(n.Content) {
			return n.Content[i].Line
		}
	}
	if sub != "" && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == sub {
				return n.Content[i].Line
			}
		}
	}
	return n.Line
}
