package edge

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"seckill"
	"seckill/httpapi"
)

// Issue 13 M1: cross-site browser POSTs are refused (403 cross_origin),
// browser bodies must be application/json (415), and curl, Bearer and
// same-origin requests pass. Today's edge checks none of it.
func TestOriginGuard(t *testing.T) {
	t.Parallel()
	g, err := newOriginGuard([]string{"https://shop.example"})
	if err != nil {
		t.Fatal(err)
	}
	const form = "application/x-www-form-urlencoded"
	cases := []struct {
		desc, method, body string
		hdr                map[string]string
		code               seckill.Code
	}{
		{"curl login", "POST", `{}`, map[string]string{"Content-Type": "application/json"}, ""},
		{"curl without a type", "POST", `{}`, nil, ""},
		{"bearer buy", "POST", "", map[string]string{"Authorization": "Bearer x"}, ""},
		{"same-origin fetch", "POST", `{}`, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://edge.test", "Cookie": "seckill_session=x", "Content-Type": "application/json"}, ""},
		{"same-origin logout without body", "POST", "", map[string]string{"Sec-Fetch-Site": "same-origin", "Cookie": "seckill_session=x"}, ""},
		{"cross-site cookie POST", "POST", `{}`, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example", "Cookie": "seckill_session=x", "Content-Type": form}, seckill.ECrossOrigin},
		{"login CSRF (cross-site form)", "POST", `{"username":"mallory"}`, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example", "Content-Type": "text/plain"}, seckill.ECrossOrigin},
		{"same-site other port", "POST", "", map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://edge.test:9999", "Cookie": "seckill_session=x"}, seckill.ECrossOrigin},
		{"old browser: Origin only, foreign", "POST", `{}`, map[string]string{"Origin": "https://evil.example", "Content-Type": "application/json"}, seckill.ECrossOrigin},
		{"old browser: Origin only, own host", "POST", `{}`, map[string]string{"Origin": "http://edge.test", "Content-Type": "application/json"}, ""},
		{"trusted origin", "POST", `{}`, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://shop.example", "Content-Type": "application/json"}, ""},
		{"same-origin text/plain body", "POST", `{}`, map[string]string{"Sec-Fetch-Site": "same-origin", "Cookie": "seckill_session=x", "Content-Type": "text/plain"}, seckill.EMediaType},
		{"cookie, body without a type", "POST", `{}`, map[string]string{"Cookie": "seckill_session=x"}, seckill.EMediaType},
		{"json with charset", "POST", `{}`, map[string]string{"Cookie": "seckill_session=x", "Content-Type": "application/json; charset=utf-8"}, ""},
		{"cross-site GET", "GET", "", map[string]string{"Sec-Fetch-Site": "cross-site", "Cookie": "seckill_session=x"}, ""},
	}
	for _, tc := range cases {
		var r *http.Request
		if tc.body != "" {
			r = httptest.NewRequest(tc.method, "http://edge.test/api/login", strings.NewReader(tc.body))
		} else {
			r = httptest.NewRequest(tc.method, "http://edge.test/api/logout", nil)
		}
		for k, v := range tc.hdr {
			r.Header.Set(k, v)
		}
		err := g.check(r)
		got := seckill.Code("")
		if err != nil {
			got = seckill.ErrorCode(err)
		}
		if got != tc.code {
			t.Errorf("%s: %v, want %q", tc.desc, err, tc.code)
		}
	}
	if httpapi.Status(seckill.ECrossOrigin) != 403 || httpapi.Status(seckill.EMediaType) != 415 {
		t.Fatal("statuses")
	}
	if _, err := newOriginGuard([]string{"evil.example"}); err == nil {
		t.Fatal("an origin without a scheme was accepted")
	}
}

// BenchmarkOriginGuard: the CSRF check on a purchase (Bearer, curl-like)
// and on a same-origin browser request with a cookie.
func BenchmarkOriginGuard(b *testing.B) {
	g, _ := newOriginGuard(nil)
	bearer := httptest.NewRequest("POST", "http://edge.test/api/items/1/buy/p", nil)
	bearer.Header.Set("Authorization", "Bearer x")
	browser := httptest.NewRequest("POST", "http://edge.test/api/items/1/buy/p", nil)
	browser.Header.Set("Sec-Fetch-Site", "same-origin")
	browser.Header.Set("Origin", "http://edge.test")
	browser.Header.Set("Cookie", "seckill_session=x")
	for name, r := range map[string]*http.Request{"bearer": bearer, "browser": browser} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := g.check(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
