package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"seckill"
	"seckill/apiclient"
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
	// SolveCaptcha, when set, reads a captcha image (PNG) and returns its
	// answer; ok false when it cannot read it (the bot fetches another
	// rather than burn this one). The ocr_bot kind and the account farm's
	// registration use it; honest lab users never do.
	SolveCaptcha CaptchaSolver
	// WatchPIDs names processes (e.g. "edge", "redis") whose CPU the lab
	// samples from /proc with the stock, with the load average: the
	// report's waiting-room measure (queue_measure.go) gives their CPU.
	WatchPIDs map[string]int
}

// CaptchaSolver reads one captcha PNG (e.g. the OCR of lab/ocr*.go).
type CaptchaSolver func(ctx context.Context, png []byte) (answer string, ok bool, err error)

// play is one run in progress: its seeds' sales share the population.
type play struct {
	sc    *Scenario
	cfg   Config
	api   *apiclient.Client
	runID string
	notes *noteSet
	// addresses: a run-random base in 10.0.0.0/8 (honest) and
	// 100.64.0.0/10 (farms), so the per-network budgets of earlier runs on
	// the same stack do not refuse this one's accounts.
	honestBase, farmBase, farmNext int
	// farms: each farm's current accounts (kept from sale to sale unless
	// fresh_accounts).
	farms map[string]*bot
	// farmAges: how old the farms' youngest and oldest accounts were when
	// each sale opened.
	farmAges []time.Duration
	// watch samples the load average and the watched processes' CPU.
	watch *procWatch
	// load1Before: the load average when the run began.
	load1Before float64
}

// runner is one sale (one seed) in progress.
type runner struct {
	sc      *Scenario
	cfg     Config
	p       *play
	pop     *population
	seed    uint64
	c       *client
	item    int64
	itemURL string
	startAt time.Time
	draw    *drawTimes // allocation draw (draw.go)

	soldOut    atomic.Bool
	honestLeft atomic.Int64

	mu       sync.Mutex
	wins     map[string]int // account -> 202s on buy
	outcomes map[string]int // honest outcomes
	samples  []Sample
	refused  map[string]string // account -> its first eligibility refusal code
	farmReg  map[string]int    // farm registration outcomes
	admits   []time.Duration   // when honest users saw a new admission (since start; queue.go)
}

// noteSet keeps the run's notes, each once.
type noteSet struct {
	mu    sync.Mutex
	notes []string
}

func (n *noteSet) add(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !slices.Contains(n.notes, s) {
		n.notes = append(n.notes, s)
	}
}

func (n *noteSet) list() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.notes)
}

func (p *play) logf(format string, a ...any) {
	if p.cfg.Log != nil {
		fmt.Fprintf(p.cfg.Log, "lab: "+format+"\n", a...)
	}
}

func (r *runner) logf(format string, a ...any) { r.p.logf(format, a...) }

func (r *runner) note(format string, a ...any) { r.p.notes.add(fmt.Sprintf(format, a...)) }

func (r *runner) win(a *actor) {
	r.mu.Lock()
	r.wins[a.name]++
	r.mu.Unlock()
}

// refuse remembers that the sale refused an account as not eligible.
func (r *runner) refuse(a *actor, code string) {
	r.mu.Lock()
	if _, ok := r.refused[a.name]; !ok {
		r.refused[a.name] = code
	}
	r.mu.Unlock()
}

// saleResult is what one seed's sale left.
type saleResult struct {
	seed       uint64
	item       int64
	start      time.Time
	played     time.Duration
	honestDone time.Duration
	inv        Invariants
	rc         *ReconcileResult
	recs       []Record
	outcomes   map[string]int
	samples    []Sample
	accounts   map[string]int // accounts that took part, per kind
	actors     map[string]int // users or bots, per kind
	wins       map[string]int // account -> 202s
	kindOf     map[string]string
	refused    map[string]string
	farmReg    map[string]int
	admits     []time.Duration
}

// Run plays the scenario against the edge, one sale per seed, and returns
// the report: its Verdict and Headline pool the seeds (see decide). An
// error means the run could not be played.
func Run(ctx context.Context, sc *Scenario, cfg Config) (*Report, error) {
	hc := cfg.HTTP
	if hc == nil {
		hc = newHTTPClient(sc.Connections, sc.Timeout)
	}
	var idb [3]byte
	_, _ = rand.Read(idb[:])
	p := &play{sc: sc, cfg: cfg, runID: hex.EncodeToString(idb[:]), notes: &noteSet{}, farms: map[string]*bot{},
		api: apiclient.New(cfg.EdgeURL, cfg.AdminURL, cfg.AdminToken, hc), watch: newProcWatch(cfg.WatchPIDs)}
	p.load1Before, _ = p.watch.read()
	var base [4]byte
	_, _ = rand.Read(base[:])
	p.honestBase = int(base[0])<<8 | int(base[1])
	p.farmBase = (int(base[2])<<8 | int(base[3])) % (1 << 14)
	if sc.XFF {
		// Before anything else: an edge that ignores the forwarded
		// addresses would make every number of the run meaningless.
		note, err := CheckForwarding(ctx, hc, cfg.EdgeURL)
		if err != nil {
			return nil, err
		}
		if note != "" {
			p.notes.add(note)
		}
	}
	if sc.Challenge == "captcha" {
		p.notes.add("the sale uses captcha: lab users cannot read the image, so honest users give up (use pow or none items); ocr_bot reads it with the lab's captcha solver")
	}
	pop, err := p.population(ctx)
	if err != nil {
		return nil, err
	}
	var sales []*saleResult
	for i, seed := range sc.Seeds {
		r := &runner{sc: sc, cfg: cfg, p: p, pop: pop, seed: seed, wins: map[string]int{}, outcomes: map[string]int{},
			refused: map[string]string{}, farmReg: map[string]int{}}
		r.c = &client{api: p.api, rec: &recorder{}}
		if len(sc.Seeds) > 1 {
			p.logf("seed %d (%d of %d)", seed, i+1, len(sc.Seeds))
		}
		res, err := r.playSale(ctx, i == 0)
		if err != nil {
			return nil, fmt.Errorf("seed %d: %w", seed, err)
		}
		sales = append(sales, res)
	}
	return p.build(sales, pop), nil
}

// playSale creates the seed's sale and plays it.
func (r *runner) playSale(ctx context.Context, first bool) (*saleResult, error) {
	sc, cfg := r.sc, r.cfg
	created := time.Now()
	startsAt := created.Add(sc.StartIn)
	if !first {
		startsAt = created.Add(sc.NextStartIn)
	}
	if sc.MinAccountAge > 0 {
		// The population's accounts must be older than min_account_age
		// when the sale opens: wait for real time to pass.
		if oldEnough := r.pop.madeAt.Add(sc.MinAccountAge + time.Second); startsAt.Before(oldEnough) {
			startsAt = oldEnough
			r.logf("the sale starts at %s, when the population's accounts are %s old (min_account_age %s)", startsAt.Format(time.TimeOnly), startsAt.Sub(r.pop.madeAt).Round(time.Second), sc.MinAccountAge)
		}
	}
	// Farms register their accounts ahead of the sale, from
	// register_before the planned start; the sale is created once they are
	// done (starting at the planned time, or 2 s after it is created if
	// the registrations ran late), so a farm always plays with all of its
	// accounts and their age at the start is known.
	honest := r.pop.honest
	bots := r.makeBots(true)
	r.c.rec.start = startsAt // registrations are recorded before the start
	var fw sync.WaitGroup
	for _, b := range bots {
		if b.spec.Kind != AccountFarm || !b.registered.IsZero() {
			continue
		}
		fw.Add(1)
		go func() {
			defer fw.Done()
			if sleep(ctx, time.Until(startsAt.Add(-b.spec.RegisterBefore))) {
				r.registerFarm(ctx, b, startsAt)
			}
		}()
	}
	fw.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if late := time.Now().Add(2 * time.Second); startsAt.Before(late) {
		r.note("the farms' registrations ran past the planned start of a sale: the sale started 2 s after they were done (raise register_before or start_in)")
		startsAt = late
	}
	spec := apiclient.ItemSpec{
		Name: fmt.Sprintf("lab %s %s seed %d", sc.Name, r.p.runID, r.seed), PriceCents: int64(sc.PriceCents), Stock: int64(sc.Units), Challenge: sc.Challenge,
		StartsAt: startsAt.UTC(), EndsAt: startsAt.Add(sc.SaleLength).UTC(),
	}
	if sc.Queue != nil { // the waiting room opens at the lab's start; the sale PreQueue later
		spec.SaleRules = sc.Queue.rules(startsAt)
		spec.StartsAt = startsAt.Add(sc.Queue.PreQueue).UTC()
		spec.EndsAt = spec.StartsAt.Add(sc.SaleLength)
	}
	spec.MinAccountAge = seckill.Duration(sc.MinAccountAge)
	spec.MaxPerNetwork = sc.MaxPerNetwork
	r.drawSpec(&spec, startsAt) // a draw: entries open at startsAt (draw.go)
	id, err := r.c.api.CreateItem(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("creating the sale: %w", err)
	}
	r.item = id
	r.itemURL = fmt.Sprintf("/api/items/%d", r.item)
	r.startAt = startsAt
	r.c.rec.start = startsAt
	r.logf("item %d: %d units, challenge %s, starts in %s", r.item, sc.Units, sc.Challenge, time.Until(startsAt).Round(time.Millisecond))
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

	// Wait for the sale to start.
	if !sleep(ctx, time.Until(startsAt)) {
		return nil, ctx.Err()
	}
	start := startsAt
	runCtx, stopRun := context.WithDeadline(ctx, start.Add(sc.Duration))
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
			if !sleep(botCtx, time.Until(start.Add(b.spec.StartIn))) {
				return
			}
			bctx := botCtx
			if b.spec.Kind == SlowClient { // it has to outlive the path it holds
				bctx = runCtx
			}
			r.playBot(bctx, b)
		}()
	}

	// Honest users on their arrival curve (fixed by the seed).
	r.honestLeft.Store(int64(len(honest)))
	var hw sync.WaitGroup
	offsets := arrivals(r.sc.Honest, len(honest), r.seed)
	for i, a := range honest {
		hw.Add(1)
		go func() {
			defer hw.Done()
			defer r.honestLeft.Add(-1)
			if a.token == "" {
				r.outcome("no_account")
				return
			}
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
	for _, b := range bots {
		if b.spec.Kind == AccountFarm && !b.registered.IsZero() {
			r.p.farmAges = append(r.p.farmAges, start.Sub(b.registered), start.Sub(b.regBegan))
			if sc.MinAccountAge > 0 && start.Sub(b.regBegan) >= sc.MinAccountAge {
				r.note("the farm's oldest accounts were %s old when seed %d's sale opened, not younger than min_account_age %s: they could take part", start.Sub(b.regBegan).Round(time.Second), r.seed, sc.MinAccountAge)
			}
		}
	}
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
	res := &saleResult{seed: r.seed, item: r.item, start: start, played: played, honestDone: honestDone, inv: inv, rc: rc,
		recs: r.c.rec.snapshot(), accounts: map[string]int{}, actors: map[string]int{}, kindOf: map[string]string{}}
	r.mu.Lock()
	res.outcomes, res.samples, res.wins = maps.Clone(r.outcomes), slices.Clone(r.samples), maps.Clone(r.wins)
	res.refused, res.farmReg, res.admits = maps.Clone(r.refused), maps.Clone(r.farmReg), slices.Clone(r.admits)
	r.mu.Unlock()
	for _, a := range honest {
		res.kindOf[a.name] = Honest
		if a.token != "" {
			res.accounts[Honest]++
		}
	}
	res.actors[Honest] = len(honest)
	for _, b := range bots {
		res.actors[b.spec.Kind]++
		for _, a := range b.accounts {
			res.kindOf[a.name] = a.kind
			if a.token != "" {
				res.accounts[b.spec.Kind]++
			}
		}
	}
	return res, nil
}

func (r *runner) outcome(o string) {
	r.mu.Lock()
	r.outcomes[o]++
	r.mu.Unlock()
}

// arrivals returns each honest user's start offset after the sale starts,
// fixed by the seed: all_at_once, linear (evenly over Over), uniform
// (independent uniform draws over Over) or poisson (Rate users/s).
func arrivals(h HonestSpec, n int, seed uint64) []time.Duration {
	rng := mrand.New(mrand.NewPCG(seed, 0x686f6e657374)) // "honest"
	out := make([]time.Duration, n)
	switch h.Arrival {
	case "linear":
		for i := range out {
			out[i] = time.Duration(float64(h.Over) * float64(i) / float64(max(n, 1)))
		}
	case "uniform":
		for i := range out {
			out[i] = time.Duration(rng.Float64() * float64(h.Over))
		}
	case "poisson":
		t := 0.0
		for i := range out {
			t += -math.Log(1-rng.Float64()) / h.Rate
			out[i] = time.Duration(t * float64(time.Second))
		}
	}
	return out
}

// retrying sends a request until it gets a final answer: it waits
// Retry-After on 429 and 503, a moment on 409 not_live and on transport
// errors, and gives up when ctx ends (the reply has err set then).
func (r *runner) retrying(ctx context.Context, a *actor, route, method, path string, body any) reply {
	return r.retryingWith(ctx, a, route, method, path, body, func(errs int) time.Duration {
		return time.Duration(errs) * 100 * time.Millisecond
	})
}

// retryingWith is retrying with the wait after the errs-th transport
// failure in a row given by backoff; it gives up after 20.
func (r *runner) retryingWith(ctx context.Context, a *actor, route, method, path string, body any, backoff func(errs int) time.Duration) reply {
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
			sleep(ctx, backoff(errs))
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
	if r.draw != nil {
		return r.playDrawHonest(ctx, a) // draw.go
	}
	return r.playStorefront(ctx, a, r.sc.Honest.MaxAttempts, nil)
}

// playStorefront does what the storefront does (challenge, answer, path,
// buy, poll), at most attempts times; solve reads captchas (nil: a captcha
// ends the attempt as "captcha_unsolved").
func (r *runner) playStorefront(ctx context.Context, a *actor, attempts int, solve CaptchaSolver) string {
	for range attempts {
		if r.sc.Queue != nil && !a.admitted(r.itemURL) { // a waiting room: wait for the turn (queue.go)
			if out := r.waitTurn(ctx, a); out != "" {
				return out
			}
		}
		ch := r.retrying(ctx, a, "challenge", "POST", r.itemURL+"/challenge", nil)
		switch {
		case ch.err != nil:
			return "stopped"
		case ch.status == 200:
		case ch.code() == "already_bought":
			return r.poll(ctx, a)
		case ch.code() == "sold_out":
			return "sold_out"
		case ch.code() == "not_eligible":
			r.refuse(a, ch.code())
			return "not_eligible"
		default:
			continue
		}
		ans, ok := r.answer(ctx, ch, solve)
		if !ok {
			if solve == nil {
				return "captcha_unsolved"
			}
			continue
		}
		p := r.retrying(ctx, a, "path", "POST", r.itemURL+"/path", map[string]any{"challenge_id": ch.str("challenge_id"), "answer": ans})
		switch {
		case p.err != nil:
			return "stopped"
		case p.status == 200:
		case p.code() == "sold_out":
			return "sold_out"
		case p.code() == "not_eligible":
			r.refuse(a, p.code())
			return "not_eligible"
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
		case b.code() == "not_eligible":
			r.refuse(a, b.code())
			return "not_eligible"
		}
	}
	return "gave_up"
}

// answer solves a challenge answer: a proof of work is solved; a captcha
// is read by solve (ok false when there is none or it cannot read it).
func (r *runner) answer(ctx context.Context, ch reply, solve CaptchaSolver) (string, bool) {
	if ch.str("kind") == "pow" || ch.str("kind") == "none" {
		return apiclient.Solve(apiclient.Challenge{Kind: "pow", Seed: ch.str("seed"), Difficulty: int(ch.num("difficulty"))}), true
	}
	if solve == nil {
		return "", false
	}
	img, err := dataURLBytes(ch.str("image"))
	if err != nil {
		r.note("a captcha image could not be decoded: %v", err)
		return "", false
	}
	ans, ok, err := solve(ctx, img)
	if err != nil {
		r.note("the captcha solver failed: %v", err)
		return "", false
	}
	return ans, ok
}

// dataURLBytes decodes a data:...;base64, URL.
func dataURLBytes(u string) ([]byte, error) {
	_, b64, ok := strings.Cut(u, ";base64,")
	if !ok {
		return nil, fmt.Errorf("not a base64 data URL")
	}
	return base64.StdEncoding.DecodeString(b64)
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
	// A waiting room (queue sale): its length, the admissions since it
	// began and this edge's load factor, from the item's stats.
	Waiting       int64   `json:"waiting,omitempty"`
	AdmittedTotal int64   `json:"admitted_total,omitempty"`
	LoadFactor    float64 `json:"load_factor,omitempty"`
	// Load1 is the machine's 1-minute load average and CPU the CPU
	// seconds used so far by each process of Config.WatchPIDs (Linux
	// /proc; queue_measure.go).
	Load1 float64            `json:"load1,omitempty"`
	CPU   map[string]float64 `json:"cpu_s,omitempty"`
}

func (r *runner) sample(ctx context.Context, start time.Time) (Stats, error) {
	asked := time.Since(start)
	st, err := r.c.api.Stats(ctx, r.item)
	if err != nil {
		return st, err
	}
	if st.StockLeft <= 0 {
		r.soldOut.Store(true)
	}
	// At: the middle of the request (the counters were read in it; a slow
	// answer must not shift them by its whole latency).
	smp := Sample{At: asked + (time.Since(start)-asked)/2, StockLeft: st.StockLeft, Reserved: st.Reserved, Orders: st.Orders, OutboxPending: st.OutboxPending}
	if q := st.Queue; q != nil {
		smp.Waiting, smp.AdmittedTotal, smp.LoadFactor = q.Waiting, q.AdmittedTotal, q.LoadFactor
	}
	smp.Load1, smp.CPU = r.p.watch.read()
	r.mu.Lock()
	r.samples = append(r.samples, smp)
	r.mu.Unlock()
	return st, nil
}

func (r *runner) pollStock(ctx context.Context, start time.Time) {
	every := 250 * time.Millisecond
	if r.sc.Queue != nil { // a waiting room's stats count its admitted users one by one in Redis
		every = time.Second
	}
	t := time.NewTicker(every)
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
	Settled  bool   `json:"settled"`
	SettleIn string `json:"settle_in"`
	Final    Stats  `json:"final"`
	Accepted int64  `json:"accepted"` // 202s on buy seen by the lab
	// Unanswered: buys without an answer that says whether a unit was
	// taken (a transport error or timeout in the lab's client, or a 5xx):
	// each may or may not have reserved one.
	Unanswered int64   `json:"unanswered"`
	Checks     []Check `json:"checks"`
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
		switch {
		case x.Route != "buy":
		case x.Status == 202:
			inv.Accepted++
		case x.Status == 0 || x.Status >= 500:
			inv.Unanswered++
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
	inv.Checks = append(inv.Checks, acceptedCheck(inv.Accepted, inv.Unanswered, st.Reserved))
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

// acceptedCheck compares the buys the lab saw accepted with the units
// reserved. Every 202 is a reservation; a buy the lab got no answer to may
// be one too (the client gave up, not the system), and nothing else is.
func acceptedCheck(accepted, unanswered, reserved int64) Check {
	if unanswered == 0 {
		return Check{Name: "accepted == reserved", OK: accepted == reserved,
			Detail: fmt.Sprintf("202s seen by the lab=%d reserved=%d", accepted, reserved)}
	}
	return Check{Name: "accepted <= reserved <= accepted + unanswered", OK: accepted <= reserved && reserved <= accepted+unanswered,
		Detail: fmt.Sprintf("202s seen by the lab=%d reserved=%d buys without an answer=%d", accepted, reserved, unanswered)}
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
