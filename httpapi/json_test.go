package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"seckill"
)

type nested struct {
	A     int64 `json:"a"`
	Inner struct {
		X []map[string]int `json:"x"`
	} `json:"inner"`
}

func bindStrict(raw string, strict bool) error {
	e := echo.New()
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(raw))
	c := e.NewContext(req, httptest.NewRecorder())
	var v nested
	if strict {
		return BindJSONStrict(c, 1<<10, &v)
	}
	return BindJSON(c, 1<<10, &v)
}

// Issue 13 (low): a key named twice is a 400 everywhere: the decoder took
// the last one silently, so two parsers of one body could disagree.
func TestBindJSONDuplicateKeys(t *testing.T) {
	t.Parallel()
	cases := []struct {
		desc, raw, detail string
	}{
		{"top level", `{"a":1,"a":2}`, `key "a" appears twice`},
		{"case folded", `{"a":1,"A":2}`, `key "A" appears twice`},
		{"nested object", `{"inner":{"x":[],"x":[]}}`, `key "x" appears twice`},
		{"inside an array", `{"inner":{"x":[{"k":1,"k":2}]}}`, `key "k" appears twice`},
		{"unknown keys twice", `{"zz":1,"zz":2}`, `key "zz" appears twice`},
	}
	for _, strict := range []bool{false, true} {
		for _, tc := range cases {
			if strict && tc.desc == "unknown keys twice" {
				continue // refused as unknown first
			}
			err := bindStrict(tc.raw, strict)
			if seckill.ErrorCode(err) != seckill.EInvalid || !strings.Contains(seckill.ErrorMessage(err), tc.detail) {
				t.Errorf("strict=%v %s: %v, want invalid %q", strict, tc.desc, err, tc.detail)
			}
		}
	}
	// The same keys in different objects are fine.
	if err := bindStrict(`{"a":1,"inner":{"x":[{"a":1},{"a":2}]}}`, true); err != nil {
		t.Fatalf("distinct objects: %v", err)
	}
	// Deep nesting is refused, not walked forever.
	deep := `{"inner":{"x":[` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `]}}`
	if err := bindStrict(deep, false); seckill.ErrorCode(err) != seckill.EInvalid {
		t.Fatalf("deep nesting: %v", err)
	}
}

// Issue 14 F22: an unknown field is a 400 on the admin API (strict), and
// still accepted on the public API.
func TestBindJSONUnknownFields(t *testing.T) {
	t.Parallel()
	if err := bindStrict(`{"a":1,"path_bindng":false}`, false); err != nil {
		t.Fatalf("public: %v", err)
	}
	err := bindStrict(`{"a":1,"path_bindng":false}`, true)
	if seckill.ErrorCode(err) != seckill.EInvalid || seckill.ErrorMessage(err) != `unknown field "path_bindng"` {
		t.Fatalf("strict: %v", err)
	}
}
