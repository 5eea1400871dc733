package edge

import (
	"context"
	"errors"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"seckill"
	"seckill/httpapi"
	"seckill/username"
)

// Defaults of the security settings in Config.
const (
	DefaultAccountsInFlight   = 32
	DefaultLoginFailures      = 10
	DefaultLoginFailureWindow = 15 * time.Minute
	DefaultCaptchaRate        = 100
	DefaultRevocationSync     = 2 * time.Second
)

// ValidateTrustedOrigins checks --trusted-origins values (scheme://host[:port]).
func ValidateTrustedOrigins(origins []string) error {
	_, err := newOriginGuard(origins)
	return err
}

// setupSecurity builds the edge's security controls from its config
// (issue 13: CSRF, revocation, key rotation, account slots, login
// throttling, captcha bucket, admin throttling and audit).
func (e *Edge) setupSecurity(cfg Config, d Deps) {
	og, err := newOriginGuard(cfg.TrustedOrigins)
	if err != nil {
		e.log.Error("ignoring the trusted origins", "err", err) // cmd/seckill refuses them first
		og, _ = newOriginGuard(nil)
	}
	e.origins = og
	if len(cfg.PreviousSessionSecret) > 0 {
		overlap := cfg.SessionKeyOverlap
		if overlap <= 0 {
			overlap = e.sessions.ttl
		}
		e.sessions.AcceptPrevious(cfg.PreviousSessionSecret, time.Now().Add(overlap))
	}
	if e.cfg.RevocationSync <= 0 {
		e.cfg.RevocationSync = DefaultRevocationSync
	}
	e.revoker = &revoker{rdb: d.Redis, prefix: d.Prefix, channel: e.channel(), sessions: e.sessions,
		ttl: e.sessions.ttl, log: e.log, version: -1}
	n := cfg.AccountsInFlight
	if n <= 0 {
		n = DefaultAccountsInFlight
	}
	breaking := true
	if bo, ok := d.Backend.(BreakerOwner); ok && bo.OwnsBreakers() {
		breaking = false
	}
	e.acctGuard = newGuard(n, cfg.Breaker, breaking, nil)
	e.acctBackoff = accountsBackoff
	lf := &loginFailures{rdb: d.Redis, prefix: d.Prefix, max: int64(cfg.LoginFailures), window: cfg.LoginFailureWindow}
	if lf.max <= 0 {
		lf.max = DefaultLoginFailures
	}
	if lf.window <= 0 {
		lf.window = DefaultLoginFailureWindow
	}
	e.loginFails = lf
	cr, cb := cfg.CaptchaRate, cfg.CaptchaBurst
	if cr <= 0 {
		cr = DefaultCaptchaRate
	}
	if cb <= 0 {
		cb = int(2 * cr)
	}
	e.captchaLim = rate.NewLimiter(rate.Limit(cr), cb)
	e.adminFails = newAdminFailures(e.log)
	e.audit = &auditLog{rdb: d.Redis, key: d.Prefix + "edge:audit", log: e.log}
}

// accountsBackoff is how long the edge stops forwarding logins and
// registrations after the backend said its password hashing is full: the
// refused ones then cost the backend nothing (two HTTP hops and a JSON
// decode each), and about one call per window still probes it.
const accountsBackoff = 50 * time.Millisecond

var errAccountsBusy = seckill.Errorf(seckill.EOverloaded, "too many logins and registrations in progress; retry shortly")

// accountCall runs a register or login call under the accounts' own slot
// pool: a login flood sheds itself, never the purchases' slots.
func accountCall[T any](ctx context.Context, e *Edge, f func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	if time.Now().UnixNano() < e.acctBusyUntil.Load() {
		return zero, &httpapi.RetryError{Err: errAccountsBusy, After: time.Second}
	}
	v, err := do(ctx, e.acctGuard, callRead, f)
	if seckill.ErrorCode(err) == seckill.EOverloaded {
		var re *httpapi.RetryError
		if !errors.As(err, &re) { // the backend's answer, not our own pool's
			e.acctBusyUntil.Store(time.Now().Add(e.acctBackoff).UnixNano())
		}
		return v, &httpapi.RetryError{Err: errAccountsBusy, After: time.Second}
	}
	return v, err
}

// loginFailures throttles password guessing per account, across edges:
// after max failed logins within window, the account's logins get 429
// until the window ends (a success clears the count). The count lives in
// Redis; when Redis is away the check is skipped (the per-IP buckets and
// the backend's hashing bound still hold).
type loginFailures struct {
	rdb    redis.UniversalClient
	prefix string
	max    int64
	window time.Duration
}

// key counts failures per account, not per spelling: every name with the
// same username.Key ("ALICE", "aIice") logs in to one account.
func (l *loginFailures) key(name string) string {
	return l.prefix + "edge:loginfail:" + username.Key(name)
}

// check refuses a login for an account over its failure budget.
func (l *loginFailures) check(ctx context.Context, username string) error {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var n *redis.StringCmd
	var ttl *redis.DurationCmd
	if _, err := l.rdb.Pipelined(cctx, func(p redis.Pipeliner) error {
		n = p.Get(cctx, l.key(username))
		ttl = p.PTTL(cctx, l.key(username))
		return nil
	}); err != nil && err != redis.Nil {
		return nil // fail open: see the type's comment
	}
	if c, _ := n.Int64(); c >= l.max {
		after := ttl.Val()
		if after <= 0 {
			after = time.Second
		}
		return &httpapi.RetryError{Err: seckill.Errorf(seckill.ERateLimited,
			"too many failed logins for this account; retry after the delay"), After: after}
	}
	return nil
}

// failed counts a failed login.
func (l *loginFailures) failed(ctx context.Context, username string) {
	k := l.key(username)
	_, _ = l.rdb.TxPipelined(context.WithoutCancel(ctx), func(p redis.Pipeliner) error {
		p.Incr(ctx, k)
		p.ExpireNX(ctx, k, l.window)
		return nil
	})
}

// succeeded clears the account's count.
func (l *loginFailures) succeeded(ctx context.Context, username string) {
	_ = l.rdb.Del(context.WithoutCancel(ctx), l.key(username)).Err()
}

// allowCaptcha takes a token from the captcha images' own bucket.
func (e *Edge) allowCaptcha() error {
	if e.captchaLim.Allow() {
		return nil
	}
	return &httpapi.RetryError{Err: seckill.Errorf(seckill.EOverloaded,
		"too many captchas being drawn on this edge; retry shortly"), After: time.Second}
}

// logout revokes the session it carries (on every edge within a second)
// and clears the cookie. Without a valid session it only clears the cookie.
func (e *Edge) logout(c echo.Context) error {
	ck := e.sessions.Cookie("", time.Unix(0, 0))
	ck.MaxAge = -1
	c.SetCookie(ck)
	ses, err := e.sessions.FromRequest(c.Request())
	if err != nil {
		return c.NoContent(204)
	}
	if err := e.revoker.revokeToken(c.Request().Context(), ses); err != nil {
		return err
	}
	return c.NoContent(204)
}

// logoutEverywhere refuses every token of the user issued until now.
func (e *Edge) logoutEverywhere(c echo.Context) error {
	ses, err := e.sessions.FromRequest(c.Request())
	if err != nil {
		return err
	}
	ck := e.sessions.Cookie("", time.Unix(0, 0))
	ck.MaxAge = -1
	c.SetCookie(ck)
	if err := e.revoker.revokeUser(c.Request().Context(), ses.UserID, e.sessions.now()); err != nil {
		return err
	}
	return c.NoContent(204)
}

// revokeUser is the admin's "log this user out everywhere".
func (e *Edge) revokeUser(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	at := e.sessions.now()
	if err := e.revoker.revokeUser(c.Request().Context(), id, at); err != nil {
		return err
	}
	return c.JSON(200, map[string]any{"user_id": id, "not_before": at.UTC()})
}
