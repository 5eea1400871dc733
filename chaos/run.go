package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"seckill/apiclient"
)

// Config is one matrix run.
type Config struct {
	Bin      string // bin/seckill
	Dir      string // work folder (servers, logs)
	Units    int
	Load     LoadConfig
	FaultAt  float64       // inject once this share of the units is sold
	Settle   time.Duration // longest wait for the told orders to be stored
	MaxFlow  time.Duration // "flowing again" later than this is a violation
	Features Features
	Log      *slog.Logger
}

// Result is one row's run.
type Result struct {
	Row      string `json:"row"`
	Run      int    `json:"run"`
	Skipped  string `json:"skipped,omitempty"`
	Error    string `json:"error,omitempty"`
	Item     int64  `json:"item"`
	Units    int    `json:"units"`
	Buyers   int    `json:"buyers"`
	Verdict         // told, stored, lost, ...
	Internal int    `json:"internal_500"`
	Slow     int    `json:"slow"` // requests with no answer within the client timeout
	// hung-up-buys: buys refused backend_unavailable after the probe.
	UnavailableAfter int `json:"unavailable_after_probe"`
	// MustFlow rows: the longest stretch without a 202 during the fault.
	FaultGap time.Duration `json:"fault_gap_ns"`
	// CrashLoss rows: 202s answered in the second the crash erases.
	Erasable   int            `json:"erasable"`
	Wrong      int            `json:"wrong_answers"` // 404 unknown_item for the live item, a 5xx without Retry-After
	Early      int            `json:"early"`         // 202s before the sale opened
	Reconcile  int            `json:"reconcile_exit"`
	Timing                    // freeze, flow, gap
	Statuses   map[string]int `json:"statuses"`
	Violations []string       `json:"violations"`
	Dir        string         `json:"dir"`
}

// OK reports whether the run held every invariant.
func (r Result) OK() bool { return r.Skipped != "" || (r.Error == "" && len(r.Violations) == 0) }

// RunRow runs one row once on the shared servers.
func RunRow(ctx context.Context, cfg Config, srv *Servers, toxi *Toxiproxy, row Row, run int) (res Result) {
	res = Result{Row: row.Name, Run: run, Units: cfg.Units, Buyers: cfg.Load.Buyers, Reconcile: -1}
	opt, skip := row.Options(cfg.Features)
	if skip != "" {
		res.Skipped = skip
		return res
	}
	// Short: usernames are name-b00000 (at most 32 characters).
	name := fmt.Sprintf("c%s%d", strconv.FormatInt(time.Now().UnixMilli(), 36), run)
	dir := filepath.Join(cfg.Dir, "runs", name)
	res.Dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.Error = err.Error()
		return res
	}
	if row.Prepare != nil {
		cleanup, err := row.Prepare(ctx, srv, dir, &opt)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		defer cleanup()
	}
	log := cfg.Log.With("row", row.Name, "run", run)
	s, err := StartStack(ctx, srv, toxi, cfg.Bin, dir, name, opt)
	if err != nil {
		res.Error = "starting the stack: " + err.Error()
		return res
	}
	defer s.Stop(context.WithoutCancel(ctx))

	start := time.Now().Add(-time.Second)
	if row.StartIn > 0 {
		start = time.Now().Add(row.StartIn)
	}
	var item int64
	// An edge that just started may not have found its backend yet: 503.
	waitUntil(ctx, 15*time.Second, func() bool {
		item, err = s.API.CreateItem(ctx, apiclient.ItemSpec{Name: "chaos " + row.Name, PriceCents: 100, Stock: int64(cfg.Units),
			StartsAt: start, EndsAt: start.Add(time.Hour), Challenge: "none"})
		e := apiclient.AsError(err)
		return err == nil || e == nil || e.Status != http.StatusServiceUnavailable
	})
	if err != nil {
		res.Error = "creating the item: " + err.Error()
		return res
	}
	res.Item = item
	s.Item = item
	names := make([]string, cfg.Load.Buyers)
	for i := range names {
		names[i] = fmt.Sprintf("%s-b%05d", name, i)
	}
	tokens, err := s.API.Sessions(ctx, names)
	if err != nil {
		res.Error = "making sessions: " + err.Error()
		return res
	}
	// The edge's catalogue may not know the item for up to its TTL.
	waitUntil(ctx, 5*time.Second, func() bool { _, err := s.API.Item(ctx, item); return err == nil })

	h := &History{}
	s.History = h
	done := make(chan struct{})
	go func() { defer close(done); Drive(ctx, s.API, item, names, tokens, cfg.Load, h) }()

	// Inject mid-sale.
	want := int64(float64(cfg.Units) * cfg.FaultAt)
	waitUntil(ctx, 60*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		return h.AcceptedCount() >= want
	})
	inject := time.Now()
	log.Info("injecting", "what", row.What, "accepted", h.AcceptedCount())
	if err := row.Inject(ctx, s); err != nil {
		res.Error = "injecting: " + err.Error()
	}
	time.Sleep(row.Hold)
	if err := row.Recover(ctx, s); err != nil && res.Error == "" {
		res.Error = "recovering: " + err.Error()
	}
	probe := time.Now()
	if waitUntil(ctx, 60*time.Second, func() bool { return row.Probe(ctx, s) }) {
		probe = time.Now()
	} else if res.Error == "" {
		res.Error = "the component never answered its health probe"
	}
	log.Info("recovered", "after", time.Since(inject).Round(time.Millisecond), "probe", probe.Sub(inject).Round(time.Millisecond))
	<-done
	log.Info("sale over", "accepted", h.AcceptedCount(), "took", time.Since(h.Started).Round(time.Millisecond))

	// Settle: the told orders stored, nothing moving for 2 s.
	var told int
	for _, b := range h.Buyers {
		if len(b.Told) > 0 {
			told++
		}
	}
	var st Stored
	last, stable := -1, time.Now()
	deadline := time.Now().Add(cfg.Settle)
	for time.Now().Before(deadline) {
		st, err = ReadStored(ctx, s.PGURL, item)
		if err == nil {
			if st.Count != last {
				last, stable = st.Count, time.Now()
			}
			if st.Count >= told && time.Since(stable) >= 2*time.Second {
				break
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	if st, err = ReadStored(ctx, s.PGURL, item); err != nil {
		res.Error = "reading orders: " + err.Error()
		return res
	}
	res.Verdict = Judge(h, st, cfg.Units)
	res.Internal = h.Internal
	res.Wrong = h.Wrong
	res.Slow = h.Slow
	for _, e := range h.Buys {
		if row.NoUnavailableAfterProbe && e.At.After(probe) && e.Code == "backend_unavailable" {
			res.UnavailableAfter++
		}
	}
	res.Statuses = h.Statuses
	acc := h.AcceptedTimes()
	if row.StartIn > 0 {
		for _, t := range acc {
			if t.Before(start) {
				res.Early++
			}
		}
	}
	res.Timing = Timings(acc, inject, probe, res.Told >= cfg.Units)
	if row.CrashLoss { // 202s the crash may erase: after the AOF size was noted, until the kill (1 s later)
		for _, t := range acc {
			if t.After(inject) && t.Before(inject.Add(1500*time.Millisecond)) {
				res.Erasable++
			}
		}
	}
	if row.MustFlow {
		res.FaultGap = longestGap(acc, inject, probe)
	}
	code, out := s.Reconcile(ctx, item)
	res.Reconcile = code
	_ = os.WriteFile(filepath.Join(dir, "reconcile.txt"), []byte(fmt.Sprintf("exit %d\n%s", code, out)), 0o644)
	res.Violations = violations(res, row, cfg)
	return res
}

func violations(r Result, row Row, cfg Config) []string {
	var v []string
	add := func(cond bool, f string, a ...any) {
		if cond {
			v = append(v, fmt.Sprintf(f, a...))
		}
	}
	if row.CrashLoss {
		// What the crash erased may be lost (and its units sold again);
		// selling more than that, or storing above the stock, is not.
		add(r.Lost > r.Erasable, "%d lost, more than the %d told 202 in the erased second", r.Lost, r.Erasable)
		add(r.Oversold > r.Lost || r.Stored > r.Units, "%d oversold beyond the %d orders the crash erased", r.Oversold, r.Lost)
	} else {
		add(r.Lost > 0, "%d lost", r.Lost)
		add(r.Oversold > 0, "%d oversold", r.Oversold)
	}
	add(r.Unexpected > 0, "%d unexpected", r.Unexpected)
	add(r.Doubled > 0, "%d doubled", r.Doubled)
	add(r.Failed > 0, "%d dead-lettered", r.Failed)
	add(r.Indeterminate > 0 && !row.Kills, "%d indeterminate without a SIGKILL of a server", r.Indeterminate)
	add(r.Internal > 0, "%d answers 500 internal", r.Internal)
	add(r.Wrong > 0, "%d wrong answers (404 unknown_item for the live item, or a 5xx without Retry-After)", r.Wrong)
	add(r.Slow > 0, "%d requests without an answer within the client timeout", r.Slow)
	add(r.UnavailableAfter > 0, "%d buys refused backend_unavailable after the backend was back (breaker opened by hang-ups)", r.UnavailableAfter)
	add(r.FaultGap > time.Second, "purchases paused %s during the fault (they need neither PostgreSQL nor ZooKeeper)", r.FaultGap.Round(time.Millisecond))
	add(r.Early > 0, "%d accepted before the sale opened", r.Early)
	add(r.Reconcile != 0, "seckill reconcile exited %d", r.Reconcile)
	add(cfg.MaxFlow > 0 && r.Flow > cfg.MaxFlow, "flowing again after %s (bound %s)", r.Flow.Round(time.Millisecond), cfg.MaxFlow)
	add(r.Flow < 0 && !r.SoldOutFirst, "purchases never flowed again")
	return v
}

// WriteJSON appends results as JSON lines.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func flow(r Result) string {
	if r.SoldOutFirst {
		return "sold out first"
	}
	return dur(r.Flow)
}

func dur(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// Table writes the results as a Markdown table.
func Table(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| row | run | 202s | stored | lost | unexpected | oversold | doubled | indeterminate | 500s (+wrong) | reconcile | freeze | flowing again | longest gap | verdict |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		switch {
		case r.Skipped != "":
			fmt.Fprintf(w, "| %s | %d | | | | | | | | | | | | | skipped: %s |\n", r.Row, r.Run, r.Skipped)
		case r.Error != "" && r.Item == 0:
			fmt.Fprintf(w, "| %s | %d | | | | | | | | | | | | | error: %s |\n", r.Row, r.Run, r.Error)
		default:
			verdict := "ok"
			if !r.OK() {
				verdict = "FAIL: " + strings.Join(append(r.Violations, r.Error), "; ")
				verdict = strings.TrimSuffix(verdict, "; ")
			}
			fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s | %s | %s | %s |\n",
				r.Row, r.Run, r.Told, r.Stored, r.Lost, r.Unexpected, r.Oversold, r.Doubled, r.Indeterminate,
				r.Internal+r.Wrong, r.Reconcile, dur(r.Freeze), flow(r), dur(r.MaxGap), verdict)
		}
	}
}

// longestGap is the longest stretch in [from, to] without a 202, ending at
// the last 202 when the sale sold out first.
func longestGap(acc []time.Time, from, to time.Time) time.Duration {
	last, gap := from, time.Duration(0)
	for _, a := range acc {
		if a.Before(from) || a.After(to) {
			continue
		}
		gap = max(gap, a.Sub(last))
		last = a
	}
	if n := len(acc); n > 0 && acc[n-1].After(to) {
		gap = max(gap, to.Sub(last))
	}
	return gap
}
