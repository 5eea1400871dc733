package httpapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"seckill"
)

type body struct {
	A int64  `json:"a"`
	B string `json:"b"`
}

func bind(raw string, limit int64) error {
	e := echo.New()
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(raw))
	c := e.NewContext(req, httptest.NewRecorder())
	var v body
	return BindJSON(c, limit, &v)
}

func TestBindJSON(t *testing.T) {
	t.Parallel()
	cases := []struct {
		desc, raw string
		code      seckill.Code
	}{
		{"ok", `{"a":1,"b":"x"}`, ""},
		{"empty", ``, seckill.EInvalid},
		{"truncated", `{"a":`, seckill.EInvalid},
		{"wrong type", `{"a":"x"}`, seckill.EInvalid},
		{"trailing", `{"a":1}{}`, seckill.EInvalid},
		{"array", `[1]`, seckill.EInvalid},
		{"too large", `{"b":"` + strings.Repeat("x", 200) + `"}`, seckill.ETooLarge},
	}
	for _, tc := range cases {
		err := bind(tc.raw, 100)
		if got := codeOf(err); got != tc.code {
			t.Errorf("%s: %v, want %q", tc.desc, err, tc.code)
		}
	}
}

func codeOf(err error) seckill.Code {
	if err == nil {
		return ""
	}
	return seckill.ErrorCode(err)
}

// FuzzBindJSON: any body gives either a value or an invalid/too_large
// error; never a panic, never an internal error.
func FuzzBindJSON(f *testing.F) {
	for _, s := range []string{`{"a":1}`, ``, `{`, `[]`, `{"a":1e999}`, `{"b":"\ud800"}`, "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := bind(raw, 64)
		if c := codeOf(err); c != "" && c != seckill.EInvalid && c != seckill.ETooLarge {
			t.Fatalf("%q: code %q", raw, c)
		}
	})
}

func TestWriteErrorRetryAfter(t *testing.T) {
	t.Parallel()
	e := echo.New()
	rec := httptest.NewRecorder()
	c := e.NewContext(httptest.NewRequest(http.MethodGet, "/", nil), rec)
	err := &RetryError{Err: seckill.Errorf(seckill.EOverloaded, "busy"), After: 1500 * time.Millisecond}
	_ = WriteError(c, nil, err)
	if rec.Code != 503 || rec.Header().Get("Retry-After") != "2" || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	if !strings.Contains(rec.Body.String(), `"code":"overloaded"`) {
		t.Fatal(rec.Body.String())
	}
	// issue 14 F23: a problem ends its line, as every JSON answer does
	if !strings.HasSuffix(rec.Body.String(), "}\n") {
		t.Fatalf("the problem does not end with a newline: %q", rec.Body.String())
	}
	rec = httptest.NewRecorder()
	c = e.NewContext(httptest.NewRequest(http.MethodGet, "/", nil), rec)
	_ = WriteError(c, nil, errors.New("secret database detail"))
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "secret") {
		t.Fatalf("internal error leaked: %d %s", rec.Code, rec.Body.String())
	}
}
