package dynconfig

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"seckill/limit"
)

const good = `rules:
  - {name: buy-per-user, class: buy, key: user, rate: 1, burst: 3}
  - {name: everything, class: "*", key: global, rate: 1000, burst: 1000, shadow: true}
difficulty: 16
difficulty_under_load: 4
max_in_flight: 512
breaker: {consecutive_failures: 5, open_for: 2s, half_open_probes: 3}
trusted_proxies: [10.0.0.0/8, 192.0.2.7, "2001:db8::/48"]
`

func goodConfig() Config {
	return Config{
		Rules: []limit.Rule{
			{Name: "buy-per-user", Class: "buy", Key: "user", Rate: 1, Burst: 3},
			{Name: "everything", Class: "*", Key: "global", Rate: 1000, Burst: 1000, Shadow: true},
		},
		Difficulty: 16, DifficultyUnderLoad: 4, MaxInFlight: 512,
		Breaker:        Breaker{ConsecutiveFailures: 5, OpenFor: Duration(2 * time.Second), HalfOpenProbes: 3},
		TrustedProxies: []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/48"},
	}
}

func TestParseGood(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if want := goodConfig(); !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	// JSON round trip: what the store writes, Parse reads back.
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"open_for":"2s"`) {
		t.Fatalf("open_for not a duration string: %s", raw)
	}
	c2, err := Parse(raw)
	if err != nil {
		t.Fatalf("parsing own JSON: %v\n%s", err, raw)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("JSON round trip: %+v != %+v", c2, c)
	}
}

func TestShippedExample(t *testing.T) {
	data, err := os.ReadFile("../configs/edge-dynamic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data)
	if err != nil {
		t.Fatalf("configs/edge-dynamic.yaml: %v", err)
	}
	// Same rules as configs/limits.yaml.
	ldata, err := os.ReadFile("../configs/limits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := limit.ParseRules(ldata)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Rules, rules) {
		t.Fatalf("edge-dynamic.yaml rules differ from limits.yaml:\n%+v\n%+v", c.Rules, rules)
	}
}

func TestParseProblems(t *testing.T) {
	// replace applies one substitution to the good document.
	type sub struct{ old, new string }
	cases := []struct {
		name string
		subs []sub
		doc  string // instead of subs
		want []string
	}{
		{name: "zero rate", subs: []sub{{"rate: 1, burst: 3", "rate: 0, burst: 3"}},
			want: []string{"line 2: rules[0] (buy-per-user): rate 0 must be > 0 and <= 1e+09 tokens per second"}},
		{name: "several rule problems, all reported", subs: []sub{{"class: buy, key: user, rate: 1, burst: 3", "class: nope, key: who, rate: -1, burst: 0"}},
			want: []string{
				`line 2: rules[0] (buy-per-user): class "nope" must be one of login, register, challenge, path, buy, status, catalog or "*"`,
				`line 2: rules[0] (buy-per-user): key "who" must be one of ip, user, item, global`,
				`line 2: rules[0] (buy-per-user): rate -1 must be > 0 and <= 1e+09 tokens per second`,
				`line 2: rules[0] (buy-per-user): burst 0 must be between 1 and 1073741824`,
			}},
		{name: "duplicate name", subs: []sub{{"name: everything", "name: buy-per-user"}},
			want: []string{`line 3: rules[1] (buy-per-user): duplicate name "buy-per-user" (first at rules[0])`}},
		{name: "unnamed rule", subs: []sub{{"name: buy-per-user, ", ""}},
			want: []string{`line 2: rules[0]: name "" must be 1-64 characters of [A-Za-z0-9._-]`}},
		{name: "bad proxy", subs: []sub{{"192.0.2.7", "192.0.2.300"}},
			want: []string{`line 8: trusted_proxies[1]: not an IP or CIDR: "192.0.2.300": ParseAddr("192.0.2.300"): IPv4 field has value >255`}},
		{name: "difficulty", subs: []sub{{"difficulty: 16", "difficulty: 33"}},
			want: []string{"line 4: difficulty: 33 must be between 0 and 32 bits"}},
		{name: "difficulty sum", subs: []sub{{"difficulty: 16", "difficulty: 30"}},
			want: []string{"line 5: difficulty_under_load: difficulty + difficulty_under_load = 34 exceeds 32 bits"}},
		{name: "in flight and breaker", subs: []sub{{"max_in_flight: 512", "max_in_flight: 0"}, {"open_for: 2s", "open_for: 1ms"}, {"half_open_probes: 3", "half_open_probes: 0"}},
			want: []string{
				"line 6: max_in_flight: 0 must be between 1 and 1048576",
				"line 7: breaker.open_for: 1ms must be between 100ms and 10m0s",
				"line 7: breaker.half_open_probes: 0 must be between 1 and 10000",
			}},
		{name: "all shadow", subs: []sub{{"rate: 1, burst: 3}", "rate: 1, burst: 3, shadow: true}"}},
			want: []string{"line 2: rules: every rule is shadow: nothing would be enforced"}},
		{name: "empty rules", subs: []sub{{"  - {name: buy-per-user, class: buy, key: user, rate: 1, burst: 3}\n  - {name: everything, class: \"*\", key: global, rate: 1000, burst: 1000, shadow: true}\n", ""}, {"rules:\n", "rules: []\n"}},
			want: []string{"line 1: rules: at least one rule is needed (an empty list would switch rate limiting off)"}},
		{name: "unknown fields", subs: []sub{{"difficulty: 16", "difficulty: 16\ndificulty: 3"}, {"burst: 3}", "burst: 3, brust: 4}"}},
			want: []string{
				"line 2: field brust not found in type limit.Rule",
				"line 5: field dificulty not found (unknown setting)",
			}},
		{name: "wrong types", subs: []sub{{"max_in_flight: 512", "max_in_flight: lots"}, {"open_for: 2s", "open_for: 2"}},
			want: []string{
				"line 6: cannot unmarshal !!str `lots` into int",
				"line 7: duration must be a string such as 2s",
			}},
		{name: "missing required", subs: []sub{{"difficulty: 16\n", ""}, {"max_in_flight: 512\n", ""}, {"open_for: 2s, ", ""}},
			want: []string{
				"line 1: difficulty: missing (required)",
				"line 1: max_in_flight: missing (required)",
				"line 5: breaker.open_for: missing (required)",
			}},
		{name: "syntax error", doc: "rules:\n\t- {name: a}\n",
			want: []string{"line 2: YAML syntax: found character that cannot start any token"}},
		{name: "empty", doc: "", want: []string{"empty document"}},
		{name: "list", doc: "- a\n", want: []string{"line 1: want a mapping of settings (rules, difficulty, ...)"}},
		{name: "two documents", doc: good + "---\n" + good, want: []string{"more than one YAML document"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.doc
			if doc == "" && tc.subs != nil {
				doc = good
				for _, s := range tc.subs {
					if !strings.Contains(doc, s.old) {
						t.Fatalf("bad case: %q not in the document", s.old)
					}
					doc = strings.Replace(doc, s.old, s.new, 1)
				}
			}
			_, err := Parse([]byte(doc))
			if err == nil {
				t.Fatalf("no error for\n%s", doc)
			}
			ps := ProblemsOf(err)
			got := make([]string, len(ps))
			for i, p := range ps {
				got[i] = p.Error()
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("problems:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestValidateStruct(t *testing.T) {
	if err := goodConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	var zero Config
	ps := ProblemsOf(zero.Validate())
	var places []string
	for _, p := range ps {
		places = append(places, p.Place)
	}
	want := []string{"rules", "max_in_flight", "breaker.consecutive_failures", "breaker.open_for", "breaker.half_open_probes"}
	if !reflect.DeepEqual(places, want) {
		t.Fatalf("zero config problems at %v, want %v", places, want)
	}
}

func TestDecodeRecord(t *testing.T) {
	raw, _ := json.Marshal(goodConfig())
	rec, _ := json.Marshal(Record{Version: 3, PushedBy: "ops", Config: raw})
	r, c, err := DecodeRecord(rec)
	if err != nil || r.Version != 3 || r.PushedBy != "ops" || c.MaxInFlight != 512 {
		t.Fatalf("DecodeRecord = %+v, %+v, %v", r, c, err)
	}
	for _, bad := range []string{
		`{"version":1}`,
		`{"version":1,"config":null}`,
		`{"version":1,"config":{},"extra":1}`,
		`{"version":1,"config":` + string(raw) + `} x`,
		`not json`,
		`{"version":1,"config":{"rules":[]}}`,
	} {
		if _, _, err := DecodeRecord([]byte(bad)); err == nil {
			t.Errorf("DecodeRecord(%s): no error", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	raw, _ := json.Marshal(goodConfig())
	f.Add(raw)
	f.Add([]byte("rules: []\n"))
	f.Add([]byte("breaker: {open_for: 1h}\n"))
	f.Add([]byte("- 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if len(ProblemsOf(err)) == 0 {
				t.Fatalf("error without problems: %v", err)
			}
			return
		}
		// What Parse accepts is valid, and survives the JSON round trip
		// through ZooKeeper.
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
		j, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := Parse(j)
		if err != nil {
			t.Fatalf("own JSON refused: %v\n%s", err, j)
		}
		if !reflect.DeepEqual(normal(c), normal(c2)) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, c2)
		}
	})
}

func normal(c Config) Config {
	if len(c.TrustedProxies) == 0 {
		c.TrustedProxies = nil
	}
	return c
}
