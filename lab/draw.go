package lab

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"seckill"
	"seckill/apiclient"
)

// The lab plays draws (allocation draw, issue 17; docs/DRAW.md) with the
// same population as races: the sale's "start" is when entries open; every
// actor enters (honest users on their arrival curve over the entry window,
// bots at its first instant, spinning on 409 not_live), the draw is made
// one second after entries close, and every entrant then asks where it
// stands: a winner buys through the usual purchase path (honest users as
// the storefront does, bots as fast as they can), a waitlisted one asks
// again until it is offered a unit or loses. So a bot's speed buys it
// nothing but an early entry; the verdict says whether that was enough.

// drawTimes are the draw's instants of one sale.
type drawTimes struct {
	open, close, at time.Time
}

// isDraw reports whether the scenario plays draws.
func (s *Scenario) isDraw() bool { return s.Allocation == seckill.AllocationDraw }

// validateDraw checks the draw fields.
func (s *Scenario) validateDraw() error {
	switch {
	case s.Allocation != "" && s.Allocation != seckill.AllocationRace && s.Allocation != seckill.AllocationDraw:
		return fmt.Errorf("allocation %q: the lab plays race or draw", s.Allocation)
	case !s.isDraw():
		if s.EntryWindow != 0 || s.ClaimWindow != 0 || s.Waitlist != 0 {
			return fmt.Errorf("entry_window, claim_window and waitlist need allocation: draw")
		}
		return nil
	case s.EntryWindow <= 0:
		return fmt.Errorf("a draw needs entry_window > 0")
	case s.Honest.Over > s.EntryWindow:
		return fmt.Errorf("honest.over (%s) must fit in entry_window (%s): honest users enter on their arrival", s.Honest.Over, s.EntryWindow)
	case s.Waitlist < 0 || (s.Waitlist > 0 && s.ClaimWindow < time.Second):
		return fmt.Errorf("a waitlist needs a claim_window of at least 1s")
	case s.Duration < s.EntryWindow+time.Second+s.ClaimWindow:
		return fmt.Errorf("duration (%s) must cover entry_window + 1s + claim_window", s.Duration)
	}
	return nil
}

// drawSpec makes spec a draw whose entries open at open: the draw is made
// 1 s after entries close, and the sale (its purchase window) starts then.
func (r *runner) drawSpec(spec *apiclient.ItemSpec, open time.Time) {
	if !r.sc.isDraw() {
		return
	}
	d := &drawTimes{open: open, close: open.Add(r.sc.EntryWindow)}
	d.at = d.close.Add(time.Second)
	r.draw = d
	spec.Allocation = seckill.AllocationDraw
	spec.EntriesOpenAt, spec.EntriesCloseAt, spec.DrawAt = d.open.UTC(), d.close.UTC(), d.at.UTC()
	spec.ClaimWindow, spec.Waitlist = seckill.Duration(r.sc.ClaimWindow), int64(r.sc.Waitlist)
	spec.StartsAt, spec.EndsAt = d.at.UTC(), d.at.Add(r.sc.SaleLength).UTC()
}

// enter enters a in the draw; fast: every millisecond while entries are not
// open (for at most 2 s), Retry-After at most a second. It returns "" when
// entered, else the outcome.
func (r *runner) enter(ctx context.Context, a *actor, fast bool) string {
	began := time.Now()
	for {
		rep := r.c.do(ctx, a, "entry", "POST", r.itemURL+"/entry", nil)
		switch {
		case ctx.Err() != nil:
			return "stopped"
		case rep.err != nil:
			sleep(ctx, 100*time.Millisecond)
		case rep.status == 200 || rep.status == 201:
			return ""
		case rep.status == 409 && rep.code() == "not_live" && time.Now().Before(r.draw.open.Add(2*time.Second)) && time.Since(began) < 5*time.Second:
			if fast {
				sleep(ctx, time.Millisecond)
			} else {
				sleep(ctx, 200*time.Millisecond)
			}
		case rep.status == 429 || rep.status == 503:
			d := rep.retryAfter()
			if fast {
				d = min(d, time.Second)
			}
			sleep(ctx, d)
		case rep.code() == "not_eligible":
			r.refuse(a, rep.code())
			return "not_eligible"
		default:
			return "entry_refused"
		}
	}
}

// claim asks where a stands once the draw is made and plays the purchase
// when it won: honest as the storefront does, else as fast as a bot can.
func (r *runner) claim(ctx context.Context, a *actor, honest bool) string {
	// Honest users look a moment after the draw (as people reload a page);
	// bots at its first instant.
	at := r.draw.at
	if honest {
		h := fnv.New32a()
		h.Write([]byte(a.name))
		at = at.Add(time.Duration(h.Sum32()%2000) * time.Millisecond)
	}
	if !sleep(ctx, time.Until(at)) {
		return "stopped"
	}
	for {
		st := r.retrying(ctx, a, "entry_state", "GET", r.itemURL+"/entry", nil)
		if st.err != nil {
			return "stopped"
		}
		switch st.str("state") {
		case string(seckill.EntryWon):
			from, _ := time.Parse(time.RFC3339Nano, st.str("claim_from"))
			if !sleep(ctx, time.Until(from)) {
				return "stopped"
			}
			if honest {
				return r.playStorefront(ctx, a, r.sc.Honest.MaxAttempts, nil)
			}
			r.playFast(ctx, a)
			return "played"
		case string(seckill.EntryLost):
			return "lost_draw"
		case string(seckill.EntryNone):
			return "no_entry"
		default: // entered (not drawn yet here) or waitlisted
			if !sleep(ctx, time.Second) {
				if st.str("state") == string(seckill.EntryWaitlisted) {
					return "waitlisted"
				}
				return "stopped"
			}
		}
	}
}

// playDrawHonest is an honest user's draw: enter, then claim.
func (r *runner) playDrawHonest(ctx context.Context, a *actor) string {
	if o := r.enter(ctx, a, false); o != "" {
		return o
	}
	return r.claim(ctx, a, true)
}

// playDrawBot plays every account of b: all enter at the first instant of
// the entry window (the bots are started then), then claim at the draw.
func (r *runner) playDrawBot(ctx context.Context, b *bot) {
	var wg sync.WaitGroup
	for _, a := range b.accounts {
		if a.token == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.enter(ctx, a, true) == "" {
				r.claim(ctx, a, false)
			}
		}()
	}
	wg.Wait()
}
