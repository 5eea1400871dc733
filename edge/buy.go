package edge

import (
	"context"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"seckill"
)

// purchase is one POST /api/items/{id}/buy/{path} on its way through the
// checks.
type purchase struct {
	ctx  context.Context
	ses  Session // who buys: the account's eligibility claims ride with the reservation
	user int64
	item int64
	path string
	def  Defences // the sale's teaching switches
}

// buy is the purchase: the checks of ARCHITECTURE.md ("The path of one
// purchase"), cheapest first, then the backend. Every refusal is counted
// by its code (countRefusals).
func (e *Edge) buy(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, classBuy, id, true) // client IP, token buckets (429), session (401)
	if err != nil {
		return err
	}
	if err := e.checkAdmitted(c, id, ses.UserID); err != nil { // waiting room: 409 not_admitted (no Redis)
		return err
	}
	p := &purchase{ctx: c.Request().Context(), ses: ses, user: ses.UserID, item: id, path: c.Param("path"), def: e.defences.get(id)}
	if err := e.checkSale(p); err != nil { // known item, sale window (404, 409), sold-out marker (410), eligibility (409), hidden path (403)
		return err
	}
	if err := e.checkRepeatBuyer(p); err != nil { // 409 already_bought
		return err
	}
	res, err := e.reserve(p) // load shedding (503 overloaded), breaker (503 backend_unavailable), backend
	if err != nil {
		return e.refused(p, err)
	}
	return e.accepted(c, p, res)
}

// checkSale refuses a purchase of an item that is not on sale by the
// catalogue copy (unknown 404, not live 409), that is sold out (410), that
// the account may not take part in (409 not_eligible, from the session
// alone), or that does not come on a valid hidden path (403).
func (e *Edge) checkSale(p *purchase) error {
	it, err := e.catalog.Item(p.ctx, p.item)
	if err != nil {
		return unavailable(err) // no copy of the catalogue yet: 503, never 500
	}
	if it.State == seckill.StateSoldOut {
		return e.checkSoldOutRetry(p)
	}
	if err := checkLive(it); err != nil {
		return err
	}
	if err := e.checkEligible(p.ses, it.Item); err != nil {
		return err
	}
	return e.checkPath(p)
}

// checkSoldOutRetry answers 410 from the sold-out marker, unless this
// path's earlier purchase attempt got no final answer (a 503 or a timeout:
// the reservation may have run in Redis, its reply lost). Such a retry
// goes to the backend, which answers a repeated request id with its first
// answer (202, the same order ref) or 410. Answering 410 here would tell a
// buyer who holds a unit that they have none (the fault matrix's
// redis-kill row found it). A path never used for a buy is not forwarded,
// so the crowd holding paths at the sell-out costs one Redis read each and
// no backend call. With the path binding or single-use defence switched
// off (teaching) a path is not one attempt's name, so nothing is
// forwarded.
func (e *Edge) checkSoldOutRetry(p *purchase) error {
	soldOut := seckill.Errorf(seckill.ESoldOut, "sold out")
	if !p.def.PathBinding || !p.def.SingleUse {
		return soldOut
	}
	if attempted, err := e.paths.attempted(p.ctx, p.user, p.item, p.path); err != nil || !attempted {
		return soldOut
	}
	return nil
}

// checkPath refuses a path that is not this user's for this item (403
// bad_path), and marks it attempted. With the path binding switched off
// (teaching) a shared path of the item passes.
func (e *Edge) checkPath(p *purchase) error {
	err := e.paths.checkAttempt(p.ctx, p.user, p.item, p.path)
	if err != nil && (p.def.PathBinding || e.paths.checkShared(p.ctx, p.item, p.path) != nil) {
		return err
	}
	return nil
}

// checkRepeatBuyer refuses a user who surely holds a unit already (409
// already_bought naming the order): a Bloom filter of accepted pairs, each
// positive confirmed in Redis. The path is used up.
func (e *Edge) checkRepeatBuyer(p *purchase) error {
	if !p.def.Bloom {
		return nil
	}
	ref, held, err := e.dedup.holds(p.ctx, p.user, p.item)
	if err != nil {
		return err
	}
	if held {
		e.consumePath(p)
		return seckill.Held(ref, "you already hold a unit of this item")
	}
	return nil
}

// reserve asks the backend for a unit under the guard (load shedding,
// breaker). The path names this purchase attempt: a retry with the same
// path (after a 503 whose answer was lost) is the same request. A shared
// path (binding off) is shared by many users, so it gets their user id
// too.
func (e *Edge) reserve(p *purchase) (seckill.Reservation, error) {
	reqID := p.path
	if !p.def.PathBinding {
		reqID = p.path[:16] + strconv.FormatInt(p.user, 36)
	}
	return doWith(p.ctx, e.guard(), callReserve, p.def, func(ctx context.Context) (seckill.Reservation, error) {
		return e.be.Reserve(ctx, p.item, p.ses.Account(), reqID)
	})
}

// accepted answers 202 queued: the user is remembered as a buyer, the
// path used up, and the item marked sold out when this was its last unit.
func (e *Edge) accepted(c echo.Context, p *purchase, res seckill.Reservation) error {
	e.dedup.add(p.user, p.item)
	e.consumePath(p)
	if res.StockLeft <= 0 {
		e.markSoldOut(p.ctx, p.item)
	}
	e.m.accepted.Inc()
	return c.JSON(http.StatusAccepted, map[string]any{"status": "queued", "order_ref": res.OrderRef})
}

// refused learns from the backend's refusal. A final answer uses the path
// up; a 429 or 503 leaves it usable until it expires (the retry is the
// same request).
func (e *Edge) refused(p *purchase, err error) error {
	switch seckill.ErrorCode(err) {
	case seckill.EAlreadyBought: // a *seckill.HeldError: X-Order-Ref names the order
		e.dedup.add(p.user, p.item)
		e.consumePath(p)
	case seckill.ESoldOut:
		e.consumePath(p)
		e.markSoldOut(p.ctx, p.item)
	case seckill.ENotLive, seckill.EUnknownItem, seckill.ENotEligible:
		e.consumePath(p)
	}
	return err
}

// consumePath uses the path up when the single-use defence is on. Not
// cancelled with the request: a client hanging up right after its answer
// must not leave the path usable.
func (e *Edge) consumePath(p *purchase) {
	if !p.def.SingleUse {
		return
	}
	ctx := context.WithoutCancel(p.ctx)
	_ = e.paths.consume(ctx, p.user, p.item, p.path)
	if !p.def.PathBinding {
		_ = e.paths.consumeShared(ctx, p.item, p.path)
	}
}
