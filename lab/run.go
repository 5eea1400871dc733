package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"seckill/apiclient"
	"seckill/captcha/pow"
)

// Config says where the edge is and what to do besides playing.
type Config struct {
	EdgeURL    string // public API, e.g. http://127.0.0.1:8080
	AdminURL   string // admin API, e.g. http://127.0.0.1:8081
	AdminToken string
	// ReconcileCmd, when set, is run through sh -c at the end with {id}
	// replaced by the item id; its exit status is part of the verdict.
	ReconcileCmd string
	// Progress receives a live progress line (\r-terminated) every 500 ms
	// when set; Log receives setup messages when set.
	Progress io.Writer
	Log      io.Writer
	// HTTP overrides the client (tests).
	HTTP *http.Client
}

// runner is one run in progress.
type runner struct {
	sc      *Scenario
	cfg     Config
	c       *client
	item    int64
	runID   string
	itemURL string

	soldOut    atomic.Bool
	honestLeft atomic.Int64

	mu       sync.Mutex
	wins     map[string]int // account -> 202s on buy
	outcomes map[string]int // honest outcomes
	notes    []string
	samples  []Sample
}

func (r *runner) logf(format string, a ...any) {
	if r.cfg.Log != nil {
		fmt.Fprintf(r.cfg.Log, "lab: "+format+"\n", a...)
	}
}

func (r *runner) note(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := fmt.Sprintf(format, a...)
	for _, o := range r.notes {
		if o == n {
			return
		}
	}
	r.notes = append(r.notes, n)
}

func (r *runner) win(a *actor) {
	r.mu.Lock()
	r.wins[a.name]++
	r.mu.Unlock()
}

// Run plays the scenario against the edge and returns the report (its
// Verdict says PASS or FAIL). An error means the run could not be played.
func Run(ctx context.Context, sc *Scenario, cfg Config) (*Report, error) {
	hc := cfg.HTTP
	if hc == nil {
		hc = newHTTPClient(sc.Connections, sc.Timeout)
	}
	var idb [3]byte
	_, _ = rand.Read(idb[:])
	r := &runner{sc: sc, cfg: cfg, runID: hex.EncodeToString(idb[:]), wins: map[string]int{}, outcomes: map[string]int{}}
	r.c = &client{api: apiclient.New(cfg.EdgeURL, cfg.AdminURL, cfg.AdminToken, hc), rec: &recorder{}}
	if sc.XFF {
		// Before anything else: an edge that ignores the forwarded
		// addresses would make every number of the run meaningless.
		note, err := CheckForwarding(ctx, hc, cfg.EdgeURL)
		if err != nil {
			return nil, err
		}
		if note != "" {
			r.note("%s", note)
		}
	}
	if sc.Challenge == "captcha" {
		r.note("the sale uses captcha: lab users cannot read the image, so honest users give up (use pow or none items)")
	}

	// The sale.
	created := time.Now()
	startsAt := created.Add(sc.StartIn)
	id, err := r.c.api.CreateItem(ctx, apiclient.ItemSpec{
		Name: "lab " + sc.Name + " " + r.runID, PriceCents: int64(sc.PriceCents), Stock: int64(sc.Units), Challenge: sc.Challenge,
		StartsAt: startsAt.UTC(), EndsAt: startsAt.Add(sc.SaleLength).UTC(),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the sale: %w", err)
	}
	r.item = id
	r.itemURL = fmt.Sprintf("/api/items/%d", r.item)
	r.logf("item %d: %d units, challenge %s, starts in %s", r.item, sc.Units, sc.Challenge, sc.StartIn)
	if off := sc.DefencesOff(); len(off) > 0 {
		body := map[string]bool{}
		for _, k := range off {
			body[k] = false
		}
		if err := r.c.api.SetDefences(ctx, r.item, body); err != nil {
			return nil, fmt.Errorf("switching defences off: %w", err)
		}
		r.logf("defences switched OFF for item %d: %v", r.item, off)
	}

	// Sessions.
	honest := make([]*actor, sc.Honest.Users)
	var names []string
	for i := range honest {
		honest[i] = &actor{kind: Honest, name: fmt.Sprintf("lab%s-h%d", r.runID, i)}
		if sc.XFF {
			honest[i].ip = honestIP(i)
		}
		names = append(names, honest[i].name)
	}
	bots := r.makeBots()
	for _, b := range bots {
		for _, a := range b.accounts {
			names = append(names, a.name)
		}
	}
	tokens, err := r.sessions(ctx, names)
	if err != nil {
		return nil, err
	}
	for _, a := range honest {
		a.token = tokens[a.name]
	}
	for _, b := range bots {
		for _, a := range b.accounts {
			a.token = tokens[a.name]
		}
	}
	r.logf("%d sessions (%d honest, %d bot accounts) in %s", len(names), len(honest), len(names)-len(honest), time.Since(created).Round(time.Millisecond))

	// Wait for the sale to start.
	if !sleep(ctx, time.Until(startsAt)) {
		return nil, ctx.Err()
	}
	start := time.Now()
	r.c.rec.start = start
	runCtx, stopRun := context.WithTimeout(ctx, sc.Duration)
	defer stopRun()
	botCtx, stopBots := context.WithCancel(runCtx)
	defer stopBots()

	// Stock poller and progress line until the end of the settle wait.
	pollCtx, stopPoll := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); r.pollStock(pollCtx, start) }()
	if cfg.Progress != nil {
		bg.Add(1)
		go func() { defer bg.Done(); r.progress(pollCtx, start) }()
	}

	// Bots.
	var bw sync.WaitGroup
	for _, b := range bots {
		bw.Add(1)
		go func() {
			defer bw.Done()
			if !sleep(botCtx, b.spec.StartIn) {
				return
			}
			bctx := botCtx
			if b.spec.Kind == SlowClient { // it has to outlive the path it holds
				bctx = runCtx
			}
			r.playBot(bctx, b)
		}()
	}

	// Honest users on their arrival curve.
	r.honestLeft.Store(int64(len(honest)))
	var hw sync.WaitGroup
	offsets := arrivals(sc.Honest, len(honest))
	for i, a := range honest {
		hw.Add(1)
		go func() {
			defer hw.Done()
			defer r.honestLeft.Add(-1)
			if !sleep(runCtx, time.Until(start.Add(offsets[i]))) {
				r.outcome("not_started")
				return
			}
			r.outcome(r.playHonest(runCtx, a))
		}()
	}
	hw.Wait()
	honestDone := time.Since(start)
	if runCtx.Err() == nil {
		sleep(runCtx, sc.BotLinger)
	}
	stopBots()
	bw.Wait()
	played := time.Since(start)
	r.logf("played %s (honest users done after %s)", played.Round(time.Millisecond), honestDone.Round(time.Millisecond))

	// Invariants.
	inv := r.settle(ctx)
	stopPoll()
	bg.Wait()
	if cfg.Progress != nil {
		fmt.Fprint(cfg.Progress, "\r\033[K")
	}
	var rc *ReconcileResult
	if cfg.ReconcileCmd != "" {
		rc = r.reconcile(ctx)
	}
	rep := r.build(start, played, honestDone, inv, rc)
	return rep, nil
}

func (r *runner) outcome(o string) {
	r.mu.Lock()
	r.outcomes[o]++
	r.mu.Unlock()
}

// honestIP is a distinct 10.0.0.0/8 address per honest user.
func honestIP(i int) string {
	i++
	return fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255)
}

// arrivals returns each honest user's start offset after the sale starts.
func arrivals(h HonestSpec, n int) []time.Duration {
	out := make([]time.Duration, n)
	switch h.Arrival {
	case "linear":
		for i := range out {
			out[i] = time.Duration(float64(h.Over) * float64(i) / float64(max(n, 1)))
		}
	case "poisson":
		t := 0.0
		for i := range out {
			t += -math.Log(1-mrand.Float64()) / h.Rate
			out[i] = time.Duration(t * float64(time.Second))
		}
	}
	return out
}

// sessions gets tokens through POST /admin/sessions, 10,000 at a time.
func (r *runner) sessions(ctx context.Context, names []string) (map[string]string, error) {
	out, err := r.c.api.Sessions(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	for _, n := range names {
		if out[n] == "" {
			return nil, fmt.Errorf("sessions: no token for %s", n)
		}
	}
	return out, nil
}

// retrying sends a request until it gets a final answer: it waits
// Retry-After on 429 and 503, a moment on 409 not_live and on transport
// errors, and gives up when ctx ends (the reply has err set then).
func (r *runner) retrying(ctx context.Context, a *actor, route, method, path string, body any) reply {
	errs := 0
	for {
		rep := r.c.do(ctx, a, route, method, path, body)
		switch {
		case ctx.Err() != nil:
			return reply{err: ctx.Err()}
		case rep.err != nil:
			errs++
			if errs > 20 {
				return rep
			}
			sleep(ctx, time.Duration(errs)*100*time.Millisecond)
		case rep.status == http.StatusTooManyRequests || rep.status == http.StatusServiceUnavailable:
			sleep(ctx, rep.retryAfter())
		case rep.status == http.StatusConflict && rep.code() == "not_live":
			sleep(ctx, 200*time.Millisecond)
		default:
			return rep
		}
	}
}

// playHonest does what the storefront does and returns the user's outcome.
func (r *runner) playHonest(ctx context.Context, a *actor) string {
	for range r.sc.Honest.MaxAttempts {
		ch := r.retrying(ctx, a, "challenge", "POST", r.itemURL+"/challenge", nil)
		switch {
		case ch.err != nil:
			return "stopped"
		case ch.status == 200:
		case ch.code() == "already_bought":
			return r.poll(ctx, a)
		case ch.code() == "sold_out":
			return "sold_out"
		default:
			continue
		}
		var ans string
		switch ch.str("kind") {
		case "pow":
			ans = pow.Solve(ch.str("seed"), int(ch.num("difficulty")))
		default:
			return "captcha_unsolved"
		}
		p := r.retrying(ctx, a, "path", "POST", r.itemURL+"/path", map[string]any{"challenge_id": ch.str("challenge_id"), "answer": ans})
		switch {
		case p.err != nil:
			return "stopped"
		case p.status == 200:
		case p.code() == "sold_out":
			return "sold_out"
		default:
			continue
		}
		b := r.retrying(ctx, a, "buy", "POST", r.itemURL+"/buy/"+p.str("path"), nil)
		switch {
		case b.err != nil:
			return "stopped"
		case b.status == 202:
			r.win(a)
			return r.poll(ctx, a)
		case b.code() == "already_bought":
			return r.poll(ctx, a)
		case b.code() == "sold_out":
			return "sold_out"
		}
	}
	return "gave_up"
}

// poll asks for the order with backoff until it is confirmed or failed.
func (r *runner) poll(ctx context.Context, a *actor) string {
	d := r.sc.Honest.PollInitial
	for {
		if !sleep(ctx, d) {
			return "won_unconfirmed"
		}
		o := r.c.do(ctx, a, "order", "GET", r.itemURL+"/order", nil)
		switch {
		case o.err != nil && ctx.Err() != nil:
			return "won_unconfirmed"
		case o.status == 200 && o.str("status") == "confirmed":
			return "won"
		case o.status == 200 && o.str("status") == "failed":
			return "order_failed"
		case o.status == 429 || o.status == 503:
			sleep(ctx, o.retryAfter())
		}
		d = min(time.Duration(float64(d)*1.5), r.sc.Honest.PollMax)
	}
}

// Sample is one poll of the item's stats.
type Sample struct {
	At            time.Duration `json:"at_ns"`
	StockLeft     int64         `json:"stock_left"`
	Reserved      int64         `json:"reserved"`
	Orders        int64         `json:"orders"`
	OutboxPending int64         `json:"outbox_pending"`
}

func (r *runner) sample(ctx context.Context, start time.Time) (Stats, error) {
	st, err := r.c.api.Stats(ctx, r.item)
	if err != nil {
		return st, err
	}
	if st.StockLeft <= 0 {
		r.soldOut.Store(true)
	}
	r.mu.Lock()
	r.samples = append(r.samples, Sample{At: time.Since(start), StockLeft: st.StockLeft, Reserved: st.Reserved, Orders: st.Orders, OutboxPending: st.OutboxPending})
	r.mu.Unlock()
	return st, nil
}

func (r *runner) pollStock(ctx context.Context, start time.Time) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		_, _ = r.sample(ctx, start)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *runner) progress(ctx context.Context, start time.Time) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	last, lastAt := 0, time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			recs := r.c.rec.snapshot()
			var ok, rej, lim, una, errs, won int
			for _, x := range recs {
				switch outcomeClass(x) {
				case "ok":
					ok++
				case "rejected":
					rej++
				case "limited":
					lim++
				case "unavailable":
					una++
				default:
					errs++
				}
				if x.Route == "buy" && x.Status == 202 {
					won++
				}
			}
			rate := float64(len(recs)-last) / now.Sub(lastAt).Seconds()
			last, lastAt = len(recs), now
			r.mu.Lock()
			left := int64(-1)
			if n := len(r.samples); n > 0 {
				left = r.samples[n-1].StockLeft
			}
			r.mu.Unlock()
			fmt.Fprintf(r.cfg.Progress, "\r\033[K%6.1fs %7.0f req/s  2xx %d  4xx %d  429 %d  5xx %d  err %d  accepted %d  stock_left %d  honest left %d",
				time.Since(start).Seconds(), rate, ok, rej, lim, una, errs, won, left, r.honestLeft.Load())
		}
	}
}

// Check is one invariant.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Invariants are the end-of-run checks.
type Invariants struct {
	Settled  bool    `json:"settled"`
	SettleIn string  `json:"settle_in"`
	Final    Stats   `json:"final"`
	Accepted int64   `json:"accepted"` // 202s on buy seen by the lab
	Checks   []Check `json:"checks"`
}

// settle waits for outbox_pending = 0 and orders = reserved, then checks.
func (r *runner) settle(ctx context.Context) Invariants {
	began := time.Now()
	var inv Invariants
	var st Stats
	var err error
	for {
		st, err = r.sample(ctx, r.c.rec.start)
		if err == nil && st.OutboxPending == 0 && st.Orders == st.Reserved {
			inv.Settled = true
			break
		}
		if time.Since(began) > r.sc.Settle || !sleep(ctx, 250*time.Millisecond) {
			break
		}
	}
	inv.SettleIn = time.Since(began).Round(time.Millisecond).String()
	inv.Final = st
	for _, x := range r.c.rec.snapshot() {
		if x.Route == "buy" && x.Status == 202 {
			inv.Accepted++
		}
	}
	add := func(name string, ok bool, format string, a ...any) {
		inv.Checks = append(inv.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, a...)})
	}
	if err != nil {
		add("stats readable", false, "%v", err)
		return inv
	}
	units := int64(r.sc.Units)
	add("settled", inv.Settled, "outbox_pending=%d orders=%d reserved=%d after %s", st.OutboxPending, st.Orders, st.Reserved, inv.SettleIn)
	add("accepted == reserved", inv.Accepted == st.Reserved, "202s seen by the lab=%d reserved=%d", inv.Accepted, st.Reserved)
	add("reserved == orders", st.Reserved == st.Orders, "reserved=%d orders=%d", st.Reserved, st.Orders)
	add("stock_left == units - orders", st.StockLeft == units-st.Orders, "stock_left=%d units=%d orders=%d", st.StockLeft, units, st.Orders)
	add("not oversold", st.Orders <= units && st.Reserved <= units && st.StockLeft >= 0 && st.StockTotal == units,
		"orders=%d reserved=%d stock_left=%d stock_total=%d units=%d", st.Orders, st.Reserved, st.StockLeft, st.StockTotal, units)
	r.mu.Lock()
	doubles := 0
	for _, n := range r.wins {
		if n > 1 {
			doubles++
		}
	}
	r.mu.Unlock()
	add("one unit per account", doubles == 0, "%d accounts got more than one 202", doubles)
	return inv
}

// ReconcileResult is the outcome of --reconcile-cmd.
type ReconcileResult struct {
	Command  string `json:"command"`
	ExitCode int    `json:"exit_code"`
	Output   string `json:"output"`
}

func (r *runner) reconcile(ctx context.Context) *ReconcileResult {
	cmdline := strings.ReplaceAll(r.cfg.ReconcileCmd, "{id}", fmt.Sprint(r.item))
	res := &ReconcileResult{Command: cmdline}
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, "sh", "-c", cmdline)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	if err != nil {
		res.ExitCode = -1
		if ee, ok := err.(*exec.ExitError); ok {
			res.ExitCode = ee.ExitCode()
		} else {
			buf.WriteString(err.Error())
		}
	}
	out := buf.String()
	if len(out) > 4000 {
		out = "…" + out[len(out)-4000:]
	}
	res.Output = out
	return res
}

func randomPath() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
