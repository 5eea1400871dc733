package lab

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// population is the run's accounts that outlive one sale: the honest
// users and the accounts of every bot but the farms (which register fresh
// accounts for each sale).
type population struct {
	honest []*actor
	tokens map[string]string // bot accounts by name
	madeAt time.Time         // when the last of these accounts was made
	// Registration of the honest users who register through the route.
	honestReg map[string]int // outcome ("201", "429 ...") -> users
}

// addressPlan gives honest users their (shared) addresses: the groups of
// the scenario first (carrier NAT, offices: PerIP users behind one address,
// IPsPerNetwork addresses in one /24), then one address each, 254 to a /24.
func (p *play) addressPlan() []string {
	h := p.sc.Honest
	out := make([]string, 0, h.Users)
	net := 0 // /24s used so far
	ipOf := func(n, host int) string {
		v := (p.honestBase<<8 + n) % (1 << 16) // 10.a.b.host, a run-random base
		return fmt.Sprintf("10.%d.%d.%d", v>>8, v&255, host)
	}
	for _, g := range h.Addresses {
		addrs := (g.Users + g.PerIP - 1) / g.PerIP
		for i := range g.Users {
			a := i / g.PerIP
			out = append(out, ipOf(net+a/g.IPsPerNetwork, 1+a%g.IPsPerNetwork))
		}
		net += (addrs + g.IPsPerNetwork - 1) / g.IPsPerNetwork
	}
	for i := 0; len(out) < h.Users; i++ {
		out = append(out, ipOf(net+i/254, 1+i%254))
	}
	return out
}

// farmAddresses gives a farm's accounts their addresses for one sale:
// Networks fresh /24s of 100.64.0.0/10, PerIP accounts per address, the
// accounts spread evenly over the networks.
func (p *play) farmAddresses(spec BotSpec) []string {
	p.farmNext += spec.Networks
	first := p.farmBase + p.farmNext - spec.Networks
	out := make([]string, spec.Accounts)
	for i := range out {
		n, k := i%spec.Networks, i/spec.Networks // account k of network n
		v := (first + n) % (1 << 14)             // /24 number inside 100.64.0.0/10
		out[i] = fmt.Sprintf("100.%d.%d.%d", 64+v>>8, v&255, 1+k/spec.PerIP)
	}
	return out
}

// population makes the honest users' and the bots' accounts: the first
// Honest.Register honest users register through the public route, the
// others and the bots get sessions from POST /admin/sessions (accounts of
// long standing).
func (p *play) population(ctx context.Context) (*population, error) {
	sc := p.sc
	pop := &population{tokens: map[string]string{}, honestReg: map[string]int{}}
	var ips []string
	if sc.XFF {
		ips = p.addressPlan()
	}
	var names []string
	var registering []*actor
	regs := registrants(sc.Honest.Users, sc.Honest.Register)
	for i := range sc.Honest.Users {
		a := &actor{kind: Honest, name: fmt.Sprintf("lab%s-h%d", p.runID, i)}
		if sc.XFF {
			a.ip = ips[i]
		}
		pop.honest = append(pop.honest, a)
		if regs[i] {
			registering = append(registering, a)
		} else {
			names = append(names, a.name)
		}
	}
	probe := &runner{p: p, pop: pop}
	for _, b := range probe.makeBots(false) {
		for _, a := range b.accounts {
			names = append(names, a.name)
		}
	}
	began := time.Now()
	if len(names) > 0 {
		tokens, err := p.api.Sessions(ctx, names)
		if err != nil {
			return nil, fmt.Errorf("sessions: %w", err)
		}
		for _, n := range names {
			if tokens[n] == "" {
				return nil, fmt.Errorf("sessions: no token for %s", n)
			}
		}
		for _, a := range pop.honest {
			a.token = tokens[a.name]
		}
		pop.tokens = tokens
	}
	if n := sc.Honest.Register; n > 0 {
		rec := &client{api: p.api, rec: &recorder{start: time.Now()}}
		reg := registrar{p: p, c: rec}
		out := reg.registerAll(ctx, registering)
		for _, o := range out {
			pop.honestReg[o]++
		}
	}
	pop.madeAt = time.Now()
	p.logf("%d accounts of long standing (%d honest, %d of bots) and %d honest registrations in %s", len(names),
		sc.Honest.Users-sc.Honest.Register, len(names)-(sc.Honest.Users-sc.Honest.Register), sc.Honest.Register, time.Since(began).Round(time.Millisecond))
	return pop, nil
}

// registrants picks the n honest users (of users) who register through the
// route: spread evenly over the population, so over its address groups.
func registrants(users, n int) map[int]bool {
	out := map[int]bool{}
	for j := range n {
		out[j*users/n] = true
	}
	return out
}

// registrar registers accounts through the public route: the registration
// challenge (POST /api/register/challenge, solved: a proof of work, or a
// captcha read by Config.SolveCaptcha), then POST /api/register. An edge
// without the challenge route (404, 405) is asked without one. Sessions
// come from POST /admin/sessions (see registerAll).
type registrar struct {
	p   *play
	c   *client
	sem chan struct{} // requests in flight (waits for Retry-After hold none)
}

// regConcurrency bounds the registration requests in flight: each
// registration costs the backend a password hash, and the backend hashes
// one at a time on two cores with a queue of two (503 overloaded beyond,
// and each retry spends a token of the per-address registration bucket).
const regConcurrency = 2

// registerAll registers the actors (setting their tokens) and returns each
// one's outcome: "201", or the refusal ("429 <code>", "400 challenge_failed").
func (g registrar) registerAll(ctx context.Context, actors []*actor) []string {
	out := make([]string, len(actors))
	g.sem = make(chan struct{}, regConcurrency)
	// At most 4 registrations under way per concurrent request: the others
	// queue in order, so the accounts of one address go one after another.
	work := make(chan int)
	var wg sync.WaitGroup
	for range 4 * regConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				out[i] = g.register(ctx, actors[i])
			}
		}()
	}
	for i := range actors {
		work <- i
	}
	close(work)
	wg.Wait()
	// Sessions of the registered accounts from POST /admin/sessions rather
	// than POST /api/login: a login is one more password hash on a shared
	// machine, and no defence of issue 15 sits on it.
	var names []string
	for i, a := range actors {
		if out[i] == "201" {
			names = append(names, a.name)
		}
	}
	if len(names) == 0 {
		return out
	}
	tokens, err := g.p.api.Sessions(ctx, names)
	for i, a := range actors {
		switch {
		case out[i] != "201":
		case err != nil || tokens[a.name] == "":
			out[i] = "no_session"
			g.p.notes.add(fmt.Sprintf("sessions of registered accounts: %v", err))
		default:
			a.token = tokens[a.name]
		}
	}
	return out
}

// labPassword is every registered lab account's password.
const labPassword = "lab-password-0123"

// do sends one request holding a slot of the semaphore.
func (g registrar) do(ctx context.Context, a *actor, route, path string, body any) reply {
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return reply{err: ctx.Err()}
	}
	defer func() { <-g.sem }()
	return g.c.do(ctx, a, route, "POST", path, body)
}

func (g registrar) register(ctx context.Context, a *actor) string {
	body := map[string]any{"username": a.name, "password": labPassword}
	for attempt := 0; ; attempt++ {
		ch := g.do(ctx, a, "register_challenge", "/api/register/challenge", nil)
		switch {
		case ch.err != nil:
			return "error"
		case ch.status == http.StatusNotFound || ch.status == http.StatusMethodNotAllowed:
			// An edge from before registration challenges.
		case ch.status == 200:
			var r runner
			r.p = g.p
			ans, ok := r.answer(ctx, ch, g.p.cfg.SolveCaptcha)
			if !ok {
				if attempt < 5 && g.p.cfg.SolveCaptcha != nil {
					continue
				}
				return "captcha_unsolved"
			}
			body["challenge_id"], body["answer"] = ch.str("challenge_id"), ans
		case transient(ch) && attempt < 10:
			sleep(ctx, ch.retryAfter())
			continue
		default:
			return outcomeOf(ch)
		}
		// As the storefront does (register.js): a 429 or 503 with a short
		// Retry-After is waited out, then tried again with a new
		// challenge (the answered one may have expired during the wait or
		// been burned); a refused challenge is replaced at once.
		rep := g.do(ctx, a, "register", "/api/register", body)
		switch {
		case rep.err != nil:
			return "error"
		case rep.status == http.StatusCreated:
		case rep.code() == "username_taken" && attempt > 0:
			// An earlier attempt went through though its answer was lost.
		case transient(rep) && attempt < 10:
			sleep(ctx, rep.retryAfter())
			continue
		case rep.code() == "challenge_failed" && attempt < 10:
			continue
		default:
			return outcomeOf(rep)
		}
		return "201"
	}
}

// transient: a 503, or a 429 of a token bucket that refills within
// seconds (a per-network account budget answers with a Retry-After of
// hours: that is a refusal).
func transient(r reply) bool {
	if r.status == http.StatusServiceUnavailable {
		return true
	}
	if r.status != http.StatusTooManyRequests {
		return false
	}
	ra := r.header.Get("Retry-After")
	var n int
	if _, err := fmt.Sscan(ra, &n); err == nil && n > 10 {
		return false
	}
	return true
}

func outcomeOf(r reply) string {
	if r.code() == "" {
		return fmt.Sprint(r.status)
	}
	return fmt.Sprintf("%d %s", r.status, r.code())
}

// registerFarm registers the farm's accounts for this sale from its
// networks; accounts the edge refused stay without a token (they do not
// take part).
func (r *runner) registerFarm(ctx context.Context, b *bot, plannedStart time.Time) {
	began := time.Now()
	b.regBegan = began
	out := registrar{p: r.p, c: r.c}.registerAll(ctx, b.accounts)
	ok := 0
	r.mu.Lock()
	for _, o := range out {
		r.farmReg[o]++
		if o == "201" {
			ok++
		}
	}
	r.mu.Unlock()
	b.registered = time.Now()
	r.logf("account_farm %d: %d of %d accounts registered from %d networks in %s (%s before the planned start)", b.index, ok, len(b.accounts),
		b.spec.Networks, time.Since(began).Round(time.Millisecond), time.Until(plannedStart).Round(time.Millisecond))
}
