// Package httpapi holds what every HTTP listener of seckill shares: the
// RFC 9457 problem+json error writer and Status, the one place where error
// codes become HTTP statuses; a bounded JSON body reader, request metrics,
// the http.Server every listener is built with, and the API answer headers.
package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"seckill"
)

// Problem is an RFC 9457 problem detail with the machine-readable code.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Code   seckill.Code `json:"code"`
	// RetryAfter is in seconds, also sent as the Retry-After header.
	RetryAfter int `json:"retry_after,omitempty"`
}

// RetryError is an error that tells the client when to come back.
type RetryError struct {
	Err   error
	After time.Duration
}

func (e *RetryError) Error() string { return e.Err.Error() }
func (e *RetryError) Unwrap() error { return e.Err }

// ErrorHandler returns the echo error handler: every error, ours or
// echo's (404 route, 405 method, 413 body), becomes problem+json.
func ErrorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		_ = WriteError(c, log, err)
	}
}

// WriteError writes err as problem+json.
func WriteError(c echo.Context, log *slog.Logger, err error) error {
	code := seckill.ErrorCode(err)
	msg := seckill.ErrorMessage(err)
	var he *echo.HTTPError
	if code == seckill.EInternal && errors.As(err, &he) {
		code, msg = echoCode(he)
	}
	status := Status(code)
	if status >= 500 && code == seckill.EInternal && log != nil {
		log.Error("request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
	}
	p := Problem{
		Type:   "https://seckill.dev/problems/" + string(code),
		Title:  http.StatusText(status),
		Status: status,
		Detail: msg,
		Code:   code,
	}
	var re *RetryError
	hasRetry := errors.As(err, &re)
	if hasRetry || status == http.StatusServiceUnavailable {
		// Every 503 tells the client when to come back: 1 s unless the
		// error says otherwise.
		secs := 1
		if hasRetry {
			secs = max(int((re.After+time.Second-1)/time.Second), 1)
		}
		p.RetryAfter = secs
		c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	}
	var held *seckill.HeldError
	if errors.As(err, &held) && held.OrderRef != "" {
		// already_bought names the order the user holds.
		c.Response().Header().Set("X-Order-Ref", held.OrderRef)
	}
	body, _ := json.Marshal(p)
	if c.Request().Method == http.MethodHead {
		return c.NoContent(status)
	}
	// A trailing newline, as c.JSON writes: curl output ends its line.
	return c.Blob(status, "application/problem+json", append(body, '\n'))
}

func echoCode(he *echo.HTTPError) (seckill.Code, string) {
	msg := http.StatusText(he.Code)
	switch he.Code {
	case http.StatusNotFound:
		return seckill.ENotFound, "no such route"
	case http.StatusMethodNotAllowed:
		return seckill.EMethod, "method not allowed"
	case http.StatusRequestEntityTooLarge:
		return seckill.ETooLarge, "request body too large"
	case http.StatusUnauthorized:
		return seckill.EUnauthorized, msg
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return seckill.EInvalid, msg
	}
	return seckill.EInternal, msg
}

// ParamID parses a positive integer path parameter.
func ParamID(c echo.Context, name string) (int64, error) {
	v, err := strconv.ParseInt(c.Param(name), 10, 64)
	if err != nil || v <= 0 {
		return 0, seckill.Errorf(seckill.EInvalid, "%s must be a positive integer", name)
	}
	return v, nil
}
