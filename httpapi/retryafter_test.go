package httpapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"seckill"
)

// TestEvery503HasRetryAfter: a 503 whose error names no delay still tells
// the client when to come back, and a dependency failure shows its code,
// never its cause.
func TestEvery503HasRetryAfter(t *testing.T) {
	e := echo.New()
	rec := httptest.NewRecorder()
	c := e.NewContext(httptest.NewRequest(http.MethodPost, "/", nil), rec)
	err := seckill.Unavailable(errors.New("dial tcp 10.0.0.7:6379: connection refused"), "challenges cannot be issued right now; retry shortly")
	_ = WriteError(c, nil, err)
	if rec.Code != 503 || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	body := rec.Body.String()
	if !strings.Contains(body, `"code":"dependency_unavailable"`) || !strings.Contains(body, `"retry_after":1`) || strings.Contains(body, "10.0.0.7") {
		t.Fatal(body)
	}
}
