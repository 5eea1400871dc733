package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// NewInstanceID returns a random name for one process: /healthz tells it,
// so a tool can tell its own process from a stranger on the same port.
func NewInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Health is the answer of /healthz (docs/API.md "Health"): the process
// lives, and which one it is.
type Health struct {
	Status    string    `json:"status"`
	Service   string    `json:"service"`
	Instance  string    `json:"instance"`
	StartedAt time.Time `json:"started_at"`
}

// Healthz returns the /healthz handler of one process.
func Healthz(service, instance string) echo.HandlerFunc {
	h := Health{Status: "ok", Service: service, Instance: instance, StartedAt: time.Now().UTC()}
	return func(c echo.Context) error { return c.JSON(http.StatusOK, h) }
}

// ReadyTTL is how long the public /readyz keeps a "ready" verdict;
// UnreadyTTL a "not ready" one (shorter: a process that just became ready,
// its catalogue loaded, is told at once).
const (
	ReadyTTL   = time.Second
	UnreadyTTL = 100 * time.Millisecond
)

// ReadyCache keeps a readiness verdict (ReadyTTL, UnreadyTTL), so the
// public /readyz costs at most one dependency check per TTL however often
// it is asked.
type ReadyCache struct {
	verdict func(ctx context.Context) bool
	mu      sync.Mutex
	at      time.Time
	ok      bool
}

// NewReadyCache caches verdict.
func NewReadyCache(verdict func(ctx context.Context) bool) *ReadyCache {
	return &ReadyCache{verdict: verdict}
}

// Ready returns the verdict, asked again at most once per TTL.
func (r *ReadyCache) Ready(ctx context.Context) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ttl := ReadyTTL
	if !r.ok {
		ttl = UnreadyTTL
	}
	if now := time.Now(); r.at.IsZero() || now.Sub(r.at) >= ttl {
		r.ok, r.at = r.verdict(ctx), now
	}
	return r.ok
}

// Invalidate makes the next Ready ask again (a process starting to drain).
func (r *ReadyCache) Invalidate() {
	r.mu.Lock()
	r.at = time.Time{}
	r.mu.Unlock()
}

// PublicReadyz returns the public /readyz handler: 200 {"status":"ready"}
// or 503 {"status":"unready"} with Retry-After, nothing more.
func PublicReadyz(r *ReadyCache) echo.HandlerFunc {
	return func(c echo.Context) error {
		if r.Ready(c.Request().Context()) {
			return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
		}
		c.Response().Header().Set("Retry-After", "1")
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unready"})
	}
}

// Check is the state of one thing readiness depends on or reports.
type Check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Needed: the process is unready without it.
	Needed bool   `json:"needed"`
	Detail string `json:"detail,omitempty"`
}

// Readiness is the detailed answer of /readyz on an admin listener.
type Readiness struct {
	Status   string  `json:"status"` // ready, unready
	Instance string  `json:"instance"`
	Draining bool    `json:"draining"`
	Checks   []Check `json:"checks"`
}

// WriteReadiness writes a detailed answer: 200 when ready, else 503 with
// Retry-After.
func WriteReadiness(c echo.Context, r Readiness) error {
	if r.Status == "ready" {
		return c.JSON(http.StatusOK, r)
	}
	c.Response().Header().Set("Retry-After", "1")
	return c.JSON(http.StatusServiceUnavailable, r)
}
