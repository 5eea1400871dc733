package backend_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"seckill"
	"seckill/backendclient"
	"strings"
	"testing"
	"time"
)

// TestBackendRefusesWithoutCredential (issue 13 M3): on a real backend
// (PostgreSQL and Redis), every route but the health probes and the
// metrics answers 401 unauthenticated without the internal credential or
// with a wrong one, and does nothing: no unit reserved, no order read, no
// user created, no password tested.
func TestBackendRefusesWithoutCredential(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	now := time.Now()
	id := e.item(t, now.Add(-time.Minute), now.Add(time.Hour), 5)
	if code, m, _ := e.do(t, "POST", "/v1/users", `{"username":"owner","password":"owner-password"}`, true); code != 201 {
		t.Fatalf("register with the credential: %d %v", code, m)
	}
	if code, m, _ := e.do(t, "POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":41,"request_id":"a"}`, id), true); code != 202 {
		t.Fatalf("reserve with the credential: %d %v", code, m)
	}
	routes := []struct{ method, path, body string }{
		{"POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":42,"request_id":"x"}`, id)},
		{"GET", fmt.Sprintf("/v1/items/%d/orders/41", id), ""},
		{"GET", "/v1/items", ""},
		{"GET", fmt.Sprintf("/v1/items/%d", id), ""},
		{"POST", "/v1/users", `{"username":"mallory","password":"mallory-password"}`},
		{"POST", "/v1/users/login", `{"username":"owner","password":"owner-password"}`},
		{"POST", "/v1/admin/users", `{"usernames":["mallory2"]}`},
		{"POST", "/v1/admin/items", `{"name":"x","stock":1,"starts_at":"2026-01-01T00:00:00Z","ends_at":"2099-01-02T00:00:00Z"}`},
		{"GET", fmt.Sprintf("/v1/admin/items/%d/stats", id), ""},
		{"GET", "/v1/admin/readyz", ""},
		{"GET", "/v1/admin/debug/pprof/heap", ""},
		{"GET", "/v1/no-such-route", ""}, // no route discovery either
	}
	for _, header := range []string{"", "Bearer ", "Bearer adm2", "Bearer ad", "Basic adm", "bearer adm", "Bearer  adm"} {
		for _, r := range routes {
			req, _ := http.NewRequest(r.method, e.srv.URL+r.path, strings.NewReader(r.body))
			req.Header.Set("Content-Type", "application/json")
			if header != "" {
				req.Header.Set("Authorization", header)
			}
			resp, err := testClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var p struct {
				Code string `json:"code"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			if resp.StatusCode != 401 || p.Code != "unauthenticated" || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with %q: %d %q, want 401 unauthenticated", r.method, r.path, header, resp.StatusCode, p.Code)
			}
		}
	}
	// Nothing happened: one unit taken (the authenticated one), no
	// mallory, the order of user 42 does not exist.
	st, err := e.svc.Stats(t.Context(), id)
	if err != nil || st.StockLeft != 4 || st.Reserved != 1 {
		t.Fatalf("stats: %+v %v, want 4 left and 1 reserved", st, err)
	}
	for _, name := range []string{"mallory", "mallory2"} {
		if _, err := e.svc.Login(t.Context(), name, "mallory-password"); err == nil {
			t.Fatalf("user %s was created", name)
		}
	}
	if code, m, _ := e.do(t, "GET", fmt.Sprintf("/v1/items/%d/orders/42", id), "", true); code != 200 || m["status"] != "none" {
		t.Fatalf("order of user 42: %d %v, want none", code, m)
	}
	// The probes and the metrics stay open.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := testClient.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s without the credential: %d, want 200", path, resp.StatusCode)
		}
	}
	// The refusals are counted.
	resp, err := testClient.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf("seckill_backend_auth_failures_total %d\n", 7*len(routes))
	if !strings.Contains(string(raw), want) {
		t.Errorf("metrics lack %q", want)
	}
}

// TestClientSendsCredential: the backend client sends its token on every
// call; a backend refusing it is an outage of that backend for the caller
// (UnavailableError: the edge answers 503 and its breaker counts it), never
// a 401 passed on to a shopper.
func TestClientSendsCredential(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	now := time.Now()
	id := e.item(t, now.Add(-time.Minute), now.Add(time.Hour), 5)
	good := backendclient.New(e.srv.URL, "adm", nil)
	if _, err := good.Reserve(t.Context(), id, seckill.Account{ID: 7}, "c1"); err != nil {
		t.Fatalf("reserve with the right token: %v", err)
	}
	if _, err := good.Status(t.Context(), id, 7); err != nil {
		t.Fatalf("status with the right token: %v", err)
	}
	for _, token := range []string{"", "wrong"} {
		bad := backendclient.New(e.srv.URL, token, nil)
		_, err := bad.Reserve(t.Context(), id, seckill.Account{ID: 8}, "c2")
		var ue *seckill.UnavailableError
		if !errors.As(err, &ue) {
			t.Fatalf("reserve with token %q: %v (%T), want UnavailableError", token, err, err)
		}
	}
	st, err := e.svc.Stats(t.Context(), id)
	if err != nil || st.Reserved != 1 {
		t.Fatalf("stats: %+v %v, want 1 reserved", st, err)
	}
}
