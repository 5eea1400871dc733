package edge

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"seckill"
	"seckill/captcha"
	"seckill/clientip"
	"seckill/httpapi"
	"seckill/limit"
)

// Registration costs something (issue 15, docs/API.md "Registration"):
//
//	POST /api/register/challenge  → a challenge bound to the client's network
//	                                (its /24, IPv6 /48), single use; 429 at
//	                                once when a budget is already spent
//	POST /api/register            → the challenge's answer burns it; then one
//	                                take from the per-IP and per-network
//	                                account budgets (limit.Budget, shared by
//	                                every edge in Redis); then the backend
//	                                creates the account with its network
//
// Cheapest first: token bucket, body, name and password checks (no
// challenge burned for a typo), the challenge (one Redis script), the
// budgets (one Redis script), the backend. A refusal after the budget was
// taken and before an account exists (name taken, the backend's hashing
// full) gives the take back; a backend that gave no answer keeps it (the
// account may exist: fail closed).

// regBinding is what a registration challenge is bound to.
func regBinding(network string) string { return "register " + network }

// registration returns the registration settings in force.
func (e *Edge) registration() limit.Registration { return *e.regP.Load() }

// setRegistration installs registration settings (validated by the caller).
func (e *Edge) setRegistration(r limit.Registration) { e.regP.Store(&r) }

func (e *Edge) registerChallenge(c echo.Context) error {
	if _, err := e.gate(c, classRegister, 0, false); err != nil {
		return err
	}
	reg := e.registration()
	addr := e.ips().ClientIP(c.Request())
	network := clientip.Network(addr)
	// A client whose budget is spent is told now, before it does the
	// work. Only a hint: the take after the answer decides, so a Redis
	// failure here is left to it.
	if d, err := e.budget.Peek(c.Request().Context(), network, reg.Quotas(clientip.Key(addr), network)...); err == nil && !d.Allowed {
		d.SetHeaders(c.Response().Header())
		return budgetRefusal(d)
	}
	kind, diff := reg.Challenge, reg.Difficulty
	if kind == captcha.KindCaptcha {
		if err := e.allowCaptcha(); err != nil {
			return err
		}
		diff = 0
	}
	ch, err := e.ch.IssueBound(c.Request().Context(), kind, regBinding(network), diff)
	if err != nil {
		return err
	}
	return writeChallenge(c, ch)
}

// registerRequest is the body of POST /api/register.
type registerRequest struct {
	Username    string          `json:"username"`
	Password    string          `json:"password"`
	ChallengeID string          `json:"challenge_id"`
	Answer      json.RawMessage `json:"answer"`
}

func (e *Edge) register(c echo.Context) error {
	if _, err := e.gate(c, classRegister, 0, false); err != nil {
		return err
	}
	var req registerRequest
	if err := httpapi.BindJSON(c, e.cfg.BodyLimit, &req); err != nil {
		return err
	}
	if err := seckill.ValidateUsername(req.Username); err != nil {
		return err
	}
	if len(req.Password) < seckill.MinPassword || len(req.Password) > seckill.MaxPassword {
		return seckill.Errorf(seckill.EInvalid, "password must be %d to %d bytes", seckill.MinPassword, seckill.MaxPassword)
	}
	ctx := c.Request().Context()
	addr := e.ips().ClientIP(c.Request())
	network := clientip.Network(addr)
	if req.ChallengeID == "" {
		return seckill.Errorf(seckill.EChallengeFailed, "registration needs a solved challenge: POST /api/register/challenge first")
	}
	if err := e.ch.VerifyBound(ctx, req.ChallengeID, regBinding(network), answerString(req.Answer)); err != nil {
		return err
	}
	qs := e.registration().Quotas(clientip.Key(addr), network)
	attempt, err := attemptID()
	if err != nil {
		return err
	}
	d, err := e.budget.Take(ctx, network, attempt, qs...)
	if err != nil {
		// Redis away or stalled (or the client hung up): nothing was
		// granted, registration fails closed.
		return seckill.Unavailable(err, "accounts cannot be counted right now; retry shortly")
	}
	d.SetHeaders(c.Response().Header())
	if !d.Allowed {
		return budgetRefusal(d)
	}
	id, err := accountCall(ctx, e, func(ctx context.Context) (int64, error) {
		return e.be.Register(ctx, req.Username, req.Password, network)
	})
	if err != nil {
		if noAccount(err) {
			e.giveBack(ctx, network, attempt, qs)
			d.Remaining++
			d.SetHeaders(c.Response().Header())
		}
		return err
	}
	return c.JSON(http.StatusCreated, map[string]any{"user_id": id})
}

// budgetRefusal is the 429 of a spent account budget.
func budgetRefusal(d limit.Decision) error {
	return &httpapi.RetryError{
		Err:   seckill.Errorf(seckill.ERateLimited, "too many new accounts from your network (%s); retry after the delay", d.Rule),
		After: d.RetryAfter,
	}
}

// noAccount reports whether a failed registration surely made no account:
// a refusal with a code (username_taken, invalid, the accounts' pool or
// the backend's hashing full). A backend that gave no answer, or a call
// cut short, may have made one.
func noAccount(err error) bool {
	if seckill.BackendFailure(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	switch seckill.ErrorCode(err) {
	case seckill.EUsernameTaken, seckill.EInvalid, seckill.EOverloaded:
		return true
	}
	return false
}

// giveBack returns an attempt's take; a failure only leaves the budget
// stricter for one window, so it is logged.
func (e *Edge) giveBack(ctx context.Context, network, attempt string, qs []limit.Quota) {
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := e.budget.Give(gctx, network, attempt, qs...); err != nil {
		e.log.Warn("giving back an account budget", "network", network, "err", err)
	}
}

// attemptID names one registration request in the budget: made once per
// request, so a retried script counts it once.
func attemptID() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
