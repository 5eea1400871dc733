package backend

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"seckill"
	"seckill/httpapi"
	"seckill/stock"
)

// BodyLimit is the largest request body the backend reads.
const BodyLimit = 16 << 10

// HTTPConfig configures the backend API.
type HTTPConfig struct {
	// Token is the internal credential: when set, every route except
	// /healthz, /readyz and /metrics requires it as a Bearer token
	// (compared in constant time). Empty means no check, which only tests
	// may want: seckill backend refuses to start without one, and seckill
	// dev gives its edge and backend a generated one.
	Token string
	// AdminToken is the old name of Token, used when Token is empty.
	AdminToken string
	Registry   *prometheus.Registry
	Logger     *slog.Logger
}

// Handler serves the backend API; see docs/API.md.
type Handler struct {
	*echo.Echo
	svc      *Service
	log      *slog.Logger
	draining atomic.Bool
	outcomes *prometheus.CounterVec
	instance string
	readyC   *httpapi.ReadyCache
}

// NewHandler returns the backend HTTP API. Every route is listed here.
func NewHandler(svc *Service, cfg HTTPConfig) *Handler {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = httpapi.ErrorHandler(log)
	h := &Handler{Echo: e, svc: svc, log: log, instance: httpapi.NewInstanceID()}
	h.readyC = httpapi.NewReadyCache(func(ctx context.Context) bool {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return !h.draining.Load() && svc.Ready(ctx) == nil
	})
	h.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "seckill_backend", Name: "reservations_total",
		Help: "Reservation attempts by outcome.",
	}, []string{"outcome"})
	authFailures := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "seckill_backend", Name: "auth_failures_total",
		Help: "Requests refused for a missing or wrong internal credential.",
	})
	reg.MustRegister(h.outcomes, authFailures)
	token := cfg.Token
	if token == "" {
		token = cfg.AdminToken
	}
	if token == "" {
		log.Warn("backend API without an internal credential: anyone who reaches it can reserve, read orders and create users")
	}
	e.Use(httpapi.NewMetrics(reg, "seckill_backend").Middleware(), httpapi.APIHeaders(),
		requireToken(token, authFailures, log))

	e.POST("/v1/reservations", h.reserve)
	e.GET("/v1/items", h.items)
	e.GET("/v1/items/:id", h.item)
	e.GET("/v1/items/:id/orders/:user", h.status)
	h.drawRoutes(e) // the draw (draw_http.go)

	e.POST("/v1/users", h.register)
	e.POST("/v1/users/login", h.login)

	admin := e.Group("/v1/admin")
	admin.POST("/users", h.ensureUsers)
	admin.POST("/items", h.createItem)
	admin.GET("/items/:id/stats", h.stats)
	admin.GET("/readyz", h.readyDetails)
	httpapi.RegisterPprof(admin) // /v1/admin/debug/pprof/...

	e.GET("/healthz", httpapi.Healthz("backend", h.instance))
	e.GET("/readyz", httpapi.PublicReadyz(h.readyC))
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	return h
}

// Drain makes /readyz fail so balancers stop sending new work.
func (h *Handler) Drain() {
	h.draining.Store(true)
	h.readyC.Invalidate()
}

// openPaths answer without the internal credential: the health contract
// (docs/API.md#health: a verdict, no details) and the metrics, which
// operators' probes and scrapers read.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// requireToken refuses, with 401 unauthenticated, every request but those of
// openPaths that does not carry "Authorization: Bearer <token>". Both sides
// are hashed first, so the comparison takes the same time whatever the
// length or content of what was sent. An empty token checks nothing.
func requireToken(token string, failures prometheus.Counter, log *slog.Logger) echo.MiddlewareFunc {
	want := sha256.Sum256([]byte(token))
	var lastLog atomic.Int64
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if token == "" || openPaths[c.Request().URL.Path] {
				return next(c)
			}
			got, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
			sum := sha256.Sum256([]byte(got))
			if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !ok {
				failures.Inc()
				// At most one line a second: a flood must not flood the log.
				if now := time.Now().Unix(); lastLog.Swap(now) != now {
					log.Warn("backend request without the internal credential refused",
						"remote", c.Request().RemoteAddr, "path", c.Request().URL.Path, "credential_sent", ok)
				}
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="seckill-backend"`)
				return seckill.Errorf(seckill.EUnauthorized, "the internal credential is required (Authorization: Bearer, the token the backend was started with)")
			}
			return next(c)
		}
	}
}

type reserveRequest struct {
	ItemID    int64  `json:"item_id"`
	UserID    int64  `json:"user_id"`
	RequestID string `json:"request_id"`
}

func (h *Handler) reserve(c echo.Context) error {
	var req reserveRequest
	if err := httpapi.BindJSON(c, BodyLimit, &req); err != nil {
		h.outcomes.WithLabelValues(string(seckill.EInvalid)).Inc()
		return err
	}
	res, err := h.svc.Reserve(c.Request().Context(), req.ItemID, req.UserID, req.RequestID)
	if err != nil {
		h.outcomes.WithLabelValues(httpapi.CodeLabel(seckill.ErrorCode(err))).Inc()
		var re *httpapi.RetryError
		if seckill.ErrorCode(err) == seckill.EUnavailable && !errors.As(err, &re) {
			// Redis frozen while verified after a restart, or not answering.
			return &httpapi.RetryError{Err: err, After: time.Second}
		}
		return err // already_bought names the order held (X-Order-Ref, by httpapi)
	}
	h.outcomes.WithLabelValues("queued").Inc()
	return c.JSON(http.StatusAccepted, res)
}

func (h *Handler) items(c echo.Context) error {
	items, err := h.svc.Items(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"now": time.Now().UTC(), "items": items})
}

func (h *Handler) item(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	it, err := h.svc.Item(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"now": time.Now().UTC(), "item": it})
}

func (h *Handler) status(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	user, err := httpapi.ParamID(c, "user")
	if err != nil {
		return err
	}
	st, err := h.svc.Status(c.Request().Context(), id, user)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (h *Handler) createItem(c echo.Context) error {
	var req seckill.CreateItemRequest
	if err := httpapi.BindJSON(c, BodyLimit, &req); err != nil {
		return err
	}
	it, err := h.svc.CreateItem(c.Request().Context(), req.Item())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, map[string]any{"id": it.ID, "item": it})
}

func (h *Handler) stats(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	st, err := h.svc.Stats(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, struct {
		seckill.Stats
		RedisGuard *stock.GuardStatus `json:"redis_guard,omitempty"`
	}{st, h.svc.RedisGuardStatus()})
}

// Instance returns the random name of this process (told by /healthz).
func (h *Handler) Instance() string { return h.instance }

// readyDetails is the detailed readiness answer, behind the admin token:
// ready when not draining and Redis answers; PostgreSQL is reported, not
// needed (purchases go on without it).
func (h *Handler) readyDetails(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	r := httpapi.Readiness{Status: "ready", Instance: h.instance, Draining: h.draining.Load(), Checks: h.svc.Checks(ctx)}
	for _, ch := range r.Checks {
		if ch.Needed && !ch.OK {
			r.Status = "unready"
		}
	}
	if r.Draining {
		r.Status = "unready"
	}
	return httpapi.WriteReadiness(c, r)
}

type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (h *Handler) register(c echo.Context) error {
	var req credentials
	if err := httpapi.BindJSON(c, BodyLimit, &req); err != nil {
		return err
	}
	id, err := h.svc.Register(c.Request().Context(), req.Username, req.Password)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, map[string]any{"user_id": id})
}

func (h *Handler) login(c echo.Context) error {
	var req credentials
	if err := httpapi.BindJSON(c, BodyLimit, &req); err != nil {
		return err
	}
	id, err := h.svc.Login(c.Request().Context(), req.Username, req.Password)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"user_id": id, "username": req.Username})
}

func (h *Handler) ensureUsers(c echo.Context) error {
	var req struct {
		Usernames []string `json:"usernames"`
	}
	if err := httpapi.BindJSON(c, 1<<20, &req); err != nil {
		return err
	}
	ids, err := h.svc.EnsureUsers(c.Request().Context(), req.Usernames)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"users": ids})
}
