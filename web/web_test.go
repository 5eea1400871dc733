package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var assetRef = regexp.MustCompile(`(?:href|src)="([^"]*/assets/[^"]+)"`)

// checkPage: the page is no-cache with a CSP, every asset it names is
// served, cached for good and revalidates with its ETag.
func checkPage(t *testing.T, h http.Handler, page, prefix string) {
	r := get(t, h, "GET", page, nil)
	if r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET %s: %d %s", page, r.StatusCode, r.Header.Get("Content-Type"))
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("GET %s: Cache-Control %q, want no-cache", page, cc)
	}
	if r.Header.Get("Content-Security-Policy") == "" || r.Header.Get("ETag") == "" {
		t.Errorf("GET %s: no CSP or no ETag: %v", page, r.Header)
	}
	html := body(t, r)
	if strings.Contains(html, AssetsPlaceholder) {
		t.Fatalf("GET %s: placeholder left in the page", page)
	}
	refs := assetRef.FindAllStringSubmatch(html, -1)
	if len(refs) < 2 {
		t.Fatalf("GET %s: want a stylesheet and a script, got %v", page, refs)
	}
	for _, m := range refs {
		u := m[1]
		if !strings.HasPrefix(u, prefix+"/assets/") {
			t.Errorf("asset %s is not under %s/assets/", u, prefix)
		}
		a := get(t, h, "GET", u, nil)
		if a.StatusCode != 200 {
			t.Fatalf("GET %s: %d", u, a.StatusCode)
		}
		if cc := a.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("GET %s: Cache-Control %q", u, cc)
		}
		ct := a.Header.Get("Content-Type")
		if strings.HasSuffix(u, ".js") && ct != "text/javascript; charset=utf-8" || strings.HasSuffix(u, ".css") && ct != "text/css; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", u, ct)
		}
		etag := a.Header.Get("ETag")
		if n := get(t, h, "GET", u, map[string]string{"If-None-Match": etag}); etag == "" || n.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match %s: %d", u, etag, n.StatusCode)
		}
		// an older page's version: the current file, revalidated every time
		old := regexp.MustCompile(`/assets/[0-9a-f]+/`).ReplaceAllString(u, "/assets/0123456789abcdef/")
		if o := get(t, h, "GET", old, nil); o.StatusCode != 200 || o.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s: %d %q", old, o.StatusCode, o.Header.Get("Cache-Control"))
		}
	}
	if n := get(t, h, "GET", page, map[string]string{"If-None-Match": r.Header.Get("ETag")}); n.StatusCode != http.StatusNotModified {
		t.Errorf("GET %s revalidation: %d", page, n.StatusCode)
	}
}

func TestStorefront(t *testing.T) {
	h := Storefront()
	checkPage(t, h, "/", "")
	for _, p := range []string{"/api/nope", "/api/", "/api", "/api/items/1/whatever"} {
		r := get(t, h, "GET", p, nil)
		var prob struct {
			Code   string `json:"code"`
			Status int    `json:"status"`
		}
		raw := body(t, r)
		if r.StatusCode != 404 || r.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal([]byte(raw), &prob) != nil || prob.Code != "not_found" || prob.Status != 404 {
			t.Errorf("GET %s: %d %q %s", p, r.StatusCode, r.Header.Get("Content-Type"), raw)
		}
	}
	for _, p := range []string{"/nope", "/assets/x/nope.js", "/assets/"} {
		if r := get(t, h, "GET", p, nil); r.StatusCode != 404 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: %d %q", p, r.StatusCode, r.Header.Get("Content-Type"))
		}
	}
	if r := get(t, h, "HEAD", "/", nil); r.StatusCode != 200 || body(t, r) != "" {
		t.Errorf("HEAD /: %d", r.StatusCode)
	}
}

func TestDashboard(t *testing.T) {
	h := Dashboard()
	checkPage(t, h, "/dashboard/", "/dashboard")
	if r := get(t, h, "GET", "/dashboard", nil); r.StatusCode != http.StatusFound || r.Header.Get("Location") != "/dashboard/" {
		t.Errorf("GET /dashboard: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if r := get(t, h, "GET", "/dashboard/nope", nil); r.StatusCode != 404 {
		t.Errorf("GET /dashboard/nope: %d", r.StatusCode)
	}
}

// TestErrorMessages: every error code of docs/API.md has its own message
// in the storefront.
func TestErrorMessages(t *testing.T) {
	raw, err := static.ReadFile("static/storefront/messages.js")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/API.md")
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| [0-9]{3} \\|").FindAllSubmatch(doc, -1) {
		codes = append(codes, string(m[1]))
	}
	if len(codes) < 17 {
		t.Fatalf("found only %d codes in docs/API.md: %v", len(codes), codes)
	}
	for _, c := range codes {
		if !regexp.MustCompile(`\n  ` + c + `: '`).Match(raw) {
			t.Errorf("messages.js has no message for %q", c)
		}
	}
}
