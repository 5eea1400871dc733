package apiclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"seckill/captcha/pow"
)

func TestRefusalCarriesCodeRetryAfterAndOrderRef(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("authorization %q", r.Header.Get("Authorization"))
		}
		switch r.URL.Path {
		case "/api/items/7/buy/p1":
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"code":"backend_unavailable","detail":"later"}`))
		case "/api/items/7/buy/p2":
			w.Header().Set("X-Order-Ref", "ref-1")
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"code":"already_bought"}`))
		case "/api/items/7/buy/p3":
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"status":"queued","order_ref":"ref-2"}`))
		}
	}))
	defer srv.Close()
	c := New(srv.URL, srv.URL, "admin", nil)
	ctx := context.Background()
	_, err := c.Buy(ctx, "tok", 7, "p1")
	if e := AsError(err); e == nil || e.Status != 503 || e.Code != "backend_unavailable" || e.RetryAfter.Seconds() != 2 {
		t.Fatalf("503: %#v", err)
	}
	_, err = c.Buy(ctx, "tok", 7, "p2")
	if e := AsError(err); e == nil || e.Code != "already_bought" || e.OrderRef != "ref-1" {
		t.Fatalf("409: %#v", err)
	}
	if ref, err := c.Buy(ctx, "tok", 7, "p3"); err != nil || ref != "ref-2" {
		t.Fatalf("202: %q %v", ref, err)
	}
	srv.Close()
	if _, err := c.Buy(ctx, "tok", 7, "p3"); err == nil || AsError(err) != nil {
		t.Fatalf("a closed server must be a transport error, got %v", err)
	}
}

func TestSendPassesHeadersAndRawBodyAndReturnsAnyStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if got := r.Header.Get("X-Forwarded-For"); got != "10.1.2.3" {
			t.Errorf("X-Forwarded-For %q", got)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer tok" {
			t.Errorf("authorization %q", got)
		}
		if got := r.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("content type %q", got)
		}
		if string(b) != "not json" {
			t.Errorf("body %q", b)
		}
		w.Header().Set("RateLimit-Policy", `"buy";q=1`)
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"code":"rate_limited"}`))
	}))
	defer srv.Close()
	c := New(srv.URL, srv.URL, "", nil)
	a, err := c.Send(context.Background(), http.MethodPost, "/api/items/1/path", "tok", []byte("not json"), http.Header{"X-Forwarded-For": {"10.1.2.3"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != 429 || string(a.Body) != `{"code":"rate_limited"}` || a.Header.Get("RateLimit-Policy") != `"buy";q=1` {
		t.Fatalf("answer %d %q %v", a.Status, a.Body, a.Header)
	}
	if a.Began.IsZero() || a.Latency <= 0 {
		t.Fatalf("began %v latency %v", a.Began, a.Latency)
	}
	a, err = New("http://127.0.0.1:1", "", "", nil).Send(context.Background(), http.MethodGet, "/", "", nil, nil)
	if err == nil || a.Began.IsZero() {
		t.Fatalf("refused connection: err %v, began %v", err, a.Began)
	}
}

// TestRegisterSolvesTheChallenge: Register asks for the registration
// challenge, solves its proof of work and sends the answer, with the
// caller's headers on both requests; a captcha is refused by name.
func TestRegisterSolvesTheChallenge(t *testing.T) {
	kind := "pow"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("X-Forwarded-For"); got != "192.0.2.7" {
			t.Errorf("%s: X-Forwarded-For %q", r.URL.Path, got)
		}
		switch r.URL.Path {
		case "/api/register/challenge":
			_, _ = w.Write([]byte(`{"challenge_id":"c1","kind":"` + kind + `","seed":"s33d","difficulty":10,"expires_at":"2026-11-30T20:00:00Z"}`))
		case "/api/register":
			var b map[string]string
			_ = json.NewDecoder(r.Body).Decode(&b)
			if b["username"] != "ann" || b["password"] != "correct horse" || b["challenge_id"] != "c1" || !pow.Check("s33d", b["answer"], 10) {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"code":"challenge_failed"}`))
				return
			}
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"user_id":42}`))
		}
	}))
	defer srv.Close()
	c := New(srv.URL, srv.URL, "", nil)
	hdr := http.Header{"X-Forwarded-For": {"192.0.2.7"}}
	id, err := c.RegisterFrom(context.Background(), "ann", "correct horse", hdr)
	if err != nil || id != 42 {
		t.Fatalf("RegisterFrom: %d %v", id, err)
	}
	kind = "captcha"
	if _, err := c.RegisterFrom(context.Background(), "ann", "correct horse", hdr); err == nil || !strings.Contains(err.Error(), "captcha") {
		t.Fatalf("a captcha: %v, want an error naming it", err)
	}
}

// TestSessionsFitTheBodyLimit: 4,500 sessions of real size (a token of
// about 200 bytes) come in answers that fit the client's 1 MiB body limit
// (10,000 to a call did not: "unexpected end of JSON input").
func TestSessionsFitTheBodyLimit(t *testing.T) {
	var calls []int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Usernames []string `json:"usernames"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.URL.Path != "/admin/sessions" {
			t.Errorf("%s %s: %v", r.Method, r.URL.Path, err)
		}
		calls = append(calls, len(req.Usernames))
		tokens := map[string]string{}
		for _, n := range req.Usernames {
			tokens[n] = n + "." + strings.Repeat("x", 200)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"tokens": tokens})
	}))
	defer srv.Close()
	names := make([]string, 4500)
	for i := range names {
		names[i] = "lab0123ab-h" + strconv.Itoa(100000+i)
	}
	got, err := New(srv.URL, srv.URL, "T", srv.Client()).Sessions(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4500 || got[names[4499]] != names[4499]+"."+strings.Repeat("x", 200) {
		t.Errorf("%d tokens, want 4500", len(got))
	}
	if len(calls) != 3 || calls[0] != 2000 || calls[1] != 2000 || calls[2] != 500 {
		t.Errorf("calls of %v names, want 2000, 2000, 500", calls)
	}
}
