package limit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Rule is one token bucket policy: Burst tokens, refilled at Rate tokens per
// second, per value of Key, for requests of route class Class.
type Rule struct {
	Name   string  `yaml:"name" json:"name"`     // unique, e.g. "buy-per-user"; [A-Za-z0-9._-], at most 64 bytes
	Class  string  `yaml:"class" json:"class"`   // route class (see Classes) or "*" for every class
	Key    string  `yaml:"key" json:"key"`       // ip, user, item or global
	Rate   float64 `yaml:"rate" json:"rate"`     // tokens per second
	Burst  int     `yaml:"burst" json:"burst"`   // bucket size (the quota advertised as q=)
	Shadow bool    `yaml:"shadow" json:"shadow"` // counted and reported, never enforced
}

// Route classes a rule may name (besides "*").
var Classes = []string{"login", "register", "challenge", "path", "buy", "status", "catalog"}

// Rate-limit keys a rule may name.
const (
	KeyIP     = "ip"
	KeyUser   = "user"
	KeyItem   = "item"
	KeyGlobal = "global"
)

const (
	maxNameLen = 64
	maxBurst   = 1 << 30
	maxRate    = 1e9
	// maxWindow bounds Burst/Rate: beyond it a rule is almost certainly a
	// typo (rate in tokens per day instead of per second) and the window no
	// longer fits the header fields sensibly.
	maxWindow = 366 * 24 * time.Hour
)

func validClass(c string) bool {
	if c == "*" {
		return true
	}
	for _, k := range Classes {
		if c == k {
			return true
		}
	}
	return false
}

func validName(n string) bool {
	if n == "" || len(n) > maxNameLen {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Validate explains what is wrong with r, naming it. The name is restricted
// to [A-Za-z0-9._-] because it is sent to clients as a Structured Field
// String and used as a metric label.
func (r Rule) Validate() error {
	var errs []error
	if !validName(r.Name) {
		errs = append(errs, fmt.Errorf("name %q must be 1-%d characters of [A-Za-z0-9._-]", r.Name, maxNameLen))
	}
	if !validClass(r.Class) {
		errs = append(errs, fmt.Errorf("class %q must be one of %s or \"*\"", r.Class, strings.Join(Classes, ", ")))
	}
	switch r.Key {
	case KeyIP, KeyUser, KeyItem, KeyGlobal:
	default:
		errs = append(errs, fmt.Errorf("key %q must be one of ip, user, item, global", r.Key))
	}
	rateOK := !math.IsNaN(r.Rate) && r.Rate > 0 && r.Rate <= maxRate
	if !rateOK {
		errs = append(errs, fmt.Errorf("rate %v must be > 0 and <= %g tokens per second", r.Rate, float64(maxRate)))
	}
	burstOK := r.Burst >= 1 && r.Burst <= maxBurst
	if !burstOK {
		errs = append(errs, fmt.Errorf("burst %d must be between 1 and %d", r.Burst, maxBurst))
	}
	if rateOK && burstOK && float64(r.Burst)/r.Rate > maxWindow.Seconds() {
		errs = append(errs, fmt.Errorf("window burst/rate = %.0fs exceeds %v", float64(r.Burst)/r.Rate, maxWindow))
	}
	if len(errs) == 0 {
		return nil
	}
	name := r.Name
	if name == "" {
		name = "(unnamed)"
	}
	return fmt.Errorf("rule %q: %w", name, errors.Join(errs...))
}

// ValidateRules validates every rule and checks names are unique. All errors
// are joined; each names the rule's index and name.
func ValidateRules(rules []Rule) error {
	var errs []error
	seen := make(map[string]int, len(rules))
	for i, r := range rules {
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("rules[%d]: %w", i, err))
		}
		if r.Name == "" {
			continue
		}
		if j, dup := seen[r.Name]; dup {
			errs = append(errs, fmt.Errorf("rules[%d]: duplicate name %q (first at rules[%d])", i, r.Name, j))
		} else {
			seen[r.Name] = i
		}
	}
	return errors.Join(errs...)
}

// ParseRules parses a YAML rule set, either a list of rules or a mapping
// {rules: [...]} (which may also hold a registration section: ParseLimits),
// rejects unknown fields and validates the result. An empty document is an
// error (an empty ZooKeeper node must not silently disable rate limiting);
// an explicit empty list is accepted.
func ParseRules(data []byte) ([]Rule, error) {
	rules, _, err := ParseLimits(data)
	return rules, err
}

// ParseLimits parses a limits file: what ParseRules reads, and the optional
// registration section of the mapping form (nil when absent; fields left
// out keep DefaultRegistration's values).
func ParseLimits(data []byte) ([]Rule, *Registration, error) {
	var probe yaml.Node
	if err := yaml.Unmarshal(data, &probe); err != nil {
		return nil, nil, fmt.Errorf("limit: parse rules: %w", err)
	}
	if probe.Kind != yaml.DocumentNode || len(probe.Content) == 0 {
		return nil, nil, errors.New("limit: parse rules: empty document")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var rules []Rule
	var reg *Registration
	switch probe.Content[0].Kind {
	case yaml.SequenceNode:
		if err := dec.Decode(&rules); err != nil {
			return nil, nil, fmt.Errorf("limit: parse rules: %w", err)
		}
	case yaml.MappingNode:
		def := DefaultRegistration
		var doc struct {
			Rules        *[]Rule       `yaml:"rules"`
			Registration *Registration `yaml:"registration"`
		}
		doc.Registration = &def
		for i := 0; i+1 < len(probe.Content[0].Content); i += 2 {
			if probe.Content[0].Content[i].Value == "registration" {
				reg = &def
			}
		}
		if err := dec.Decode(&doc); err != nil {
			return nil, nil, fmt.Errorf("limit: parse rules: %w", err)
		}
		if doc.Rules == nil {
			return nil, nil, errors.New("limit: parse rules: mapping without a \"rules\" list")
		}
		rules = *doc.Rules
	default:
		return nil, nil, errors.New("limit: parse rules: want a list of rules or {rules: [...]}")
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, nil, errors.New("limit: parse rules: more than one YAML document")
	}
	if rules == nil {
		rules = []Rule{}
	}
	if err := ValidateRules(rules); err != nil {
		return nil, nil, fmt.Errorf("limit: parse rules: %w", err)
	}
	if reg != nil {
		if errs := reg.Validate(); len(errs) > 0 {
			return nil, nil, fmt.Errorf("limit: registration: %w", errors.Join(errs...))
		}
	}
	return rules, reg, nil
}
