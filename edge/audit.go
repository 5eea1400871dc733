package edge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/httpapi"
)

// Admin-token throttling: a client address with AdminMaxFailures wrong or
// missing admin tokens within AdminFailureWindow gets 429 on every admin
// route until the window ends, even with the right token (a guesser
// cannot tell when it found it). Every failure is logged at WARN.
const (
	AdminMaxFailures   = 10
	AdminFailureWindow = time.Minute
	maxAdminFailIPs    = 10_000
	// AuditKeep is how many admin writes the audit list keeps.
	AuditKeep = 1000
)

type adminFailures struct {
	log *slog.Logger
	now func() time.Time
	mu  sync.Mutex
	by  map[string]*failWindow
}

type failWindow struct {
	start time.Time
	n     int
}

func newAdminFailures(log *slog.Logger) *adminFailures {
	return &adminFailures{log: log, now: time.Now, by: map[string]*failWindow{}}
}

// blocked reports how long an address is still refused (0: not refused).
func (a *adminFailures) blocked(ip string) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	w, ok := a.by[ip]
	if !ok {
		return 0
	}
	left := AdminFailureWindow - a.now().Sub(w.start)
	if left <= 0 {
		delete(a.by, ip)
		return 0
	}
	if w.n >= AdminMaxFailures {
		return left
	}
	return 0
}

// failed counts and logs a failure.
func (a *adminFailures) failed(ip, method, path string) {
	a.mu.Lock()
	now := a.now()
	w, ok := a.by[ip]
	if !ok || now.Sub(w.start) >= AdminFailureWindow {
		if len(a.by) >= maxAdminFailIPs {
			clear(a.by)
		}
		w = &failWindow{start: now}
		a.by[ip] = w
	}
	w.n++
	n := w.n
	a.mu.Unlock()
	a.log.Warn("admin token refused", "client", ip, "method", method, "path", path, "failures_in_window", n,
		"throttled", n >= AdminMaxFailures)
}

// requireAdmin checks the admin token, throttling addresses that keep
// getting it wrong.
func (e *Edge) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		ip := e.ips().ClientIP(r).String()
		if left := e.adminFails.blocked(ip); left > 0 {
			return &httpapi.RetryError{Err: seckill.Errorf(seckill.ERateLimited,
				"too many wrong admin tokens from this address; retry after the delay"), After: left}
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if e.cfg.AdminToken == "" || !ok || subtle.ConstantTimeCompare([]byte(got), []byte(e.cfg.AdminToken)) != 1 {
			e.adminFails.failed(ip, r.Method, r.URL.Path)
			if !ok {
				return seckill.Errorf(seckill.EUnauthorized, "admin token required: send Authorization: Bearer <admin token>")
			}
			return seckill.Errorf(seckill.EUnauthorized, "admin token required (the one sent is wrong)")
		}
		return next(c)
	}
}

// AuditEntry is one admin write: who, what, when and how it ended.
type AuditEntry struct {
	Time time.Time `json:"time"`
	// Actor: the admin token's fingerprint (8 hex digits of its hash; one
	// token is shared, so the address and user agent tell admins apart),
	// the client address and its User-Agent.
	TokenID   string `json:"token_id"`
	Client    string `json:"client"`
	UserAgent string `json:"user_agent,omitempty"`
	Method    string `json:"method"`
	Route     string `json:"route"`
	Path      string `json:"path"`
	Status    int    `json:"status"`
	Code      string `json:"code,omitempty"`
	Edge      string `json:"edge"`
}

// auditLog records admin writes: a log line each, and the newest
// AuditKeep in a Redis list every edge shares (GET /admin/audit).
type auditLog struct {
	rdb redis.UniversalClient
	key string
	log *slog.Logger
}

func (a *auditLog) record(ctx context.Context, en AuditEntry) {
	a.log.Info("admin audit", "token_id", en.TokenID, "client", en.Client, "method", en.Method, "path", en.Path,
		"status", en.Status, "code", en.Code)
	raw, _ := json.Marshal(en)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if _, err := a.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, a.key, raw)
		p.LTrim(ctx, a.key, 0, AuditKeep-1)
		return nil
	}); err != nil {
		a.log.Warn("storing an audit record (the log line above is the record)", "err", err)
	}
}

func (a *auditLog) list(ctx context.Context, n int) ([]AuditEntry, error) {
	raws, err := a.rdb.LRange(ctx, a.key, 0, int64(n-1)).Result()
	if err != nil {
		return nil, seckill.Unavailable(fmt.Errorf("reading the audit list: %w", err), "the audit list cannot be read right now; retry shortly")
	}
	out := make([]AuditEntry, 0, len(raws))
	for _, r := range raws {
		var en AuditEntry
		if json.Unmarshal([]byte(r), &en) == nil {
			out = append(out, en)
		}
	}
	return out, nil
}

func tokenID(token string) string {
	h := sha256.Sum256([]byte("seckill admin token id\x00" + token))
	return hex.EncodeToString(h[:4])
}

// auditWrites records every admin request that may change something
// (any method but GET and HEAD), after it ran.
func (e *Edge) auditWrites(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return next(c)
		}
		err := next(c)
		status, code := c.Response().Status, ""
		if err != nil {
			code = string(seckill.ErrorCode(err))
			status = httpapi.Status(seckill.ErrorCode(err))
			var he *echo.HTTPError
			if code == string(seckill.EInternal) && errors.As(err, &he) {
				status, code = he.Code, ""
			}
		}
		e.audit.record(r.Context(), AuditEntry{
			Time: time.Now().UTC(), TokenID: tokenID(e.cfg.AdminToken), Client: e.ips().ClientIP(r).String(),
			UserAgent: truncate(r.UserAgent(), 200), Method: r.Method, Route: c.Path(), Path: truncate(r.URL.Path, 200),
			Status: status, Code: code, Edge: e.instance,
		})
		return err
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// auditList is GET /admin/audit?limit=N: the newest admin writes first.
func (e *Edge) auditList(c echo.Context) error {
	n := 100
	if v := c.QueryParam("limit"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > AuditKeep {
			return seckill.Errorf(seckill.EInvalid, "limit must be 1 to %d", AuditKeep)
		}
	}
	list, err := e.audit.list(c.Request().Context(), n)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"entries": list})
}
