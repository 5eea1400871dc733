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
	for i := range sc.Honest.Users {
		a := &actor{kind: Honest, name: fmt.Sprintf("lab%s-h%d", p.runID, i)}
		if sc.XFF {
			a.ip = ips[i]
		}
		pop.honest = append(pop.honest, a)
		if i >= sc.Honest.Register {
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
		out := reg.registerAll(ctx, pop.honest[:n])
		for _, o := range out {
			pop.honestReg[o]++
		}
	}
	pop.madeAt = time.Now()
	p.logf("%d accounts of long standing (%d honest, %d of bots) and %d honest registrations in %s", len(names),
		sc.Honest.Users-sc.Honest.Register, len(names)-(sc.Honest.Users-sc.Honest.Register), sc.Honest.Register, time.Since(began).Round(time.Millisecond))
	return pop, nil
}

// registrar registers accounts through the public route: the registration
// challenge (POST /api/register/challenge, solved: a proof of work, or a
// captcha read by Config.SolveCaptcha), POST /api/register, then POST
// /api/login for a session. An edge without the challenge route (404) is
// asked without one.
type registrar struct {
	p *play
	c *client
}

// regConcurrency bounds the registrations in flight (each costs the
// backend a password hash).
const regConcurrency = 8

// registerAll registers the actors (setting their tokens) and returns each
// one's outcome: "201", or the refusal ("429 <code>", "400 challenge_failed").
func (g registrar) registerAll(ctx context.Context, actors []*actor) []string {
	out := make([]string, len(actors))
	sem := make(chan struct{}, regConcurrency)
	var wg sync.WaitGroup
	for i, a := range actors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				out[i] = "stopped"
				return
			}
			defer func() { <-sem }()
			out[i] = g.register(ctx, a)
		}()
	}
	wg.Wait()
	return out
}

// labPassword is every lab account's password (the lab never logs in as a
// user it did not register).
const labPassword = "lab-password-0123"

func (g registrar) register(ctx context.Context, a *actor) string {
	body := map[string]any{"username": a.name, "password": labPassword}
	for attempt := 0; ; attempt++ {
		ch := g.c.do(ctx, a, "register_challenge", "POST", "/api/register/challenge", nil)
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
		rep := g.c.do(ctx, a, "register", "POST", "/api/register", body)
		switch {
		case rep.err != nil:
			return "error"
		case rep.status == http.StatusCreated:
		case rep.code() == "challenge_failed" && attempt < 3:
			continue
		case transient(rep) && attempt < 10:
			sleep(ctx, rep.retryAfter())
			continue
		default:
			return outcomeOf(rep)
		}
		for range 10 {
			in := g.c.do(ctx, a, "login", "POST", "/api/login", map[string]any{"username": a.name, "password": labPassword})
			switch {
			case in.err != nil:
				return "error"
			case in.status == 200 && in.str("token") != "":
				a.token = in.str("token")
				return "201"
			case transient(in):
				sleep(ctx, in.retryAfter())
			default:
				return "login " + outcomeOf(in)
			}
		}
		return "login 429"
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
func (r *runner) registerFarm(ctx context.Context, b *bot) {
	began := time.Now()
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
	r.logf("account_farm %d: %d of %d accounts registered from %d networks in %s (%s before the start)", b.index, ok, len(b.accounts),
		b.spec.Networks, time.Since(began).Round(time.Millisecond), time.Until(r.startAt).Round(time.Millisecond))
}
