// Package httpapi holds what every HTTP listener of seckill shares: the
// RFC 9457 problem+json error writer and Status, the one place where error
// codes become HTTP statuses; a bounded JSON body reader, request metrics,
// the http.Server every listener is built with, and the API answer headers.
package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
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
	return c.Blob(status, "application/problem+json", body)
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

// BindJSON decodes a JSON body of at most limit bytes into v. An oversized
// body is too_large, anything that is not one JSON object of the right
// shape is invalid; never a 5xx.
func BindJSON(c echo.Context, limit int64, v any) error {
	r := http.MaxBytesReader(c.Response(), c.Request().Body, limit)
	dec := json.NewDecoder(r)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return seckill.Errorf(seckill.ETooLarge, "request body over %d bytes", limit)
		}
		if errors.Is(err, io.EOF) {
			return seckill.Errorf(seckill.EInvalid, "request body is empty")
		}
		return seckill.Errorf(seckill.EInvalid, "%s", jsonDetail(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return seckill.Errorf(seckill.ETooLarge, "request body over %d bytes", limit)
		}
		return seckill.Errorf(seckill.EInvalid, "trailing data after the JSON object")
	}
	return nil
}

// jsonDetail says what is wrong with a JSON body in the client's terms:
// JSON field names and JSON types, never the decoder's own message, which
// names Go types ("Go struct field reserveRequest.item_id of type int64").
func jsonDetail(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	var pe *time.ParseError
	switch {
	case errors.As(err, &te):
		if te.Field == "" {
			return "the body must be a JSON object"
		}
		return fmt.Sprintf("field %q must be %s", te.Field, jsonKind(te.Type))
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case errors.As(err, &pe):
		return "a time is not in RFC 3339 form (2006-01-02T15:04:05Z)"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: the body ends too early"
	}
	return "malformed JSON: a value has the wrong type or form"
}

// jsonKind names the JSON type a Go type is decoded from.
func jsonKind(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "of another type"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "of another type"
}

// ParamID parses a positive integer path parameter.
func ParamID(c echo.Context, name string) (int64, error) {
	v, err := strconv.ParseInt(c.Param(name), 10, 64)
	if err != nil || v <= 0 {
		return 0, seckill.Errorf(seckill.EInvalid, "%s must be a positive integer", name)
	}
	return v, nil
}
