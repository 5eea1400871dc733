package httpapi

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// series lists the label sets of every series the registry holds, as
// "name{l=v,...}".
func series(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out = append(out, mf.GetName()+"{"+strings.Join(ls, ",")+"}")
		}
	}
	sort.Strings(out)
	return out
}

func randToken(r *rand.Rand, n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// TestMetricsLabelsBounded: 1,000 invented methods and 1,000 random paths
// add a fixed handful of series, not one per method or path (issue 13 H1:
// each was a series kept forever, 80 MB of heap per 1,000 requests).
func TestMetricsLabelsBounded(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := echo.New()
	e.HTTPErrorHandler = ErrorHandler(nil)
	e.Use(NewMetrics(reg, "t").Middleware())
	ok := func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }
	e.GET("/items/:id", ok)
	e.POST("/items/:id/buy", ok)

	r := rand.New(rand.NewPCG(1, 2))
	do := func(method, path string) int {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code
	}
	// Baseline: the legitimate traffic.
	do(http.MethodGet, "/items/1")
	do(http.MethodPost, "/items/2/buy")
	base := series(t, reg)
	if len(base) != 4 { // 2 routes x (requests, duration)
		t.Fatalf("baseline series = %d, want 4: %v", len(base), base)
	}

	for i := range 1000 {
		m := "X" + randToken(r, 10)
		if got := do(m, fmt.Sprintf("/items/%d", i+1)); got != http.StatusMethodNotAllowed {
			t.Fatalf("method %s: status %d, want 405", m, got)
		}
	}
	for range 1000 {
		p := "/" + randToken(r, 12) + "/" + randToken(r, 8)
		if got := do(http.MethodGet, p); got != http.StatusNotFound {
			t.Fatalf("GET %s: status %d, want 404", p, got)
		}
	}
	for i := range 1000 { // random ids on a real route: one route template
		do(http.MethodGet, fmt.Sprintf("/items/%d", r.Int64()+int64(i)))
	}
	got := series(t, reg)
	want := []string{
		"t_http_request_duration_seconds{route=/items/:id/buy}",
		"t_http_request_duration_seconds{route=/items/:id}",
		"t_http_request_duration_seconds{route=unmatched}",
		"t_http_requests_total{code=204,method=GET,route=/items/:id}",
		"t_http_requests_total{code=204,method=POST,route=/items/:id/buy}",
		"t_http_requests_total{code=404,method=GET,route=unmatched}",
		"t_http_requests_total{code=405,method=other,route=/items/:id}",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("series after 3,000 hostile requests (%d):\n%s\nwant (%d):\n%s", len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
}

func TestMethodLabel(t *testing.T) {
	t.Parallel()
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		if got := MethodLabel(m); got != m {
			t.Errorf("MethodLabel(%q) = %q", m, got)
		}
	}
	for _, m := range []string{"get", "TRACE", "CONNECT", "PROPFIND", "", "X" + strings.Repeat("A", 1000)} {
		if got := MethodLabel(m); got != "other" {
			t.Errorf("MethodLabel(%.20q) = %q, want other", m, got)
		}
	}
}
