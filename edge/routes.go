package edge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"seckill"
	"seckill/captcha"
	"seckill/clientip"
	"seckill/httpapi"
	"seckill/limit"
)

// Route classes of the token buckets.
const (
	classRegister  = "register"
	classLogin     = "login"
	classCatalog   = "catalog"
	classChallenge = "challenge"
	classPath      = "path"
	classBuy       = "buy"
	classStatus    = "status"
)

// publicRoutes lists every public route.
func (e *Edge) publicRoutes(reg *prometheus.Registry) *echo.Echo {
	ec := newEcho(e.log)
	ec.Use(httpapi.NewMetrics(reg, "seckill_edge").Middleware(), httpapi.APIHeaders(), e.countRefusals, e.origins.middleware)
	ec.POST("/api/register", e.register) // register.go
	ec.POST("/api/register/challenge", e.registerChallenge)
	ec.POST("/api/login", e.login)
	ec.POST("/api/logout", e.logout)
	ec.POST("/api/logout/everywhere", e.logoutEverywhere)
	ec.GET("/api/items", e.items)
	ec.GET("/api/items/:id", e.item)
	ec.POST("/api/items/:id/challenge", e.challenge)
	ec.POST("/api/items/:id/path", e.path)
	ec.POST("/api/items/:id/buy/:path", e.buy)
	ec.POST("/api/items/:id/buy", e.buy) // no path at all: 403 bad_path, like a wrong one
	ec.POST("/api/items/:id/buy/", e.buy)
	ec.GET("/api/items/:id/order", e.order)
	e.drawRoutes(ec) // entry, draw, entry list (draw.go)
	ec.POST("/api/items/:id/queue", e.joinQueue)
	ec.GET("/api/items/:id/queue", e.pollQueue)
	ec.POST("/api/items/:id/queue/challenge", e.queueChallenge)
	ec.GET("/healthz", httpapi.Healthz("edge", e.instance))
	ec.GET("/readyz", httpapi.PublicReadyz(e.readyC))
	return ec
}

// adminRoutes lists every admin route.
func (e *Edge) adminRoutes(reg *prometheus.Registry) *echo.Echo {
	ec := newEcho(e.log)
	ec.Use(httpapi.NewMetrics(reg, "seckill_edge_admin").Middleware(), httpapi.APIHeaders())
	adm := ec.Group("/admin", e.requireAdmin, e.auditWrites)
	adm.POST("/items", e.createItem)
	adm.GET("/items", e.adminItems)
	adm.GET("/items/:id/stats", e.stats)
	adm.POST("/sessions", e.createSessions)
	adm.GET("/items/:id/defences", e.getDefences)
	httpapi.RegisterPprof(adm) // /admin/debug/pprof/...
	adm.PUT("/items/:id/defences", e.putDefences)
	adm.POST("/users/:id/revoke", e.revokeUser)
	adm.GET("/audit", e.auditList)
	e.drawAdminRoutes(adm) // draw.go
	ec.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	ec.GET("/healthz", httpapi.Healthz("edge", e.instance))
	ec.GET("/readyz", e.readyDetails)
	return ec
}

// isReady is the edge's verdict: not draining, a catalogue copy in
// service (before it, every item would look unknown), and the first load
// of session revocations tried (before it, a revoked token would pass). Redis and the
// backends are reported on the admin /readyz, not needed: the edge keeps
// answering what it can from what it holds, and answers 503 for the rest.
func (e *Edge) isReady() bool {
	return !e.draining.Load() && e.catalog.loaded() && e.revoker.tried.Load()
}

// readyDetails is the admin /readyz: the verdict and why.
func (e *Edge) readyDetails(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	r := httpapi.Readiness{Status: "unready", Instance: e.instance, Draining: e.draining.Load()}
	if e.isReady() {
		r.Status = "ready"
	}
	cat := httpapi.Check{Name: "catalog", OK: e.catalog.loaded(), Needed: true}
	switch age := e.catalog.Age(); {
	case !cat.OK:
		cat.Detail = "not loaded yet"
	case age > maxStale:
		cat.Detail = fmt.Sprintf("stale: copy %v old (refreshes failing)", age.Round(time.Second))
	default:
		cat.Detail = fmt.Sprintf("copy %v old", age.Round(time.Millisecond))
	}
	check := func(name string, err error) httpapi.Check {
		ch := httpapi.Check{Name: name, OK: err == nil}
		if err != nil {
			ch.Detail = err.Error()
		}
		return ch
	}
	r.Checks = []httpapi.Check{cat, check("redis", e.rdb.Ping(ctx).Err()), check("backend", e.be.Ready(ctx))}
	return httpapi.WriteReadiness(c, r)
}

// countRefusals counts every refusal of the public API by its code
// (seckill_edge_rejections_total{reason}): the edge's own and the
// backend's, on every route, in this one place.
func (e *Edge) countRefusals(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		if err != nil && strings.HasPrefix(c.Path(), "/api/") {
			e.m.rejections.WithLabelValues(httpapi.CodeLabel(seckill.ErrorCode(err))).Inc()
		}
		return err
	}
}

// gate runs the cheap checks every protected route shares, in order:
// client identity, token buckets (per ip, user, item, global), session.
func (e *Edge) gate(c echo.Context, class string, itemID int64, needSession bool) (Session, error) {
	ip := clientip.Key(e.ips().ClientIP(c.Request()))
	ses, serr := e.sessions.FromRequest(c.Request())
	k := limit.Keys{IP: ip}
	if serr == nil {
		k.User = strconv.FormatInt(ses.UserID, 10)
	}
	if itemID > 0 {
		k.Item = strconv.FormatInt(itemID, 10)
	}
	if itemID > 0 && !e.defences.get(itemID).Buckets {
		// Teaching switch: no token bucket for this sale.
		if needSession && serr != nil {
			return Session{}, serr
		}
		return ses, nil
	}
	d := e.lim.Allow(class, k)
	d.SetHeaders(c.Response().Header())
	for _, rule := range d.ShadowHits {
		e.m.shadow.WithLabelValues(rule).Inc()
		e.logShadow(rule, class, k)
	}
	if !d.Allowed {
		return Session{}, &httpapi.RetryError{
			Err:   seckill.Errorf(seckill.ERateLimited, "too many requests (%s); retry after the delay", d.Rule),
			After: d.RetryAfter,
		}
	}
	if needSession && serr != nil {
		return Session{}, serr
	}
	return ses, nil
}

// itemParam parses the item id; an id that cannot exist is unknown.
func itemParam(c echo.Context) int64 {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0
	}
	return id
}

// liveItem returns the item if it is on sale now by the edge's clock and
// not marked sold out. The backend checks again with the Redis clock.
func (e *Edge) liveItem(ctx context.Context, id int64) (seckill.ItemView, error) {
	it, err := e.catalog.Item(ctx, id)
	if err != nil {
		return it, unavailable(err) // no copy of the catalogue yet: 503, never 500
	}
	return it, checkLive(it)
}

// checkLive refuses an item whose sale is not open or is sold out.
func checkLive(it seckill.ItemView) error {
	switch it.State {
	case seckill.StateUpcoming, seckill.StateEnded:
		return seckill.Errorf(seckill.ENotLive, "the sale is %s", it.State)
	case seckill.StateSoldOut:
		return seckill.Errorf(seckill.ESoldOut, "sold out")
	}
	return nil
}

type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (e *Edge) login(c echo.Context) error {
	if _, err := e.gate(c, classLogin, 0, false); err != nil {
		return err
	}
	var req credentials
	if err := httpapi.BindJSON(c, e.cfg.BodyLimit, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	// Failures are counted per account; a name no account can have is
	// refused by the backend without an account to protect.
	counted := seckill.ValidateUsername(req.Username) == nil
	if counted {
		if err := e.loginFails.check(ctx, req.Username); err != nil {
			return err
		}
	}
	acct, err := accountCall(ctx, e, func(ctx context.Context) (seckill.Account, error) {
		return e.be.Login(ctx, req.Username, req.Password)
	})
	if counted && seckill.ErrorCode(err) == seckill.EBadCredentials {
		e.loginFails.failed(ctx, req.Username)
	}
	if err != nil {
		return err
	}
	if counted {
		e.loginFails.succeeded(ctx, req.Username)
	}
	tok, exp := e.sessions.SignAccount(acct, req.Username) // carries created_at and network (eligibility)
	c.SetCookie(e.sessions.Cookie(tok, exp))
	return c.JSON(http.StatusOK, map[string]any{"token": tok, "expires_at": exp.UTC(), "user_id": acct.ID})
}

func (e *Edge) items(c echo.Context) error {
	if _, err := e.gate(c, classCatalog, 0, false); err != nil {
		return err
	}
	items, err := e.catalog.Items(c.Request().Context())
	if err != nil {
		return unavailable(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"now": time.Now().UTC(), "items": items})
}

func (e *Edge) item(c echo.Context) error {
	id := itemParam(c)
	if _, err := e.gate(c, classCatalog, id, false); err != nil {
		return err
	}
	it, err := e.catalog.Item(c.Request().Context(), id)
	if err != nil {
		return unavailable(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"now": time.Now().UTC(), "item": it})
}

// unavailable is the one map of a failure of the backend (no business
// answer: a *seckill.UnavailableError, a deadline, or the caller's own
// cancellation) to 503 backend_unavailable with Retry-After. Business
// answers and the edge's own errors pass unchanged.
func unavailable(err error) error {
	if seckill.BackendFailure(err) || errors.Is(err, context.Canceled) {
		return &httpapi.RetryError{Err: seckill.Errorf(seckill.EUnavailable, "the backend did not answer; retry shortly"), After: time.Second}
	}
	return err
}

// challengeResponse is the answer of POST /api/items/{id}/challenge.
type challengeResponse struct {
	ChallengeID string    `json:"challenge_id"`
	Kind        string    `json:"kind"`
	ExpiresAt   time.Time `json:"expires_at"`
	Seed        string    `json:"seed,omitempty"`
	// Difficulty is always there for pow, 0 included (items with challenge
	// "none"); a captcha has none.
	Difficulty *int `json:"difficulty,omitempty"`
	// Image is the captcha as a data: URL (image/png).
	Image string `json:"image,omitempty"`
}

func (e *Edge) challenge(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, classChallenge, id, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	it, err := e.liveItem(ctx, id)
	if err != nil {
		return err
	}
	if err := e.checkEligible(ses, it.Item); err != nil { // 409 not_eligible, from the session alone
		return err
	}
	if err := e.checkDrawClaim(ctx, it.Item, ses.UserID); err != nil { // a draw: 409 not_drawn (draw.go)
		return err
	}
	if err := e.checkAdmitted(c, id, ses.UserID); err != nil { // waiting room: 409 not_admitted
		return err
	}
	if e.defences.get(id).Bloom {
		if ref, held, err := e.dedup.holds(ctx, ses.UserID, id); err != nil {
			return err
		} else if held {
			return seckill.Held(ref, "you already hold a unit of this item")
		}
	}
	return e.issueItemChallenge(c, it.Item, ses.UserID)
}

// issueItemChallenge issues the purchase's challenge of an item, bound to
// the user and the item, and answers it.
func (e *Edge) issueItemChallenge(c echo.Context, it seckill.Item, user int64) error {
	kind, diff, err := e.itemChallengeKind(it)
	if err != nil {
		return err
	}
	ch, err := e.ch.Issue(c.Request().Context(), kind, user, it.ID, diff)
	if err != nil {
		return err
	}
	return writeChallenge(c, ch)
}

// itemChallengeKind is the kind and difficulty of the challenge an item
// asks for (pow at the current difficulty; "none": pow at 0; a captcha
// within its own bucket, which it takes from): the purchase's challenge
// and the waiting room's (queueChallenge).
func (e *Edge) itemChallengeKind(it seckill.Item) (kind string, diff int, err error) {
	switch it.Challenge {
	case captcha.KindCaptcha:
		if err := e.allowCaptcha(); err != nil {
			return "", 0, err
		}
		return captcha.KindCaptcha, 0, nil
	case seckill.ChallengeNone:
		return captcha.KindPoW, 0, nil
	}
	return captcha.KindPoW, e.difficulty(), nil
}

// writeChallenge answers 200 with a challenge (challengeResponse).
func writeChallenge(c echo.Context, ch captcha.Challenge) error {
	resp := challengeResponse{ChallengeID: ch.ID, Kind: ch.Kind, ExpiresAt: ch.ExpiresAt.UTC(), Seed: ch.Seed}
	if ch.Kind == captcha.KindPoW {
		resp.Difficulty = &ch.Difficulty
	}
	if len(ch.Image) > 0 {
		resp.Image = "data:image/png;base64," + base64.StdEncoding.EncodeToString(ch.Image)
	}
	return c.JSON(http.StatusOK, resp)
}

func (e *Edge) path(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, classPath, id, true)
	if err != nil {
		return err
	}
	var req struct {
		ChallengeID string          `json:"challenge_id"`
		Answer      json.RawMessage `json:"answer"`
	}
	if err := httpapi.BindJSON(c, e.cfg.BodyLimit, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := e.liveItem(ctx, id); err != nil {
		return err
	}
	if err := e.checkAdmitted(c, id, ses.UserID); err != nil { // waiting room: 409 not_admitted
		return err
	}
	def := e.defences.get(id)
	if def.Challenge {
		if err := e.ch.Verify(ctx, req.ChallengeID, ses.UserID, id, answerString(req.Answer)); err != nil {
			return err
		}
	}
	issue := e.paths.issue
	if !def.PathBinding {
		issue = e.paths.issueShared
	}
	p, exp, err := issue(ctx, ses.UserID, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"path": p, "expires_at": exp.UTC()})
}

// answerString accepts an answer sent as a JSON string or number.
func answerString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

func (e *Edge) order(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, classStatus, id, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := e.catalog.Item(ctx, id); err != nil {
		return unavailable(err)
	}
	st, err := do(ctx, e.guard(), callRead, func(ctx context.Context) (seckill.OrderState, error) {
		return e.be.Status(ctx, id, ses.UserID)
	})
	if err != nil {
		return err
	}
	out := map[string]any{"status": st.Status, "order_ref": st.OrderRef, "order_id": st.OrderID}
	if st.Degraded {
		out["degraded"] = true // PostgreSQL away: what Redis knows
	}
	return c.JSON(http.StatusOK, out)
}
