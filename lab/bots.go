package lab

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"seckill/captcha/pow"

	"golang.org/x/time/rate"
)

// bot is one bot: its profile and its accounts (the first is its own; a
// challenge_replayer has a donor, a path_sharer its K receivers).
type bot struct {
	spec     BotSpec
	index    int
	accounts []*actor
	lim      *rate.Limiter
	// regBegan, registered (farms): when its accounts' registration began
	// and ended; zero until then.
	regBegan, registered time.Time
}

// makeBots makes the bots and their accounts: the same names in every sale
// (their tokens come from the population), but for the farms, which get
// fresh accounts and addresses for each sale (withFarms; no token until
// registered).
func (r *runner) makeBots(withFarms bool) []*bot {
	var out []*bot
	n := 0
	for _, spec := range r.p.sc.Bots {
		for i := range spec.Count {
			n++
			if spec.Kind == AccountFarm {
				if !withFarms {
					continue
				}
				key := fmt.Sprint(n)
				f := r.p.farms[key]
				if f == nil || spec.FreshAccounts {
					f = r.makeFarm(spec, i)
					r.p.farms[key] = f
				}
				out = append(out, f)
				continue
			}
			b := &bot{spec: spec, index: i, lim: rate.NewLimiter(rate.Limit(spec.Rate), 1)}
			ip := ""
			if r.p.sc.XFF {
				ip = fmt.Sprintf("198.18.%d.%d", (n>>8)&255, n&255)
			}
			if spec.Kind == OneIPFlood {
				ip = "" // the lab's own address, or one shared address
				if r.p.sc.XFF {
					ip = "198.51.100.7"
				}
			}
			acct := func(suffix string) *actor {
				name := fmt.Sprintf("lab%s-%s%d-%s", r.p.runID, shortKind[spec.Kind], i, suffix)
				return &actor{kind: spec.Kind, name: name, ip: ip, token: r.pop.tokens[name]}
			}
			b.accounts = append(b.accounts, acct(""))
			switch spec.Kind {
			case ChallengeReplayer:
				b.accounts = append(b.accounts, acct("d"))
			case OneIPFlood, ManyIPFlood:
				for k := 1; k < spec.Accounts; k++ {
					b.accounts = append(b.accounts, acct(fmt.Sprintf("a%d", k)))
				}
			case PathSharer:
				for k := range spec.ShareWith {
					b.accounts = append(b.accounts, acct(fmt.Sprintf("r%d", k)))
				}
			}
			out = append(out, b)
		}
	}
	return out
}

// makeFarm makes farm i's accounts for this sale, with their addresses.
func (r *runner) makeFarm(spec BotSpec, i int) *bot {
	b := &bot{spec: spec, index: i, lim: rate.NewLimiter(rate.Inf, 1)}
	var ips []string
	if r.p.sc.XFF {
		ips = r.p.farmAddresses(spec)
	}
	for k := range spec.Accounts {
		a := &actor{kind: AccountFarm, name: fmt.Sprintf("lab%s-af%d-%d-%d", r.p.runID, r.seed, i, k)}
		if ips != nil {
			a.ip = ips[k]
		}
		b.accounts = append(b.accounts, a)
	}
	return b
}

// shortKind keeps usernames within 32 characters.
var shortKind = map[string]string{SkipChallenge: "sc", PathGuesser: "pg", ChallengeReplayer: "cr", OneIPFlood: "f1",
	ManyIPFlood: "fn", RepeatClicker: "rc", SoldOutHammerer: "so", SlowClient: "sl", PathSharer: "ps",
	AccountFarm: "af", EarlyArrival: "ea", OCRBot: "oc"}

// wait takes a token of the bot's rate; false when ctx ended.
func (b *bot) wait(ctx context.Context) bool { return b.lim.Wait(ctx) == nil }

func randomIP() string {
	for {
		a := 11 + mrand.IntN(212)
		if a != 127 && a != 100 && a != 10 && a != 172 && a != 192 {
			return fmt.Sprintf("%d.%d.%d.%d", a, mrand.IntN(256), mrand.IntN(256), 1+mrand.IntN(254))
		}
	}
}

// solvedPath gets a path the honest way, each request at the bot's rate;
// ok false when the sale refused it (the reply says why) or ctx ended.
func (r *runner) solvedPath(ctx context.Context, b *bot, a *actor) (path string, expires time.Time, ok bool) {
	if !b.wait(ctx) {
		return "", time.Time{}, false
	}
	ch := r.c.do(ctx, a, "challenge", "POST", r.itemURL+"/challenge", nil)
	if ch.status != 200 {
		return "", time.Time{}, false
	}
	ans := "0"
	if ch.str("kind") == "pow" {
		ans = pow.Solve(ch.str("seed"), int(ch.num("difficulty")))
	}
	if !b.wait(ctx) {
		return "", time.Time{}, false
	}
	p := r.c.do(ctx, a, "path", "POST", r.itemURL+"/path", map[string]any{"challenge_id": ch.str("challenge_id"), "answer": ans})
	if p.status != 200 {
		return "", time.Time{}, false
	}
	exp, _ := time.Parse(time.RFC3339Nano, p.str("expires_at"))
	return p.str("path"), exp, true
}

func (r *runner) buy(ctx context.Context, a *actor, ip, path string) reply {
	url := r.itemURL + "/buy/" + path
	if path == "" {
		url = r.itemURL + "/buy"
	}
	rep := r.c.doIP(ctx, a, ip, "buy", "POST", url, nil)
	if rep.status == 202 {
		r.win(a)
	}
	return rep
}

// playBot runs one bot until ctx ends.
func (r *runner) playBot(ctx context.Context, b *bot) {
	if r.draw != nil {
		r.playDrawBot(ctx, b) // draw.go
		return
	}
	me := b.accounts[0]
	switch b.spec.Kind {
	case AccountFarm:
		var wg sync.WaitGroup
		for _, a := range b.accounts {
			if a.token == "" { // refused at registration
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); r.playFast(ctx, a) }()
		}
		wg.Wait()
	case EarlyArrival:
		for _, open := range r.windowOpens() {
			if !sleep(ctx, time.Until(open)) {
				return
			}
			r.playFast(ctx, me)
		}
	case OCRBot:
		r.playStorefront(ctx, me, 50, r.cfg.SolveCaptcha)
	case SkipChallenge:
		made := []string{"", "0", "00000000000000000000000000000000", "free", "../../buy"}
		for i := 0; b.wait(ctx); i++ {
			r.buy(ctx, me, me.ip, made[i%len(made)])
		}
	case PathGuesser:
		for b.wait(ctx) {
			r.buy(ctx, me, me.ip, randomPath())
		}
	case ChallengeReplayer:
		// The donor's solved challenge is captured and replayed by the
		// bot, again and again; any path it gets is used to buy.
		donor := b.accounts[1]
		var id, ans string
		for id == "" {
			if !b.wait(ctx) {
				return
			}
			ch := r.c.do(ctx, donor, "challenge", "POST", r.itemURL+"/challenge", nil)
			if ch.status == 200 {
				id, ans = ch.str("challenge_id"), "0"
				if ch.str("kind") == "pow" {
					ans = pow.Solve(ch.str("seed"), int(ch.num("difficulty")))
				}
			}
		}
		for b.wait(ctx) {
			p := r.c.do(ctx, me, "path", "POST", r.itemURL+"/path", map[string]any{"challenge_id": id, "answer": ans})
			if p.status == 200 && b.wait(ctx) {
				r.buy(ctx, me, me.ip, p.str("path"))
			}
		}
	case OneIPFlood, ManyIPFlood:
		ipFor := func() string { return me.ip }
		if b.spec.Kind == ManyIPFlood {
			ipFor = randomIP
		}
		for i := 0; b.wait(ctx); i++ {
			a := b.accounts[(i/2)%len(b.accounts)]
			if i%2 == 0 {
				r.c.doIP(ctx, a, ipFor(), "challenge", "POST", r.itemURL+"/challenge", nil)
			} else {
				r.buy(ctx, a, ipFor(), randomPath())
			}
		}
	case RepeatClicker:
		for ctx.Err() == nil {
			if p, _, ok := r.solvedPath(ctx, b, me); ok && b.wait(ctx) {
				r.buy(ctx, me, me.ip, p)
			}
		}
	case SoldOutHammerer:
		for !r.soldOut.Load() {
			if !sleep(ctx, 100*time.Millisecond) {
				return
			}
		}
		for ctx.Err() == nil {
			if p, _, ok := r.solvedPath(ctx, b, me); ok && b.wait(ctx) {
				r.buy(ctx, me, me.ip, p)
			} else if b.wait(ctx) {
				r.buy(ctx, me, me.ip, randomPath())
			}
		}
	case SlowClient:
		var p string
		var exp time.Time
		for {
			var ok bool
			if p, exp, ok = r.solvedPath(ctx, b, me); ok {
				break
			}
			if ctx.Err() != nil || r.soldOut.Load() {
				return
			}
		}
		wait := time.Until(exp) + b.spec.WaitPastExpiry
		if exp.IsZero() || wait > b.spec.MaxWait {
			r.note("slow_client: the path lives %s, longer than max_wait %s: the bot did not buy (raise the slow_client's max_wait in the scenario above the path's lifetime, or shorten the path lifetime: seckill edge --path-ttl; seckill dev keeps 60 s)", time.Until(exp).Round(time.Second), b.spec.MaxWait)
			return
		}
		if dl, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(dl) {
			r.note("slow_client: the run ends before the path expires (%s from now): the bot did not buy (a longer duration in the scenario, or a shorter path lifetime: seckill edge --path-ttl; seckill dev keeps 60 s)", wait.Round(time.Second))
			return
		}
		if sleep(ctx, wait) {
			r.buy(ctx, me, me.ip, p)
		}
	case PathSharer:
		rx := b.accounts[1:]
		done := make([]bool, len(rx))
		left := len(rx)
		for left > 0 && ctx.Err() == nil {
			p, _, ok := r.solvedPath(ctx, b, me)
			if !ok {
				continue
			}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for k, a := range rx {
				if done[k] {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					rep := r.buy(ctx, a, a.ip, p)
					if rep.status == 202 || rep.code() == "already_bought" || rep.code() == "sold_out" {
						mu.Lock()
						done[k] = true
						left--
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
		}
	}
}

// windowOpens lists the instants an early-arrival bot acts at: the sale's
// start (a waiting room's or a draw's opening joins this list when the lab
// plays those modes).
func (r *runner) windowOpens() []time.Time {
	return []time.Time{r.startAt}
}

// playFast plays the sale as fast as a bot can: the first challenge at
// once (again every millisecond while the sale is not live yet, for at
// most two seconds), no pause between steps, Retry-After honoured but at
// most a second, until it wins, the sale sells out, it is refused as not
// eligible, or ctx ends.
func (r *runner) playFast(ctx context.Context, a *actor) {
	began := time.Now()
	step := func(route, path string, body any) reply {
		for {
			rep := r.c.do(ctx, a, route, "POST", path, body)
			switch {
			case ctx.Err() != nil || rep.err != nil:
				return rep
			case rep.status == 409 && rep.code() == "not_live" && time.Since(began) < 2*time.Second:
				sleep(ctx, time.Millisecond)
			case rep.status == 429 || rep.status == 503:
				sleep(ctx, min(rep.retryAfter(), time.Second))
			default:
				return rep
			}
		}
	}
	for ctx.Err() == nil && !r.soldOut.Load() {
		if r.sc.Queue != nil && !a.admitted(r.itemURL) { // a waiting room: wait for the turn (queue.go)
			if out := r.waitTurn(ctx, a); out != "" {
				return
			}
		}
		ch := step("challenge", r.itemURL+"/challenge", nil)
		switch {
		case ch.err != nil:
			return
		case ch.status == 200:
		case ch.code() == "not_eligible":
			r.refuse(a, ch.code())
			return
		case ch.code() == "already_bought", ch.code() == "sold_out", ch.code() == "not_live":
			return
		default:
			continue
		}
		ans, ok := r.answer(ctx, ch, r.cfg.SolveCaptcha)
		if !ok {
			return
		}
		p := step("path", r.itemURL+"/path", map[string]any{"challenge_id": ch.str("challenge_id"), "answer": ans})
		switch {
		case p.err != nil:
			return
		case p.status == 200:
		case p.code() == "not_eligible":
			r.refuse(a, p.code())
			return
		case p.code() == "sold_out":
			return
		default:
			continue
		}
		b := step("buy", r.itemURL+"/buy/"+p.str("path"), nil)
		if b.status == 202 {
			r.win(a)
			return
		}
		switch b.code() {
		case "already_bought", "sold_out":
			return
		case "not_eligible":
			r.refuse(a, b.code())
			return
		}
	}
}
