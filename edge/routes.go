package edge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
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
	ClassRegister  = "register"
	ClassLogin     = "login"
	ClassCatalog   = "catalog"
	ClassChallenge = "challenge"
	ClassPath      = "path"
	ClassBuy       = "buy"
	ClassStatus    = "status"
)

// publicRoutes lists every public route.
func (e *Edge) publicRoutes(reg *prometheus.Registry) *echo.Echo {
	ec := newEcho(e.log)
	ec.Use(httpapi.NewMetrics(reg, "seckill_edge").Middleware(), httpapi.APIHeaders(), e.origins.middleware)
	ec.POST("/api/register", e.register)
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
	return !e.draining.Load() && e.catalog.Loaded() && e.revoker.tried.Load()
}

// readyDetails is the admin /readyz: the verdict and why.
func (e *Edge) readyDetails(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	r := httpapi.Readiness{Status: "unready", Instance: e.instance, Draining: e.draining.Load()}
	if e.isReady() {
		r.Status = "ready"
	}
	cat := httpapi.Check{Name: "catalog", OK: e.catalog.Loaded(), Needed: true}
	switch age := e.catalog.Age(); {
	case !cat.OK:
		cat.Detail = "not loaded yet"
	case age > MaxStale:
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

// reject counts a refusal by its code and returns it.
func (e *Edge) reject(err error) error {
	e.m.rejections.WithLabelValues(httpapi.CodeLabel(seckill.ErrorCode(err))).Inc()
	return err
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
			return Session{}, e.reject(serr)
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
		return Session{}, e.reject(&httpapi.RetryError{
			Err:   seckill.Errorf(seckill.ERateLimited, "too many requests (%s); retry after the delay", d.Rule),
			After: d.RetryAfter,
		})
	}
	if needSession && serr != nil {
		return Session{}, e.reject(serr)
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
		return it, e.reject(unavailable(err)) // no copy of the catalogue yet: 503, never 500
	}
	return it, e.checkLive(it)
}

// checkLive refuses an item whose sale is not open or is sold out.
func (e *Edge) checkLive(it seckill.ItemView) error {
	switch it.State {
	case "upcoming", "ended":
		return e.reject(seckill.Errorf(seckill.ENotLive, "the sale is %s", it.State))
	case "sold_out":
		return e.reject(seckill.Errorf(seckill.ESoldOut, "sold out"))
	}
	return nil
}

type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (e *Edge) register(c echo.Context) error {
	if _, err := e.gate(c, ClassRegister, 0, false); err != nil {
		return err
	}
	var req credentials
	if err := httpapi.BindJSON(c, e.cfg.BodyLimit, &req); err != nil {
		return err
	}
	if err := seckill.ValidateUsername(req.Username); err != nil {
		return err
	}
	if len(req.Password) < seckill.MinPassword || len(req.Password) > seckill.MaxPassword {
		return seckill.Errorf(seckill.EInvalid, "password must be %d to %d bytes", seckill.MinPassword, seckill.MaxPassword)
	}
	id, err := accountCall(c.Request().Context(), e, func(ctx context.Context) (int64, error) {
		return e.be.Register(ctx, req.Username, req.Password)
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, map[string]any{"user_id": id})
}

func (e *Edge) login(c echo.Context) error {
	if _, err := e.gate(c, ClassLogin, 0, false); err != nil {
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
			return e.reject(err)
		}
	}
	id, err := accountCall(ctx, e, func(ctx context.Context) (int64, error) {
		return e.be.Login(ctx, req.Username, req.Password)
	})
	if counted && seckill.ErrorCode(err) == seckill.EBadCredentials {
		e.loginFails.failed(ctx, req.Username)
	}
	if err != nil {
		return e.reject(err)
	}
	if counted {
		e.loginFails.succeeded(ctx, req.Username)
	}
	tok, exp := e.sessions.Sign(id, req.Username)
	c.SetCookie(e.sessions.Cookie(tok, exp))
	return c.JSON(http.StatusOK, map[string]any{"token": tok, "expires_at": exp.UTC(), "user_id": id})
}

func (e *Edge) items(c echo.Context) error {
	if _, err := e.gate(c, ClassCatalog, 0, false); err != nil {
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
	if _, err := e.gate(c, ClassCatalog, id, false); err != nil {
		return err
	}
	it, err := e.catalog.Item(c.Request().Context(), id)
	if err != nil {
		return e.reject(unavailable(err))
	}
	return c.JSON(http.StatusOK, map[string]any{"now": time.Now().UTC(), "item": it})
}

// unavailable turns a failed backend call into 503 backend_unavailable.
func unavailable(err error) error {
	var ue *seckill.UnavailableError
	if errors.As(err, &ue) {
		return &httpapi.RetryError{Err: seckill.Errorf(seckill.EUnavailable, "the backend is unavailable; retry shortly"), After: time.Second}
	}
	return err
}

// ChallengeResponse is the answer of POST /api/items/{id}/challenge.
type ChallengeResponse struct {
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
	ses, err := e.gate(c, ClassChallenge, id, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	it, err := e.liveItem(ctx, id)
	if err != nil {
		return err
	}
	if e.defences.get(id).Bloom {
		if ref, held, err := e.dedup.Held(ctx, ses.UserID, id); err != nil {
			return err
		} else if held {
			return e.reject(seckill.Held(ref, "you already hold a unit of this item"))
		}
	}
	kind, diff := it.Challenge, e.difficulty()
	switch kind {
	case captcha.KindCaptcha:
		diff = 0
	case "none":
		kind, diff = captcha.KindPoW, 0
	default:
		kind = captcha.KindPoW
	}
	if kind == captcha.KindCaptcha {
		if err := e.allowCaptcha(); err != nil {
			return err
		}
	}
	ch, err := e.ch.Issue(ctx, kind, ses.UserID, id, diff)
	if err != nil {
		return err
	}
	resp := ChallengeResponse{ChallengeID: ch.ID, Kind: ch.Kind, ExpiresAt: ch.ExpiresAt.UTC(), Seed: ch.Seed}
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
	ses, err := e.gate(c, ClassPath, id, true)
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
	def := e.defences.get(id)
	if def.Challenge {
		if err := e.ch.Verify(ctx, req.ChallengeID, ses.UserID, id, answerString(req.Answer)); err != nil {
			return e.reject(err)
		}
	}
	issue := e.paths.Issue
	if !def.PathBinding {
		issue = e.paths.IssueShared
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

func (e *Edge) buy(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, ClassBuy, id, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	p := c.Param("path")
	def := e.defences.get(id)
	it, err := e.catalog.Item(ctx, id)
	if err != nil {
		return e.reject(unavailable(err)) // no copy of the catalogue yet: 503, never 500
	}
	if it.State == "sold_out" {
		// Sold out: 410 from the marker, unless this path's earlier
		// purchase attempt got no final answer (a 503 or a timeout: the
		// reservation may have run in Redis, its reply lost). Such a retry
		// goes to the backend, which answers a repeated request id with its
		// first answer (202, the same order ref) or 410. Answering 410 here
		// would tell a buyer who holds a unit that they have none (the
		// fault matrix's redis-kill row found it). A path never used for a
		// buy is not forwarded, so the crowd holding paths at the sell-out
		// costs one Redis read each and no backend call. With the path
		// binding or single-use defence switched off (teaching) a path is
		// not one attempt's name, so nothing is forwarded.
		if !def.PathBinding || !def.SingleUse {
			return e.reject(seckill.Errorf(seckill.ESoldOut, "sold out"))
		}
		attempted, err := e.paths.Attempted(ctx, ses.UserID, id, p)
		if err != nil || !attempted {
			return e.reject(seckill.Errorf(seckill.ESoldOut, "sold out"))
		}
	} else {
		if err := e.checkLive(it); err != nil {
			return err
		}
		if err := e.paths.CheckAttempt(ctx, ses.UserID, id, p); err != nil {
			if def.PathBinding || e.paths.CheckShared(ctx, id, p) != nil {
				return e.reject(err)
			}
		}
	}
	consume := func() {
		if def.SingleUse {
			// Not cancelled with the request: a client hanging up right
			// after its answer must not leave the path usable.
			cctx := context.WithoutCancel(ctx)
			_ = e.paths.Consume(cctx, ses.UserID, id, p)
			if !def.PathBinding {
				_ = e.paths.ConsumeShared(cctx, id, p)
			}
		}
	}
	if def.Bloom {
		if ref, held, err := e.dedup.Held(ctx, ses.UserID, id); err != nil {
			return err
		} else if held {
			consume()
			return e.reject(seckill.Held(ref, "you already hold a unit of this item"))
		}
	}
	// The path names this purchase attempt: a retry with the same path
	// (after a 503 whose answer was lost) is the same request. A shared path
	// (binding off) is shared by many users, so it gets their user id too.
	reqID := p
	if !def.PathBinding {
		reqID = p[:16] + strconv.FormatInt(ses.UserID, 36)
	}
	res, err := DoWith(ctx, e.guard(), CallReserve, def, func(ctx context.Context) (seckill.Reservation, error) {
		return e.be.Reserve(ctx, id, ses.UserID, reqID)
	})
	switch code := seckill.ErrorCode(err); {
	case err == nil:
		e.dedup.Add(ses.UserID, id)
		consume()
		if res.StockLeft <= 0 {
			e.markSoldOut(ctx, id)
		}
		e.m.accepted.Inc()
		return c.JSON(http.StatusAccepted, map[string]any{"status": "queued", "order_ref": res.OrderRef})
	case code == seckill.EAlreadyBought:
		e.dedup.Add(ses.UserID, id)
		consume()
		return e.reject(err) // a *seckill.HeldError: X-Order-Ref names the order
	case code == seckill.ESoldOut:
		consume()
		e.markSoldOut(ctx, id)
		return e.reject(err)
	case code == seckill.ENotLive || code == seckill.EUnknownItem:
		consume()
		return e.reject(err)
	default: // 429/503: the path stays usable until it expires
		return e.reject(err)
	}
}

func (e *Edge) order(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, ClassStatus, id, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := e.catalog.Item(ctx, id); err != nil {
		return e.reject(unavailable(err))
	}
	st, err := Do(ctx, e.guard(), CallRead, func(ctx context.Context) (seckill.OrderState, error) {
		return e.be.Status(ctx, id, ses.UserID)
	})
	if err != nil {
		return e.reject(err)
	}
	out := map[string]any{"status": st.Status, "order_ref": st.OrderRef, "order_id": st.OrderID}
	if st.Degraded {
		out["degraded"] = true // PostgreSQL away: what Redis knows
	}
	return c.JSON(http.StatusOK, out)
}
