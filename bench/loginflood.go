package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// LoginFloodConfig is what `seckill bench loginflood` needs: a running edge
// and the backend behind it (accounts are registered on the backend).
type LoginFloodConfig struct {
	Public       string // base URL of the edge's public API
	Admin        string // base URL of the edge's admin API
	AdminToken   string
	Backend      string // base URL of the backend API
	BackendToken string
	Duration     time.Duration // of the flood (default 20 s); the quiet runs last half of it each
	BuysPerSec   int           // purchases started per second in every run (default 50)
	LoginsPerSec int           // logins per second during the flood (default 200)
	Accounts     int           // accounts the logins cycle through (default 20)
	// Control adds a flood of logins refused before any hash (a username
	// no account can have) and a quiet run after it: what the flood costs
	// without bcrypt, in the same run.
	Control  bool
	Progress io.Writer
}

// FloodRun is one phase of the measurement.
type FloodRun struct {
	Name      string         `json:"name"`
	Sent      int            `json:"purchases_sent"`
	Buys      LatencyStats   `json:"buys_accepted"` // latency of the 202s (the buy request alone)
	BuyOthers map[string]int `json:"buy_refusals"`  // status and code of every other answer
	Logins    map[string]int `json:"logins"`        // answers to the logins, by status and code
	LoadStart string         `json:"load_average_start"`
	LoadEnd   string         `json:"load_average_end"`
}

// LoginFloodResult is what `seckill bench loginflood` measures.
type LoginFloodResult struct {
	Command  string     `json:"command"`
	Started  time.Time  `json:"started"`
	Item     int64      `json:"item"`
	Runs     []FloodRun `json:"runs"`
	QuietP99 float64    `json:"quiet_p99_ms"`
	FloodP99 float64    `json:"flood_p99_ms"`
	Ratio    float64    `json:"p99_ratio"`
	// ControlP99 and ControlRatio: the flood of logins refused before any
	// hash (with Control).
	ControlP99   float64 `json:"control_p99_ms,omitempty"`
	ControlRatio float64 `json:"control_p99_ratio,omitempty"`
	Buy503       int     `json:"purchase_503s"`
	Target       float64 `json:"target_ratio"`
}

// LoginFloodTarget: the flood keeps the purchases' p99 within this factor
// of the p99 without it (issue 13 M5).
const LoginFloodTarget = 2.0

// RunLoginFlood measures purchases during a login flood (issue 13 M5):
// purchases at a fixed rate (challenge and path untimed, then the buy
// timed) for Duration/2 without logins, Duration with LoginsPerSec logins
// of Accounts accounts, and Duration/2 without again, so that a machine
// load that drifts weighs on both sides alike. It reports every answer,
// the p99 of the buys with the flood against the p99 without it, and the
// load average around each run.
func RunLoginFlood(ctx context.Context, cfg LoginFloodConfig) (*LoginFloodResult, error) {
	if cfg.Duration <= 0 {
		cfg.Duration = 20 * time.Second
	}
	if cfg.BuysPerSec <= 0 {
		cfg.BuysPerSec = 50
	}
	if cfg.LoginsPerSec <= 0 {
		cfg.LoginsPerSec = 200
	}
	if cfg.Accounts <= 0 {
		cfg.Accounts = 20
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	progress := func(format string, args ...any) {
		fmt.Fprintf(cfg.Progress, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
	cl := newEdgeClient(cfg.Public, cfg.Admin, cfg.AdminToken)
	defer cl.close()
	cl.backend, cl.backendToken = strings.TrimRight(cfg.Backend, "/"), cfg.BackendToken
	// The load generator keeps more connections than the other benches:
	// hundreds of logins wait on the backend at once.
	cl.hc.Transport.(*http.Transport).MaxIdleConnsPerHost = 1024
	res := &LoginFloodResult{Started: time.Now(), Target: LoginFloodTarget}

	run := randomHex(4)
	kind, err := cl.challengeKind(ctx, "none", progress)
	if err != nil {
		return nil, err
	}
	buyers := 2 * 2 * cfg.BuysPerSec * int(cfg.Duration/time.Second+1)
	if res.Item, err = cl.createItem(ctx, "bench-loginflood "+run, int64(buyers), kind); err != nil {
		return nil, err
	}
	names := make([]string, buyers)
	for i := range names {
		names[i] = fmt.Sprintf("lf%s-b%06d", run, i)
	}
	toks, err := cl.sessions(ctx, names)
	if err != nil {
		return nil, err
	}
	// Accounts with passwords, registered on the backend (the edge's
	// registration may ask for a challenge): each login costs a bcrypt.
	accounts := make([]string, cfg.Accounts)
	for i := range accounts {
		accounts[i] = fmt.Sprintf("lf%s-a%03d", run, i)
		body := map[string]any{"username": accounts[i], "password": "correct horse battery"}
		for try := 0; ; try++ { // 503 overloaded while hashing is busy: retry
			rp, err := cl.do(ctx, http.MethodPost, cl.backend+"/v1/users", cl.backendToken, body)
			if err != nil {
				return nil, fmt.Errorf("POST /v1/users: %w", err)
			}
			if rp.Status == http.StatusCreated {
				break
			}
			if rp.Status != http.StatusServiceUnavailable || try == 30 {
				return nil, fmt.Errorf("POST /v1/users: %s (want 201)", rp)
			}
			time.Sleep(time.Second)
		}
	}
	progress("item %d; %d sessions, %d accounts", res.Item, len(toks), len(accounts))

	next := 0
	phase := func(name string, d time.Duration, logins, hashed bool) (FloodRun, []time.Duration) {
		r := FloodRun{Name: name, BuyOthers: map[string]int{}, Logins: map[string]int{}, LoadStart: loadAverage()}
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		stop := time.Now().Add(d)
		if logins {
			wg.Go(func() {
				tick := time.NewTicker(time.Second / time.Duration(cfg.LoginsPerSec))
				defer tick.Stop()
				var lw sync.WaitGroup
				defer lw.Wait()
				for i := 0; time.Now().Before(stop); i++ {
					<-tick.C
					lw.Go(func() {
						body := map[string]any{"username": accounts[i%len(accounts)], "password": "correct horse battery"}
						if !hashed {
							body["username"] = "no" // too short for any account: refused before hashing
						}
						rp, err := cl.do(ctx, http.MethodPost, cl.public+"/api/login", "", body)
						mu.Lock()
						defer mu.Unlock()
						r.Logins[answerKey(rp, err)]++
					})
				}
			})
		}
		tick := time.NewTicker(time.Second / time.Duration(cfg.BuysPerSec))
		defer tick.Stop()
		for ; time.Now().Before(stop) && next < len(toks); next++ {
			<-tick.C
			r.Sent++
			tok := toks[next]
			wg.Go(func() {
				p, err := cl.preparePath(ctx, res.Item, tok)
				if err != nil {
					mu.Lock()
					r.BuyOthers["path: "+err.Error()]++
					mu.Unlock()
					return
				}
				t0 := time.Now()
				rp, err := cl.do(ctx, http.MethodPost, cl.buyURL(res.Item, p), tok, nil)
				took := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				if err == nil && rp.Status == http.StatusAccepted {
					lat = append(lat, took)
					return
				}
				r.BuyOthers[answerKey(rp, err)]++
				if err == nil && rp.Status == http.StatusServiceUnavailable {
					res.Buy503++
				}
			})
		}
		wg.Wait()
		r.Buys, r.LoadEnd = latencyStats(lat), loadAverage()
		progress("%s: %d sent, %d accepted, p50 %v, p99 %v, refusals %v, logins %v, load %s -> %s",
			name, r.Sent, r.Buys.N, r.Buys.P50, r.Buys.P99, r.BuyOthers, r.Logins, r.LoadStart, r.LoadEnd)
		return r, lat
	}
	half := cfg.Duration / 2
	q1, l1 := phase("quiet (before)", half, false, false)
	f, _ := phase(fmt.Sprintf("%d logins/s", cfg.LoginsPerSec), cfg.Duration, true, true)
	q2, l2 := phase("quiet (after)", half, false, false)
	res.Runs = []FloodRun{q1, f, q2}
	quiet := append(l1, l2...)
	if cfg.Control {
		c, _ := phase(fmt.Sprintf("control: %d logins/s refused before hashing", cfg.LoginsPerSec), cfg.Duration, true, false)
		q3, l3 := phase("quiet (after the control)", half, false, false)
		res.Runs = append(res.Runs, c, q3)
		// The control is judged against the quiet runs around it.
		res.ControlP99 = ms(c.Buys.P99)
		if qc := ms(latencyStats(append(slices.Clone(l2), l3...)).P99); qc > 0 {
			res.ControlRatio = res.ControlP99 / qc
		}
	}
	res.QuietP99 = ms(latencyStats(quiet).P99)
	res.FloodP99 = ms(f.Buys.P99)
	if res.QuietP99 > 0 {
		res.Ratio = res.FloodP99 / res.QuietP99
	}
	return res, nil
}

// answerKey names an answer by status and problem code, or the error.
func answerKey(r reply, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return r.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// loadAverage is the 1-minute load average ("?" where /proc has none).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// PrintLoginFlood writes the figures of r as a Markdown table.
func PrintLoginFlood(w io.Writer, r *LoginFloodResult) {
	fmt.Fprintf(w, "Command: `%s`\n\n", r.Command)
	fmt.Fprintf(w, "Item %d; the buy request timed (challenge and path untimed before it).\n\n", r.Item)
	fmt.Fprintln(w, "| run | load average | purchases sent | accepted | other answers | buy p50 | buy p99 | logins |")
	fmt.Fprintln(w, "|---|---|---:|---:|---|---:|---:|---|")
	for _, x := range r.Runs {
		fmt.Fprintf(w, "| %s | %s → %s | %d | %d | %s | %.2f ms | %.2f ms | %s |\n", x.Name, x.LoadStart, x.LoadEnd, x.Sent, x.Buys.N,
			counts(x.BuyOthers), ms(x.Buys.P50), ms(x.Buys.P99), counts(x.Logins))
	}
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT MET"
	}
	fmt.Fprintf(w, "\nPurchase p99 without logins %.2f ms (both quiet runs pooled), with them %.2f ms: ratio %.2f (target ≤ %.1f: %s). Purchase 503s: %d (target 0: %s).\n",
		r.QuietP99, r.FloodP99, r.Ratio, r.Target, met(r.Ratio <= r.Target), r.Buy503, met(r.Buy503 == 0))
	if r.ControlP99 > 0 {
		fmt.Fprintf(w, "Control (logins refused before any hash, same rate): purchase p99 %.2f ms, ratio %.2f to the quiet runs around it.\n", r.ControlP99, r.ControlRatio)
	}
}

// counts shows answer counts as "200 ×12, 503 overloaded ×40".
func counts(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
