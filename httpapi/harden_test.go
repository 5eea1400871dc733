package httpapi

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"seckill"
)

// HeaderStatus sends GET path to addr with one header of n bytes over a
// raw connection (the client keeps writing while the server answers) and
// returns the status of the answer.
func headerStatus(t *testing.T, addr, path string, n int) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		req := "GET " + path + " HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", n) + "\r\nConnection: close\r\n\r\n"
		_, _ = io.WriteString(conn, req)
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to a %d-byte header: %v", n, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A server from NewServer answers 431 to headers over MaxHeaderBytes (Go's
// default would take 1 MiB per connection) and serves ordinary ones.
func TestNewServerBoundsHeaders(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	if srv.MaxHeaderBytes != 16<<10 || srv.ReadHeaderTimeout != 5*time.Second || srv.IdleTimeout != 2*time.Minute {
		t.Fatalf("server limits: %d bytes, %v, %v", srv.MaxHeaderBytes, srv.ReadHeaderTimeout, srv.IdleTimeout)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	addr := ln.Addr().String()
	for _, tc := range []struct{ n, want int }{
		{12 << 10, http.StatusNoContent},
		{24 << 10, http.StatusRequestHeaderFieldsTooLarge}, // 16 KiB + Go's 4 KiB slack < 24 KiB
		{200 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		if got := headerStatus(t, addr, "/", tc.n); got != tc.want {
			t.Errorf("%d-byte header: status %d, want %d", tc.n, got, tc.want)
		}
	}
}

// APIHeaders: every answer, errors included, carries nosniff and
// no-store; a handler that sets its own Cache-Control keeps it.
func TestAPIHeaders(t *testing.T) {
	t.Parallel()
	e := echo.New()
	e.HTTPErrorHandler = ErrorHandler(nil)
	e.Use(APIHeaders())
	e.GET("/ok", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]int{"a": 1}) })
	e.GET("/fail", func(echo.Context) error {
		return &RetryError{Err: seckill.Errorf(seckill.EOverloaded, "busy"), After: time.Second}
	})
	e.GET("/asset", func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "public, max-age=60")
		return c.String(http.StatusOK, "x")
	})
	for _, tc := range []struct {
		method, path, cache string
		status              int
	}{
		{http.MethodGet, "/ok", "no-store", http.StatusOK},
		{http.MethodGet, "/fail", "no-store", http.StatusServiceUnavailable},
		{http.MethodGet, "/nowhere", "no-store", http.StatusNotFound},
		{http.MethodPost, "/ok", "no-store", http.StatusMethodNotAllowed},
		{http.MethodGet, "/asset", "public, max-age=60", http.StatusOK},
	} {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.status || rec.Header().Get("X-Content-Type-Options") != "nosniff" || rec.Header().Get("Cache-Control") != tc.cache {
			t.Errorf("%s %s: %d, nosniff %q, cache %q; want %d, nosniff, %q", tc.method, tc.path, rec.Code,
				rec.Header().Get("X-Content-Type-Options"), rec.Header().Get("Cache-Control"), tc.status, tc.cache)
		}
	}
}

// No problem detail names a Go type: bodies of the wrong shape are
// described with JSON field names and JSON types.
func TestErrorDetailsNameNoGoTypes(t *testing.T) {
	t.Parallel()
	type inner struct {
		X []int `json:"x"`
	}
	type reserveRequest struct {
		ItemID  int64     `json:"item_id"`
		Price   *float64  `json:"price"`
		Name    string    `json:"name"`
		Live    bool      `json:"live"`
		Starts  time.Time `json:"starts_at"`
		Nested  inner     `json:"nested"`
		Options map[string]string
	}
	e := echo.New()
	e.HTTPErrorHandler = ErrorHandler(nil)
	e.POST("/", func(c echo.Context) error {
		var v reserveRequest
		if err := BindJSON(c, 1<<10, &v); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	})
	cases := map[string]string{
		`{"item_id":"x"}`:          `field "item_id" must be an integer in range`,
		`{"item_id":1.5}`:          `field "item_id" must be an integer in range`,
		`{"item_id":1e40}`:         `field "item_id" must be an integer in range`,
		`{"price":"x"}`:            `field "price" must be a number`,
		`{"name":5}`:               `field "name" must be a string`,
		`{"live":"yes"}`:           `field "live" must be true or false`,
		`{"nested":{"x":["q"]}}`:   `field "nested.x" must be an integer in range`,
		`{"nested":5}`:             `field "nested" must be an object`,
		`{"Options":[1]}`:          `field "Options" must be an object`,
		`{"starts_at":"tomorrow"}`: `a time is not in RFC 3339 form (2006-01-02T15:04:05Z)`,
		`{"starts_at":5}`:          `malformed JSON: a value has the wrong type or form`,
		`[1]`:                      `the body must be a JSON object`,
		`"str"`:                    `the body must be a JSON object`,
		`{"item_id" 1}`:            `malformed JSON at byte 12`,
		`{"item_id":`:              `malformed JSON: the body ends too early`,
		`{"item_id":1}{}`:          `trailing data after the JSON object`,
	}
	for body, want := range cases {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body)))
		var p Problem
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if rec.Code != http.StatusBadRequest || p.Code != "invalid" || p.Detail != want {
			t.Errorf("%s: %d %s %q, want 400 invalid %q", body, rec.Code, p.Code, p.Detail, want)
		}
		for _, leak := range []string{"Go ", "int64", "float64", "reserveRequest", "httpapi.", "time.Time", "UnmarshalJSON", "json:"} {
			if strings.Contains(rec.Body.String(), leak) {
				t.Errorf("%s: the answer names %q: %s", body, leak, rec.Body.String())
			}
		}
	}
}
