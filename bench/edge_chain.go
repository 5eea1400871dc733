package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// ChainConfig is what `seckill bench chain` needs: a running edge and the
// backend behind it.
type ChainConfig struct {
	Public       string // base URL of the edge's public API
	Admin        string // base URL of the edge's admin API
	AdminToken   string
	Backend      string // base URL of the backend API
	BackendToken string // Bearer token of the backend's /v1/admin/*
	N            int    // timed purchases on each side (default 2000)
	Batch        int    // paths prepared before each run of timed buys (default 250; a path lives 60 s)
	Warmup       int    // untimed purchases on each side first (default 100)
	Challenge    string // challenge of the item (default "none")
	Progress     io.Writer
}

// LatencyStats summarizes timed requests.
type LatencyStats struct {
	N    int           `json:"n"`
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	Mean time.Duration `json:"mean_ns"`
	Min  time.Duration `json:"min_ns"`
	Max  time.Duration `json:"max_ns"`
}

func latencyStats(d []time.Duration) LatencyStats {
	s := slices.Clone(d)
	slices.Sort(s)
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	st := LatencyStats{N: len(s), P50: Percentile(s, 0.50), P90: Percentile(s, 0.90), P99: Percentile(s, 0.99)}
	if len(s) > 0 {
		st.Mean, st.Min, st.Max = sum/time.Duration(len(s)), s[0], s[len(s)-1]
	}
	return st
}

// ChainResult is what `seckill bench chain` measures.
type ChainResult struct {
	Command string        `json:"command"`
	Started time.Time     `json:"started"`
	Item    int64         `json:"item"`
	Edge    LatencyStats  `json:"edge_buy"`       // POST /api/items/{id}/buy/{path} through the edge
	Direct  LatencyStats  `json:"backend_direct"` // POST /v1/reservations on the backend
	Added   time.Duration `json:"added_at_median_ns"`
	Target  time.Duration `json:"target_added_ns"`
}

// ChainTarget: the full protection chain adds less than this at the median.
const ChainTarget = 100 * time.Microsecond

// RunChain times purchases through the edge (the full protection chain:
// limits, session, catalogue, sold-out marker, path, Bloom dedup, guard,
// then the backend) against reservations sent straight to the backend, one
// request at a time over one keep-alive client, alternating the two.
func RunChain(ctx context.Context, cfg ChainConfig) (*ChainResult, error) {
	if cfg.N <= 0 {
		cfg.N = 2000
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 250
	}
	if cfg.Warmup < 0 {
		cfg.Warmup = 0
	} else if cfg.Warmup == 0 {
		cfg.Warmup = 100
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
	total := cfg.N + cfg.Warmup
	res := &ChainResult{Started: time.Now(), Target: ChainTarget}

	if cfg.Challenge == "" {
		cfg.Challenge = "none"
	}
	run := randomHex(4)
	kind, err := cl.challengeKind(ctx, cfg.Challenge, progress)
	if err != nil {
		return nil, err
	}
	if res.Item, err = cl.createItem(ctx, "bench-chain "+run, int64(2*total+10), kind); err != nil {
		return nil, err
	}
	edgeNames, directNames := make([]string, total), make([]string, total)
	for i := range total {
		edgeNames[i] = fmt.Sprintf("bc%s-e%06d", run, i)
		directNames[i] = fmt.Sprintf("bc%s-d%06d", run, i)
	}
	toks, err := cl.sessions(ctx, edgeNames)
	if err != nil {
		return nil, err
	}
	ids, err := cl.backendUsers(ctx, directNames)
	if err != nil {
		return nil, err
	}
	progress("item %d; %d edge sessions, %d backend users (warm-up %d each)", res.Item, len(toks), len(ids), cfg.Warmup)

	timeEdge := func(path, token string) (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, cl.buyURL(res.Item, path), nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		return timed(cl.hc, req, http.StatusAccepted)
	}
	timeDirect := func(userID int64) (time.Duration, error) {
		body := fmt.Sprintf(`{"item_id":%d,"user_id":%d,"request_id":"%s"}`, res.Item, userID, randomHex(16))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, cl.backend+"/v1/reservations", strings.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		if cl.backendToken != "" { // the backend's internal credential
			req.Header.Set("Authorization", "Bearer "+cl.backendToken)
		}
		return timed(cl.hc, req, http.StatusAccepted)
	}

	var edgeLat, directLat []time.Duration
	for start := 0; start < total; start += cfg.Batch {
		end := min(start+cfg.Batch, total)
		paths, err := preparePaths(ctx, cl, res.Item, toks[start:end])
		if err != nil {
			return nil, err
		}
		for i := start; i < end; i++ {
			var de, dd time.Duration
			// Alternate which goes first, so neither always follows the other.
			if i%2 == 0 {
				if de, err = timeEdge(paths[i-start], toks[i]); err == nil {
					dd, err = timeDirect(ids[i])
				}
			} else {
				if dd, err = timeDirect(ids[i]); err == nil {
					de, err = timeEdge(paths[i-start], toks[i])
				}
			}
			if err != nil {
				return nil, fmt.Errorf("purchase %d: %w", i, err)
			}
			if i >= cfg.Warmup {
				edgeLat, directLat = append(edgeLat, de), append(directLat, dd)
			}
		}
		progress("timed %d of %d pairs", max(0, end-cfg.Warmup), cfg.N)
	}
	res.Edge, res.Direct = latencyStats(edgeLat), latencyStats(directLat)
	res.Added = res.Edge.P50 - res.Direct.P50
	return res, nil
}

// preparePaths runs challenge -> solve -> path for each session (untimed),
// on as many goroutines as CPUs (a pow challenge may need solving).
func preparePaths(ctx context.Context, cl *edgeClient, item int64, toks []string) ([]string, error) {
	paths := make([]string, len(toks))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, t := range toks {
		g.Go(func() error {
			p, err := cl.preparePath(gctx, item, t)
			if err != nil {
				return fmt.Errorf("preparing a path: %w", err)
			}
			paths[i] = p
			return nil
		})
	}
	return paths, g.Wait()
}

// timed sends req and reads the whole answer; it wants status want.
func timed(hc *http.Client, req *http.Request, want int) (time.Duration, error) {
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != want {
		return 0, fmt.Errorf("%s %s: %d (want %d): %s", req.Method, req.URL.Path, resp.StatusCode, want, bytes.TrimSpace(b))
	}
	return d, nil
}

// PrintChain writes the figures of r as a Markdown table.
func PrintChain(w io.Writer, r *ChainResult) {
	fmt.Fprintf(w, "Command: `%s`\n\n", r.Command)
	fmt.Fprintf(w, "Item %d; one request at a time over one keep-alive client, edge buy and direct reservation alternating.\n\n", r.Item)
	fmt.Fprintln(w, "| request | n | p50 | p90 | p99 | mean |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	row := func(name string, s LatencyStats) {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s |\n", name, s.N, us(s.P50), us(s.P90), us(s.P99), us(s.Mean))
	}
	row("edge: `POST /api/items/{id}/buy/{path}` (full protection chain + backend)", r.Edge)
	row("backend direct: `POST /v1/reservations`", r.Direct)
	met := "met"
	if r.Added >= r.Target {
		met = "NOT MET"
	}
	fmt.Fprintf(w, "\nThe chain adds %s at the median (target < %s: %s); p90 %+.0f µs, p99 %+.0f µs.\n",
		us(r.Added), us(r.Target), met,
		float64(r.Edge.P90-r.Direct.P90)/float64(time.Microsecond), float64(r.Edge.P99-r.Direct.P99)/float64(time.Microsecond))
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }
