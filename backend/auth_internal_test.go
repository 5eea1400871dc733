package backend

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkInternalCredential is the cost the internal credential adds to
// every backend request (docs/BENCHMARKS.md): the middleware alone, in
// front of a handler that does nothing, with the right token.
func BenchmarkInternalCredential(b *testing.B) {
	const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name, token string
	}{{"off", ""}, {"on", token}} {
		b.Run(tc.name, func(b *testing.B) {
			e := echo.New()
			mw := requireToken(tc.token, prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}), slog.Default())
			h := mw(func(c echo.Context) error { return nil })
			req := httptest.NewRequest(http.MethodPost, "/v1/reservations", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			rec := httptest.NewRecorder()
			c := e.NewContext(req, rec)
			b.ReportAllocs()
			for b.Loop() {
				if err := h(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
