package limit

import (
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestValidateRules(t *testing.T) {
	t.Parallel()
	ok := Rule{Name: "buy-per-user", Class: "buy", Key: "user", Rate: 1, Burst: 5}
	with := func(f func(*Rule)) Rule { r := ok; f(&r); return r }
	for _, tc := range []struct {
		desc  string
		rules []Rule
		want  []string // substrings of the error; nil = valid
	}{
		{desc: "valid", rules: []Rule{ok, with(func(r *Rule) { r.Name, r.Class, r.Key = "all-ip", "*", "ip" })}},
		{desc: "empty set", rules: nil},
		{desc: "bad class", rules: []Rule{with(func(r *Rule) { r.Class = "checkout" })}, want: []string{`rules[0]`, `"buy-per-user"`, `class "checkout"`}},
		{desc: "bad key", rules: []Rule{with(func(r *Rule) { r.Key = "session" })}, want: []string{`key "session"`}},
		{desc: "zero rate", rules: []Rule{with(func(r *Rule) { r.Rate = 0 })}, want: []string{"rate 0"}},
		{desc: "negative burst", rules: []Rule{with(func(r *Rule) { r.Burst = -1 })}, want: []string{"burst -1"}},
		{desc: "window too long", rules: []Rule{with(func(r *Rule) { r.Rate = 1e-9 })}, want: []string{"window"}},
		{desc: "bad name", rules: []Rule{with(func(r *Rule) { r.Name = `a"b` })}, want: []string{`name "a\"b"`}},
		{desc: "unnamed", rules: []Rule{with(func(r *Rule) { r.Name = "" })}, want: []string{"(unnamed)"}},
		{desc: "duplicate names and all errors joined", rules: []Rule{ok, with(func(r *Rule) { r.Burst = 0 }), ok},
			want: []string{`rules[1]: rule "buy-per-user": burst 0`, `rules[1]: duplicate name "buy-per-user" (first at rules[0])`, `rules[2]: duplicate`}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			err := ValidateRules(tc.rules)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("ValidateRules = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("ValidateRules = nil, want error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseRules(t *testing.T) {
	t.Parallel()
	want := []Rule{
		{Name: "buy-per-user", Class: "buy", Key: "user", Rate: 0.5, Burst: 5},
		{Name: "login-ip", Class: "login", Key: "ip", Rate: 1, Burst: 10, Shadow: true},
	}
	list := `
- {name: buy-per-user, class: buy, key: user, rate: 0.5, burst: 5}
- name: login-ip
  class: login
  key: ip
  rate: 1
  burst: 10
  shadow: true
`
	for _, tc := range []struct {
		desc    string
		in      string
		want    []Rule
		wantErr string
	}{
		{desc: "list", in: list, want: want},
		{desc: "mapping", in: "rules:\n" + strings.ReplaceAll(list, "\n", "\n  "), want: want},
		{desc: "explicit empty list", in: "rules: []", want: []Rule{}},
		{desc: "empty document", in: "", wantErr: "empty document"},
		{desc: "comment only", in: "# nothing\n", wantErr: "empty document"},
		{desc: "mapping without rules", in: "other: 1", wantErr: "field other not found"},
		{desc: "rules null", in: "rules:", wantErr: `without a "rules" list`},
		{desc: "unknown field", in: "- {name: a, class: buy, key: ip, rate: 1, burst: 1, brust: 2}", wantErr: "brust"},
		{desc: "scalar", in: "42", wantErr: "want a list"},
		{desc: "invalid rule", in: "- {name: a, class: buy, key: ip, rate: 0, burst: 1}", wantErr: `rule "a": rate 0`},
		{desc: "two documents", in: "- {name: a, class: buy, key: ip, rate: 1, burst: 1}\n---\n- {}", wantErr: "more than one"},
		{desc: "bad yaml", in: "- [", wantErr: "parse rules"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRules([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRules = %v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseRules = %#v, %v; want %#v", got, err, tc.want)
			}
		})
	}
}

// FuzzParseRules: never panics; whatever it accepts is valid, usable by New
// and survives a YAML round trip.
func FuzzParseRules(f *testing.F) {
	for _, s := range []string{
		"- {name: a, class: buy, key: ip, rate: 1, burst: 1}",
		"rules:\n- {name: a, class: '*', key: global, rate: 0.1, burst: 100, shadow: true}",
		"rules: []", "", "- {}", "rules: {}", "- {name: a, rate: .nan}", "- {burst: 99999999999999999999}",
		"- &a {name: a, class: buy, key: ip, rate: 1, burst: 1}\n- *a",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := ParseRules(data)
		if err != nil {
			return
		}
		if err := ValidateRules(rules); err != nil {
			t.Fatalf("accepted invalid rules: %v", err)
		}
		l, err := New(rules, Options{IdleAfter: -1})
		if err != nil {
			t.Fatalf("New rejected parsed rules: %v", err)
		}
		l.Allow("buy", Keys{IP: "a", User: "u", Item: "i"})
		l.Close()
		out, err := yaml.Marshal(rules)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseRules(out)
		if err != nil || !reflect.DeepEqual(again, rules) {
			t.Fatalf("round trip: %v %#v != %#v\n%s", err, again, rules, out)
		}
	})
}
