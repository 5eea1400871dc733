package edge

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/sony/gobreaker/v2"

	"seckill"
	"seckill/httpapi"
)

// The waiting room's routes (docs/API.md "Waiting room"):
//
//	POST /api/items/{id}/queue            join (idempotent: one ticket per account)
//	GET  /api/items/{id}/queue            where the ticket stands; the pass once admitted
//	POST /api/items/{id}/queue/challenge  the challenge joining takes (queue_challenge)
//
// Joins are counted in the challenge class's token buckets and polls in
// the status class's.

// PassHeader carries an admission pass (also accepted from the cookie
// seckill_pass_<item id>).
const PassHeader = "X-Admission-Pass"

// PollTokenHeader carries a waiting ticket's poll token (also accepted from
// the cookie seckill_queue_<item id>): with it a poll is answered from the
// edge's view of the queue, without Redis (queue_view.go).
const PollTokenHeader = "X-Queue-Token"

func passCookie(itemID int64) string { return "seckill_pass_" + strconv.FormatInt(itemID, 10) }

func pollTokenCookie(itemID int64) string { return "seckill_queue_" + strconv.FormatInt(itemID, 10) }

// requestToken reads a token from its header, else from its cookie.
func requestToken(c echo.Context, header, cookie string) string {
	if v := c.Request().Header.Get(header); v != "" {
		return v
	}
	if ck, err := c.Cookie(cookie); err == nil {
		return ck.Value
	}
	return ""
}

// queueAnswer is the body of both queue routes.
type queueAnswer struct {
	Ticket        string     `json:"ticket"`
	State         string     `json:"state"`
	Position      int64      `json:"position"`
	Waiting       int64      `json:"waiting"`
	EtaSeconds    int64      `json:"eta_seconds"`
	PollAfter     int64      `json:"poll_after"`
	AdmittedUntil *time.Time `json:"admitted_until,omitempty"`
	Pass          string     `json:"pass,omitempty"`
	PollToken     string     `json:"poll_token,omitempty"`
}

// admissionFactor scales the admission rate by the backend's load: the
// same signal (Edge.pressure) that raises the proof-of-work difficulty and
// comes from the load-shedding guard. Calm: the configured rate; busy:
// half; breaker open: none.
func (e *Edge) admissionFactor() float64 {
	switch e.pressure() {
	case 0:
		return 1
	case 1:
		return 0.5
	}
	return 0
}

// pressure is the one signal of backend load at this edge: 0 calm, 1 busy
// (more than half of the in-flight bound of the load-shedding guard in
// use, or the purchases' breaker half-open), 2 refusing (breaker open).
// The in-flight count is the backend's latency times the purchase rate
// (Little's law), so it rises as soon as the backend slows down. Read by
// the proof-of-work difficulty and the waiting room's admission rate.
func (e *Edge) pressure() int {
	n, max := e.guard().InFlight()
	switch st := e.breakerState(); {
	case st == gobreaker.StateOpen:
		return 2
	case st != gobreaker.StateClosed || n*2 > max:
		return 1
	}
	return 0
}

// queueItem is the item of a waiting-room route: known, and a queue sale
// (409 conflict otherwise).
func (e *Edge) queueItem(ctx context.Context, id int64) (seckill.ItemView, error) {
	it, err := e.catalog.Item(ctx, id)
	if err != nil {
		return it, unavailable(err)
	}
	if it.AllocationMode() != seckill.AllocationQueue {
		return it, seckill.Errorf(seckill.EConflict, "this sale has no waiting room (allocation %s)", it.AllocationMode())
	}
	return it, nil
}

// queueOpen refuses a join before the waiting room opens, after the sale,
// and of a sold-out item.
func (e *Edge) queueOpen(it seckill.ItemView) error {
	now := e.catalog.now()
	switch {
	case now.Before(it.QueueOpens()):
		return seckill.Errorf(seckill.ENotLive, "the waiting room opens at %s", it.QueueOpens().UTC().Format(time.RFC3339))
	case it.State == seckill.StateEnded:
		return seckill.Errorf(seckill.ENotLive, "the sale has ended")
	case it.State == seckill.StateSoldOut:
		return seckill.Errorf(seckill.ESoldOut, "sold out")
	}
	return nil
}

func (e *Edge) joinQueue(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, classChallenge, id, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	it, err := e.queueItem(ctx, id)
	if err != nil {
		return err
	}
	if err := e.queueOpen(it); err != nil {
		return err
	}
	if err := e.checkEligible(ses, it.Item); err != nil { // 409 not_eligible: no ticket for an account that may not buy
		return err
	}
	if it.QueueChallenge && e.defences.get(id).Challenge {
		var req struct {
			ChallengeID string          `json:"challenge_id"`
			Answer      json.RawMessage `json:"answer"`
		}
		if err := httpapi.BindJSON(c, e.cfg.BodyLimit, &req); err != nil {
			return err
		}
		// A join retried after a lost answer keeps its ticket without a
		// second challenge (the first one is burned).
		tk, err := e.queue.ticket(ctx, id, ses.UserID)
		if err != nil {
			return err
		}
		if tk == "" {
			if err := e.ch.VerifyBound(ctx, req.ChallengeID, queueBinding(ses.UserID, id), answerString(req.Answer)); err != nil {
				return err
			}
		}
	}
	st, err := e.queue.run(ctx, opJoin, it.Item, ses.UserID, e.admissionFactor())
	if err != nil {
		return err
	}
	if st.State == qNone { // sold out or ended by Redis's clock: no ticket made
		return seckill.Errorf(seckill.ESoldOut, "sold out")
	}
	return e.answerQueue(c, it, ses.UserID, st)
}

func (e *Edge) pollQueue(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, classStatus, id, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	it, err := e.queueItem(ctx, id)
	if err != nil {
		return err
	}
	factor := e.admissionFactor()
	if tok, ok := e.pollTokens.open(requestToken(c, PollTokenHeader, pollTokenCookie(id)), ses.UserID, id); ok {
		st, ok, err := e.queue.fromView(ctx, it.Item, tok, factor)
		if err != nil {
			return err // Redis stalled or unreachable for longer than the view may answer
		}
		if ok {
			return e.answerQueue(c, it, ses.UserID, st)
		}
	}
	e.queue.scriptPolls.Add(1)
	st, err := e.queue.run(ctx, opPoll, it.Item, ses.UserID, factor)
	if err != nil {
		return err
	}
	if st.State == qNone {
		return seckill.Errorf(seckill.ENotFound, "no ticket for this sale: join with POST /api/items/%d/queue", id)
	}
	return e.answerQueue(c, it, ses.UserID, st)
}

// answerQueue writes where a ticket stands, with the pass (body and
// cookie) once admitted.
func (e *Edge) answerQueue(c echo.Context, it seckill.ItemView, user int64, st queueStatus) error {
	a := queueAnswer{Ticket: st.Ticket, State: st.State, Position: st.Position, Waiting: st.Waiting}
	a.EtaSeconds, a.PollAfter = e.queueTiming(it, st)
	switch {
	case st.FromView:
		a.PollToken = requestToken(c, PollTokenHeader, pollTokenCookie(it.ID)) // the one it showed
	case st.HasPlace:
		a.PollToken = e.pollTokens.sign(pollToken{User: user, Item: it.ID, Ticket: st.Ticket, Place: st.Place, Issued: st.Now,
			Run: st.Run})
		c.SetCookie(&http.Cookie{
			Name: pollTokenCookie(it.ID), Value: a.PollToken, Path: "/api/items/" + strconv.FormatInt(it.ID, 10) + "/",
			Expires: it.EndsAt, HttpOnly: true, Secure: !e.cfg.InsecureCookie, SameSite: http.SameSiteStrictMode,
		})
	}
	if st.State == qAdmitted {
		until := st.Until.UTC()
		a.AdmittedUntil = &until
		a.Pass = e.passes.sign(user, it.ID, st.Until)
		c.SetCookie(&http.Cookie{
			Name: passCookie(it.ID), Value: a.Pass, Path: "/api/items/" + strconv.FormatInt(it.ID, 10) + "/",
			Expires: st.Until, HttpOnly: true, Secure: !e.cfg.InsecureCookie, SameSite: http.SameSiteStrictMode,
		})
	}
	if b, ok := a.appendJSON(make([]byte, 0, 320)); ok {
		return c.JSONBlob(http.StatusOK, b)
	}
	return c.JSON(http.StatusOK, a)
}

// appendJSON appends a as encoding/json writes it (with its newline), for
// the answers polls get most (no admitted_until, strings of token
// characters only): a poll answered from the view costs about a cached
// catalogue read, and encoding/json's reflection was a sixth of it. ok
// false: use encoding/json.
func (a queueAnswer) appendJSON(b []byte) ([]byte, bool) {
	if a.AdmittedUntil != nil || !tokenChars(a.Ticket) || !tokenChars(a.State) || !tokenChars(a.Pass) || !tokenChars(a.PollToken) {
		return nil, false
	}
	b = append(b, `{"ticket":"`...)
	b = append(b, a.Ticket...)
	b = append(b, `","state":"`...)
	b = append(b, a.State...)
	b = append(b, `","position":`...)
	b = strconv.AppendInt(b, a.Position, 10)
	b = append(b, `,"waiting":`...)
	b = strconv.AppendInt(b, a.Waiting, 10)
	b = append(b, `,"eta_seconds":`...)
	b = strconv.AppendInt(b, a.EtaSeconds, 10)
	b = append(b, `,"poll_after":`...)
	b = strconv.AppendInt(b, a.PollAfter, 10)
	for _, f := range [...]struct{ name, v string }{{"pass", a.Pass}, {"poll_token", a.PollToken}} {
		if f.v != "" {
			b = append(b, `,"`...)
			b = append(b, f.name...)
			b = append(b, `":"`...)
			b = append(b, f.v...)
			b = append(b, '"')
		}
	}
	return append(b, "}\n"...), true
}

// tokenChars: only characters JSON writes as they are and HTML-escaping
// leaves alone (letters, digits, '-', '_', '.'). A table: the poll token
// (about 150 bytes) is scanned at every poll, and the chain of ranges
// cost about a microsecond of it.
func tokenChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if !tokenByte[s[i]] {
			return false
		}
	}
	return true
}

var tokenByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	return t
}()

// checkAdmitted refuses a challenge, a path or a purchase of a waiting-room
// sale without a valid admission pass of this user for this item (409
// not_admitted). No Redis: the pass is signed.
func (e *Edge) checkAdmitted(c echo.Context, itemID, user int64) error {
	it, err := e.catalog.Item(c.Request().Context(), itemID)
	if err != nil || it.AllocationMode() != seckill.AllocationQueue {
		return nil // the route's own catalogue check answers
	}
	if !e.passes.verify(requestToken(c, PassHeader, passCookie(itemID)), user, itemID) {
		return seckill.Errorf(seckill.ENotAdmitted, "this sale has a waiting room: join it (POST /api/items/%d/queue) and wait for your turn", itemID)
	}
	return nil
}

// queueBinding is what the challenge joining a waiting room takes is bound
// to: the user, the item, and this purpose, so that it is good for that
// join only. The purchase's challenge is bound to the same user and item
// (captcha.Store.Issue) and would otherwise be good on either route: a
// join challenge, issued without the purchase challenge's checks (the
// pass, a unit already held) and before the start, would open a path, and
// a purchase challenge would open the room. Never all digits (IssueBound).
func queueBinding(user, item int64) string {
	return "queue " + strconv.FormatInt(user, 10) + " " + strconv.FormatInt(item, 10)
}

// queueChallenge issues the challenge that joining a waiting room takes
// (items with queue_challenge), before and after the start, of the kind
// the item's purchase takes, bound to the user and the item for joining
// only (queueBinding).
func (e *Edge) queueChallenge(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, classChallenge, id, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	it, err := e.queueItem(ctx, id)
	if err != nil {
		return err
	}
	if !it.QueueChallenge {
		return seckill.Errorf(seckill.EConflict, "joining this waiting room takes no challenge")
	}
	if err := e.queueOpen(it); err != nil {
		return err
	}
	if err := e.checkEligible(ses, it.Item); err != nil { // 409 not_eligible before any work, as the purchase's challenge
		return err
	}
	kind, diff, err := e.itemChallengeKind(it.Item)
	if err != nil {
		return err
	}
	ch, err := e.ch.IssueBound(ctx, kind, queueBinding(ses.UserID, id), diff)
	if err != nil {
		return err
	}
	return writeChallenge(c, ch)
}

// QueueStats is the waiting room in an item's admin stats.
type QueueStats struct {
	Waiting           int64   `json:"waiting"`
	Admitted          int64   `json:"admitted"`       // admitted, unexpired and not holding a unit yet
	AdmittedTotal     int64   `json:"admitted_total"` // since the queue began
	UnitsLeft         int64   `json:"units_left"`
	NewUsersPerMinute int64   `json:"new_users_per_minute"`
	TotalActiveUsers  int64   `json:"total_active_users"`
	LoadFactor        float64 `json:"load_factor"` // this edge's share of the rate (1 calm, 0.5 busy, 0 breaker open)
}

// queueStats reads the waiting room of a queue sale (nil otherwise).
func (e *Edge) queueStats(ctx context.Context, id int64) (*QueueStats, error) {
	it, err := e.catalog.Item(ctx, id)
	if err != nil || it.AllocationMode() != seckill.AllocationQueue {
		return nil, nil
	}
	f := e.admissionFactor()
	st, err := e.queue.run(ctx, opPeek, it.Item, 0, f)
	if err != nil {
		return nil, err
	}
	return &QueueStats{Waiting: st.Waiting, Admitted: st.Active, AdmittedTotal: st.Admitted, UnitsLeft: st.Left,
		NewUsersPerMinute: it.QueueRate(), TotalActiveUsers: it.TotalActiveUsers, LoadFactor: f}, nil
}
