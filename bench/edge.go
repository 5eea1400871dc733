package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EdgeConfig is what `seckill bench edge` needs: a running edge (public and
// admin API), the bare echo handler of `seckill bench hello`, and wrk.
type EdgeConfig struct {
	Public     string // base URL of the edge's public API
	Admin      string // base URL of the edge's admin API
	AdminToken string
	Hello      string // base URL of `seckill bench hello`

	Duration    time.Duration // of each wrk run (default 10s)
	Connections int           // wrk -c (default 64)
	Threads     int           // wrk -t (default 2)
	Users       int           // sessions rotated by the buy scenarios (default 10000)
	UnknownID   int64         // an item id that does not exist (default 999999)
	Pause       time.Duration // between two wrk runs (default 2s)
	Wrk         string        // wrk binary (default "wrk" on $PATH)
	Challenge   string        // challenge of the items (default "none")
	Progress    io.Writer     // progress lines (none when nil)
}

func (c *EdgeConfig) defaults() {
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Connections <= 0 {
		c.Connections = 64
	}
	if c.Threads <= 0 {
		c.Threads = 2
	}
	if c.Users <= 0 {
		c.Users = 10000
	}
	if c.UnknownID <= 0 {
		c.UnknownID = 999999
	}
	if c.Pause < 0 {
		c.Pause = 0
	}
	if c.Wrk == "" {
		c.Wrk = "wrk"
	}
	if c.Challenge == "" {
		c.Challenge = "none"
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

func (c *EdgeConfig) progress(format string, args ...any) {
	fmt.Fprintf(c.Progress, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// EdgeScenario is one wrk run and its figures.
type EdgeScenario struct {
	Name     string `json:"name"`
	Method   string `json:"method"`
	URL      string `json:"url"`
	Note     string `json:"note,omitempty"`
	Expected int    `json:"expected_status"`
	// Sessions is how many session tokens the wrk script rotates through
	// (0: one fixed request, wrk's static request buffer).
	Sessions int `json:"sessions,omitempty"`
	// Baseline names the hello run whose wrk mode (static or Lua
	// request()) matches; RatioSameMode is the ratio to it.
	Baseline string `json:"baseline,omitempty"`

	Probe   string `json:"probe"` // status (and code) of the probe before the run
	Command string `json:"command"`
	Script  string `json:"script"` // the Lua script (session tokens elided)

	Requests      int64            `json:"requests"`
	Elapsed       time.Duration    `json:"elapsed_ns"`
	ReqPerSec     float64          `json:"requests_per_sec"`
	P50           time.Duration    `json:"p50_ns"`
	P90           time.Duration    `json:"p90_ns"`
	P99           time.Duration    `json:"p99_ns"`
	Non2xx        int64            `json:"non_2xx_3xx"`
	SocketErrors  string           `json:"socket_errors,omitempty"`
	Answers       map[string]int64 `json:"answers,omitempty"` // status -> count, from the edge's /metrics
	RatioToHello  float64          `json:"ratio_to_hello"`
	RatioSameMode float64          `json:"ratio_to_same_mode_hello,omitempty"`
	Problems      []string         `json:"problems,omitempty"`
}

// EdgeResult is what `seckill bench edge` measures.
type EdgeResult struct {
	Command     string         `json:"command"`
	Started     time.Time      `json:"started"`
	Threads     int            `json:"threads"`
	Connections int            `json:"connections"`
	Duration    time.Duration  `json:"duration_ns"`
	LiveItem    int64          `json:"live_item"`
	SoldItem    int64          `json:"sold_out_item"`
	Scenarios   []EdgeScenario `json:"scenarios"`
	Target      float64        `json:"target_ratio"`
}

// EdgeTargetRatio: rejection paths and cached catalogue reads at least this
// fraction of the bare handler's requests/s in the same run.
const EdgeTargetRatio = 0.9

// RunEdge sets up items and users through the admin API, then runs wrk
// against the bare handler and each protective path of the edge.
func RunEdge(ctx context.Context, cfg EdgeConfig) (*EdgeResult, error) {
	cfg.defaults()
	if _, err := exec.LookPath(cfg.Wrk); err != nil {
		return nil, errNoWrk
	}
	cl := newEdgeClient(cfg.Public, cfg.Admin, cfg.AdminToken)
	defer cl.close()
	hello := strings.TrimRight(cfg.Hello, "/")
	res := &EdgeResult{Started: time.Now(), Threads: cfg.Threads, Connections: cfg.Connections, Duration: cfg.Duration, Target: EdgeTargetRatio}

	// Setup, all through the admin and public APIs.
	run := randomHex(4)
	kind, err := cl.challengeKind(ctx, cfg.Challenge, cfg.progress)
	if err != nil {
		return nil, err
	}
	if res.LiveItem, err = cl.createItem(ctx, "bench-edge live "+run, 5_000_000, kind); err != nil {
		return nil, err
	}
	if res.SoldItem, err = cl.createItem(ctx, "bench-edge sold out "+run, 1, kind); err != nil {
		return nil, err
	}
	cfg.progress("items (challenge %s): live %d (5,000,000 units), sold out %d (1 unit)", kind, res.LiveItem, res.SoldItem)
	names := []string{"be" + run + "-buyer", "be" + run + "-soldbuyer", "be" + run + "-hammer"}
	for i := range cfg.Users {
		names = append(names, fmt.Sprintf("be%s-u%06d", run, i))
	}
	toks, err := cl.sessions(ctx, names)
	if err != nil {
		return nil, err
	}
	buyer, soldBuyer, hammer, rotating := toks[0], toks[1], toks[2], toks[3:]
	cfg.progress("sessions: %d (POST /admin/sessions)", len(toks))
	if err := cl.purchase(ctx, res.SoldItem, soldBuyer); err != nil {
		return nil, fmt.Errorf("buying the only unit of the sold-out item: %w", err)
	}
	if err := cl.purchase(ctx, res.LiveItem, buyer); err != nil {
		return nil, fmt.Errorf("buying a unit of the live item (repeat buyer): %w", err)
	}
	cfg.progress("bought: the only unit of item %d; one unit of item %d for the repeat buyer", res.SoldItem, res.LiveItem)

	path := randomHex(16) // any 32-hex path: these refusals come before the path check
	live, sold := strconv.FormatInt(res.LiveItem, 10), strconv.FormatInt(res.SoldItem, 10)
	unknown := strconv.FormatInt(cfg.UnknownID, 10)
	scenarios := []struct {
		EdgeScenario
		token  string   // fixed session (static request)
		rotate []string // sessions to rotate through (Lua request())
		before func() error
	}{
		{EdgeScenario: EdgeScenario{Name: "hello (bare echo handler)", Method: "GET", URL: hello + "/", Expected: 200}},
		{EdgeScenario: EdgeScenario{Name: "hello, Lua request() rotating sessions", Method: "GET", URL: hello + "/", Expected: 200,
			Note: "same wrk client cost as the rotating buy scenarios"}, rotate: rotating},
		{EdgeScenario: EdgeScenario{Name: "cached catalogue read", Method: "GET", URL: cfg.Public + "/api/items/" + live, Expected: 200}},
		{EdgeScenario: EdgeScenario{Name: "unknown item (GET)", Method: "GET", URL: cfg.Public + "/api/items/" + unknown, Expected: 404}},
		{EdgeScenario: EdgeScenario{Name: "unknown item (POST buy)", Method: "POST", URL: cfg.Public + "/api/items/" + unknown + "/buy/" + path, Expected: 404}, rotate: rotating},
		{EdgeScenario: EdgeScenario{Name: "sold out (POST buy)", Method: "POST", URL: cfg.Public + "/api/items/" + sold + "/buy/" + path, Expected: 410}, rotate: rotating},
		{EdgeScenario: EdgeScenario{Name: "rate limited (POST buy, hammered user)", Method: "POST", URL: cfg.Public + "/api/items/" + live + "/buy/" + path, Expected: 429},
			token: hammer, before: func() error { return hammerUser(ctx, cl, cl.buyURL(res.LiveItem, path), hammer, cfg) }},
		{EdgeScenario: EdgeScenario{Name: "repeat buyer (POST challenge)", Method: "POST", URL: cfg.Public + "/api/items/" + live + "/challenge", Expected: 409,
			Note: "Bloom positive confirmed in Redis"}, token: buyer},
		{EdgeScenario: EdgeScenario{Name: "hello again (drift check)", Method: "GET", URL: hello + "/", Expected: 200}},
	}
	dir, err := os.MkdirTemp("", "seckill-bench-edge-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	for i, s := range scenarios {
		sc := s.EdgeScenario
		if s.before != nil {
			if err := s.before(); err != nil {
				return nil, fmt.Errorf("%s: %w", sc.Name, err)
			}
		}
		// Probe: the scenario must answer what it claims to measure.
		probeTok := s.token
		if len(s.rotate) > 0 {
			probeTok = s.rotate[0]
		}
		r, err := cl.do(ctx, sc.Method, sc.URL, probeTok, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: probe: %w", sc.Name, err)
		}
		sc.Probe = r.String()
		fmt.Fprintf(cfg.Progress, "probe %-42s %s %s -> %s (want %d)\n", sc.Name+":", sc.Method, elideURL(sc.URL), sc.Probe, sc.Expected)
		if r.Status != sc.Expected {
			return nil, fmt.Errorf("%s: probe answered %s, want %d: %s", sc.Name, r, sc.Expected, bytes.TrimSpace(r.Body))
		}
		script, shown := wrkScript(sc.Method, sc.URL, s.token, s.rotate)
		sc.Script, sc.Sessions = shown, len(s.rotate)
		file := filepath.Join(dir, fmt.Sprintf("%02d.lua", i))
		if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
			return nil, err
		}
		isEdge := strings.HasPrefix(sc.URL, cfg.Public)
		var before map[string]float64
		if isEdge {
			if before, err = edgeAnswers(ctx, cl); err != nil {
				return nil, err
			}
		}
		args := []string{"-t" + strconv.Itoa(cfg.Threads), "-c" + strconv.Itoa(cfg.Connections), "-d" + wrkDuration(cfg.Duration), "--latency", "-s", file, sc.URL}
		sc.Command = cfg.Wrk + " " + strings.Join(args, " ")
		cfg.progress("running: %s", sc.Command)
		out, err := exec.CommandContext(ctx, cfg.Wrk, args...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w\n%s", sc.Name, sc.Command, err, out)
		}
		w, err := parseWrk(out)
		if err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", sc.Name, err, out)
		}
		sc.Requests, sc.Elapsed, sc.ReqPerSec, sc.P50, sc.P90, sc.P99, sc.Non2xx, sc.SocketErrors =
			w.requests, w.elapsed, w.rps, w.p50, w.p90, w.p99, w.non2xx, w.socketErrors
		if sc.SocketErrors != "" {
			sc.Problems = append(sc.Problems, "socket errors: "+sc.SocketErrors)
		}
		switch {
		case sc.Expected < 300 && sc.Non2xx > 0:
			sc.Problems = append(sc.Problems, fmt.Sprintf("%d non-2xx answers", sc.Non2xx))
		case sc.Expected >= 300 && sc.Non2xx != sc.Requests:
			sc.Problems = append(sc.Problems, fmt.Sprintf("%d of %d answers were 2xx/3xx", sc.Requests-sc.Non2xx, sc.Requests))
		}
		if isEdge {
			after, err := edgeAnswers(ctx, cl)
			if err != nil {
				return nil, err
			}
			sc.Answers = map[string]int64{}
			for code, n := range after {
				if d := int64(n - before[code]); d > 0 {
					sc.Answers[code] = d
					if code != strconv.Itoa(sc.Expected) {
						sc.Problems = append(sc.Problems, fmt.Sprintf("%d answers %s", d, code))
					}
				}
			}
		}
		cfg.progress("%s: %s req/s, p50 %v, p99 %v, answers %v", sc.Name, Human(sc.ReqPerSec), sc.P50, sc.P99, answersString(sc.Answers))
		res.Scenarios = append(res.Scenarios, sc)
		if i < len(scenarios)-1 && cfg.Pause > 0 {
			time.Sleep(cfg.Pause)
		}
	}
	// Ratios: to the first hello run, and to the hello run of the same wrk mode.
	base := res.Scenarios[0]
	var lua EdgeScenario
	for _, s := range res.Scenarios {
		if s.Sessions > 0 && !strings.HasPrefix(s.URL, cfg.Public) {
			lua = s
		}
	}
	for i := range res.Scenarios {
		s := &res.Scenarios[i]
		if base.ReqPerSec > 0 {
			s.RatioToHello = s.ReqPerSec / base.ReqPerSec
		}
		same := base
		if s.Sessions > 0 {
			same = lua
		}
		s.Baseline = same.Name
		if same.ReqPerSec > 0 {
			s.RatioSameMode = s.ReqPerSec / same.ReqPerSec
		}
	}
	return res, nil
}

// hammerUser sends purchases as the user until the buy-per-user bucket
// refuses (429), so the rate-limited scenario measures refusals only.
func hammerUser(ctx context.Context, cl *edgeClient, url, token string, cfg EdgeConfig) error {
	for n := 1; n <= 1_000_000; n++ {
		r, err := cl.do(ctx, http.MethodPost, url, token, nil)
		if err != nil {
			return err
		}
		if r.Status == http.StatusTooManyRequests {
			cfg.progress("hammered user: 429 %s after %d purchase attempts (RateLimit: %s)", r.code(), n, r.Header.Get("RateLimit"))
			return nil
		}
	}
	return fmt.Errorf("the buy bucket never refused: is the buy-per-user rule in the limits?")
}

// edgeAnswers sums seckill_edge_http_requests_total by status code from
// the admin /metrics.
func edgeAnswers(ctx context.Context, cl *edgeClient) (map[string]float64, error) {
	r, err := cl.do(ctx, http.MethodGet, cl.admin+"/metrics", "", nil)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	if r.Status != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d", r.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "seckill_edge_http_requests_total{") {
			continue
		}
		m := codeLabel.FindStringSubmatch(line)
		sp := strings.LastIndexByte(line, ' ')
		if m == nil || sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		out[m[1]] += v
	}
	return out, sc.Err()
}

var codeLabel = regexp.MustCompile(`[{,]code="([^"]*)"`)

func answersString(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for code, n := range m {
		parts = append(parts, fmt.Sprintf("%s×%s", code, Human(float64(n))))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// wrkScript returns the Lua script of a scenario, and the same with the
// session tokens elided (for the report). With rotate, every request is
// preformatted in init() and request() only picks the next one, so the
// client's per-request cost stays small; each thread starts at another
// offset.
func wrkScript(method, url, token string, rotate []string) (script, shown string) {
	var b strings.Builder
	fmt.Fprintf(&b, "-- seckill bench edge: %s %s\n", method, elideURL(url))
	fmt.Fprintf(&b, "wrk.method = %q\n", method)
	if token != "" {
		fmt.Fprintf(&b, "wrk.headers[\"Authorization\"] = \"Bearer \" .. %q\n", token)
	}
	if len(rotate) == 0 {
		s := b.String()
		if token == "" {
			return s, s
		}
		return s, strings.Replace(s, token, "<session token>", 1)
	}
	head := b.String()
	var toks strings.Builder
	toks.WriteString("local tokens = {\n")
	for _, t := range rotate {
		fmt.Fprintf(&toks, "%q,\n", t)
	}
	toks.WriteString("}\n")
	path := urlPath(url)
	tail := fmt.Sprintf(`local reqs = {}
local n, i = 0, 0
local threads = 0
function setup(thread)
  thread:set("offset", threads * 997)
  threads = threads + 1
end
function init(args)
  for k, t in ipairs(tokens) do
    reqs[k] = wrk.format(%q, %q, {["Authorization"] = "Bearer " .. t})
  end
  n = #reqs
  i = (offset or 0) %% n
end
function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end
`, method, path)
	return head + toks.String() + tail, head + fmt.Sprintf("local tokens = { --[[ %d session tokens from POST /admin/sessions ]] }\n", len(rotate)) + tail
}

// urlPath is the path (and query) of an absolute URL.
func urlPath(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
	}
	if i := strings.IndexByte(u, '/'); i >= 0 {
		return u[i:]
	}
	return "/"
}

// elideURL shortens the 32-hex path of a buy URL for display.
func elideURL(u string) string {
	if i := strings.Index(u, "/buy/"); i >= 0 && len(u) > i+5+8 {
		return u[:i+5+8] + "…"
	}
	return u
}

func wrkDuration(d time.Duration) string {
	if s := d.Seconds(); s == float64(int64(s)) {
		return strconv.FormatInt(int64(s), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

type wrkResult struct {
	requests      int64
	elapsed       time.Duration
	rps           float64
	p50, p90, p99 time.Duration
	non2xx        int64
	socketErrors  string
}

var (
	wrkRPS       = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkTotal     = regexp.MustCompile(`(?m)^\s*([0-9]+) requests in ([0-9.]+[a-z]+)`)
	wrkPct       = regexp.MustCompile(`(?m)^\s+(50|90|99)%\s+([0-9.]+[a-z]+)\s*$`)
	wrkNon2xx    = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: ([0-9]+)`)
	wrkSocketErr = regexp.MustCompile(`(?m)^\s*Socket errors: (.*)$`)
)

// parseWrk reads wrk's summary (run with --latency).
func parseWrk(out []byte) (wrkResult, error) {
	var w wrkResult
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		return w, fmt.Errorf("no Requests/sec in wrk's output")
	}
	w.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	if m = wrkTotal.FindSubmatch(out); m != nil {
		w.requests, _ = strconv.ParseInt(string(m[1]), 10, 64)
		w.elapsed, _ = time.ParseDuration(string(m[2]))
	}
	for _, p := range wrkPct.FindAllSubmatch(out, -1) {
		d, err := time.ParseDuration(string(p[2]))
		if err != nil {
			return w, fmt.Errorf("latency %s%%: %w", p[1], err)
		}
		switch string(p[1]) {
		case "50":
			w.p50 = d
		case "90":
			w.p90 = d
		case "99":
			w.p99 = d
		}
	}
	if w.p50 == 0 {
		return w, fmt.Errorf("no latency distribution in wrk's output (--latency)")
	}
	if m = wrkNon2xx.FindSubmatch(out); m != nil {
		w.non2xx, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m = wrkSocketErr.FindSubmatch(out); m != nil {
		w.socketErrors = string(m[1])
	}
	return w, nil
}

// PrintEdge writes the figures of r as a Markdown table, then the exact
// commands and scripts.
func PrintEdge(w io.Writer, r *EdgeResult) {
	fmt.Fprintf(w, "Command: `%s`\n\n", r.Command)
	fmt.Fprintf(w, "wrk -t%d -c%d, %v per scenario; live item %d, sold-out item %d. Target: rejections and cached reads >= %.1fx hello.\n\n",
		r.Threads, r.Connections, r.Duration, r.LiveItem, r.SoldItem, r.Target)
	fmt.Fprintln(w, "| scenario | request | expected | probe | req/s | ratio to hello | ratio to same-mode hello | p50 | p99 | answers (edge /metrics) | target |")
	fmt.Fprintln(w, "|---|---|---:|---|---:|---:|---:|---:|---:|---|---|")
	for _, s := range r.Scenarios {
		req := s.Method + " " + urlPath(elideURL(s.URL))
		if s.Sessions > 0 {
			req += fmt.Sprintf(" (%s sessions)", Human(float64(s.Sessions)))
		}
		target := ""
		if s.Expected != 200 || strings.HasPrefix(s.Name, "cached") {
			target = "met"
			if s.RatioToHello < r.Target {
				target = "NOT MET"
			}
		}
		answers := answersString(s.Answers)
		if len(s.Problems) > 0 {
			answers += " **" + strings.Join(s.Problems, "; ") + "**"
		}
		fmt.Fprintf(w, "| %s | `%s` | %d | %s | %s | %.2f | %.2f | %s | %s | %s | %s |\n",
			s.Name, req, s.Expected, s.Probe, Human(s.ReqPerSec), s.RatioToHello, s.RatioSameMode,
			fmtDur(s.P50), fmtDur(s.P99), answers, target)
	}
	fmt.Fprintln(w, "\nCommands (scripts below; session tokens elided):")
	fmt.Fprintln(w, "```")
	for _, s := range r.Scenarios {
		fmt.Fprintf(w, "# %s\n%s\n", s.Name, s.Command)
	}
	fmt.Fprintln(w, "```")
	seen := map[string]bool{}
	for i, s := range r.Scenarios {
		if seen[s.Script] {
			continue
		}
		seen[s.Script] = true
		fmt.Fprintf(w, "\n%02d.lua (%s):\n```lua\n%s```\n", i, s.Name, s.Script)
	}
}

// fmtDur prints a latency in µs below 10 ms.
func fmtDur(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
	return d.Round(100 * time.Microsecond).String()
}
