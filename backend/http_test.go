package backend_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"seckill"
	"seckill/backend"
	"seckill/internal/testenv"
	"seckill/postgres"
	"seckill/stock"
)

type env struct {
	srv *httptest.Server
	db  *postgres.DB
	st  *stock.Store
	svc *backend.Service
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	rdb, prefix := testenv.Redis(t)
	st := stock.New(rdb, prefix)
	svc := backend.New(db, st, nil)
	srv := httptest.NewServer(backend.NewHandler(svc, backend.HTTPConfig{AdminToken: "adm"}))
	t.Cleanup(srv.Close)
	return &env{srv: srv, db: db, st: st, svc: svc}
}

// testClient gives up on an answer after 30 s: a request the backend holds
// (a store that stalls) fails the test instead of hanging it.
var testClient = &http.Client{Timeout: 30 * time.Second}

func (e *env) do(t *testing.T, method, path, body string, auth bool) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth { // the internal credential
		req.Header.Set("Authorization", "Bearer adm")
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("%s %s: error with content type %q: %s", method, path, resp.Header.Get("Content-Type"), raw)
	}
	return resp.StatusCode, m, resp.Header
}

func (e *env) item(t *testing.T, starts, ends time.Time, stock int) int64 {
	t.Helper()
	body := fmt.Sprintf(`{"name":"tea","price_cents":500,"stock":%d,"starts_at":%q,"ends_at":%q,"challenge":"none"}`,
		stock, starts.Format(time.RFC3339Nano), ends.Format(time.RFC3339Nano))
	code, m, _ := e.do(t, "POST", "/v1/admin/items", body, true)
	if code != 201 {
		t.Fatalf("create item: %d %v", code, m)
	}
	return int64(m["id"].(float64))
}

func TestBadInputGets4xxWithCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	now := time.Now()
	id := e.item(t, now.Add(-time.Minute), now.Add(time.Hour), 5)
	big := `{"item_id":1,"user_id":1,"request_id":"` + strings.Repeat("x", 20000) + `"}`
	cases := []struct {
		desc, method, path, body string
		admin                    bool
		status                   int
		code                     string
	}{
		{"unknown item", "POST", "/v1/reservations", `{"item_id":999999,"user_id":1}`, true, 404, "unknown_item"},
		{"malformed json", "POST", "/v1/reservations", `{"item_id":`, true, 400, "invalid"},
		{"not an object", "POST", "/v1/reservations", `[1,2]`, true, 400, "invalid"},
		{"empty body", "POST", "/v1/reservations", ``, true, 400, "invalid"},
		{"trailing data", "POST", "/v1/reservations", `{"item_id":1,"user_id":1} {}`, true, 400, "invalid"},
		{"wrong type", "POST", "/v1/reservations", `{"item_id":"one","user_id":1}`, true, 400, "invalid"},
		{"negative user", "POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":-4}`, id), true, 400, "invalid"},
		{"zero item", "POST", "/v1/reservations", `{"item_id":0,"user_id":4}`, true, 400, "invalid"},
		{"huge number", "POST", "/v1/reservations", `{"item_id":1e400,"user_id":4}`, true, 400, "invalid"},
		{"oversized body", "POST", "/v1/reservations", big, true, 413, "too_large"},
		{"request id with bar", "POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":4,"request_id":"a|b"}`, id), true, 400, "invalid"},
		{"wrong method", "DELETE", "/v1/reservations", ``, true, 405, "method_not_allowed"},
		{"no route", "GET", "/v1/nothing", ``, true, 404, "not_found"},
		{"bad item id", "GET", "/v1/items/abc", ``, true, 400, "invalid"},
		{"negative item id", "GET", "/v1/items/-3", ``, true, 400, "invalid"},
		{"unknown item read", "GET", "/v1/items/424242", ``, true, 404, "unknown_item"},
		{"status bad user", "GET", fmt.Sprintf("/v1/items/%d/orders/x", id), ``, true, 400, "invalid"},
		{"admin without token", "POST", "/v1/admin/items", `{}`, false, 401, "unauthenticated"},
		{"negative stock", "POST", "/v1/admin/items", `{"name":"a","stock":-1,"starts_at":"2026-01-01T00:00:00Z","ends_at":"2026-01-02T00:00:00Z"}`, true, 400, "invalid"},
		{"negative price", "POST", "/v1/admin/items", `{"name":"a","price_cents":-1,"stock":1,"starts_at":"2026-01-01T00:00:00Z","ends_at":"2026-01-02T00:00:00Z"}`, true, 400, "invalid"},
		{"end before start", "POST", "/v1/admin/items", `{"name":"a","stock":1,"starts_at":"2026-01-02T00:00:00Z","ends_at":"2026-01-01T00:00:00Z"}`, true, 400, "invalid"},
		{"bad time", "POST", "/v1/admin/items", `{"name":"a","stock":1,"starts_at":"tomorrow","ends_at":"2026-01-01T00:00:00Z"}`, true, 400, "invalid"},
		{"bad challenge", "POST", "/v1/admin/items", `{"name":"a","stock":1,"starts_at":"2026-01-01T00:00:00Z","ends_at":"2026-01-02T00:00:00Z","challenge":"dance"}`, true, 400, "invalid"},
		{"stats unknown", "GET", "/v1/admin/items/77777/stats", ``, true, 404, "unknown_item"},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			code, m, _ := e.do(t, tc.method, tc.path, tc.body, tc.admin)
			if code != tc.status || m["code"] != tc.code {
				t.Fatalf("got %d %v, want %d %s", code, m["code"], tc.status, tc.code)
			}
			if int(m["status"].(float64)) != tc.status {
				t.Fatalf("problem status %v, want %d", m["status"], tc.status)
			}
		})
	}
	// Nothing above took a unit.
	st, err := e.svc.Stats(context.Background(), id)
	if err != nil || st.StockLeft != 5 || st.Reserved != 0 {
		t.Fatalf("stats after bad input: %+v %v", st, err)
	}
}

func TestWindowEnforcedByServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	now := time.Now()
	early := e.item(t, now.Add(time.Hour), now.Add(2*time.Hour), 5)
	late := e.item(t, now.Add(-2*time.Hour), now.Add(-time.Hour), 5)
	for _, id := range []int64{early, late} {
		code, m, _ := e.do(t, "POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":1}`, id), true)
		if code != 409 || m["code"] != "not_live" {
			t.Fatalf("item %d: %d %v, want 409 not_live", id, code, m)
		}
	}
	_, m, _ := e.do(t, "GET", fmt.Sprintf("/v1/items/%d", early), "", true)
	if m["item"].(map[string]any)["state"] != "upcoming" {
		t.Fatalf("early item state %v", m["item"])
	}
	_, m, _ = e.do(t, "GET", fmt.Sprintf("/v1/items/%d", late), "", true)
	if m["item"].(map[string]any)["state"] != "ended" {
		t.Fatalf("late item state %v", m["item"])
	}
}

func TestReserveStatusAndStats(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	now := time.Now()
	id := e.item(t, now.Add(-time.Minute), now.Add(time.Hour), 1)
	users, err := e.db.EnsureUsers(ctx, []string{"ann", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	ann, bob := users["ann"], users["bob"]
	statusOf := func(user int64) map[string]any {
		code, m, _ := e.do(t, "GET", fmt.Sprintf("/v1/items/%d/orders/%d", id, user), "", true)
		if code != 200 {
			t.Fatalf("status: %d %v", code, m)
		}
		return m
	}
	if s := statusOf(ann); s["status"] != "none" {
		t.Fatalf("before: %v", s)
	}
	code, m, _ := e.do(t, "POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":%d,"request_id":"r1"}`, id, ann), true)
	if code != 202 || m["status"] != "queued" || m["order_ref"] == "" {
		t.Fatalf("reserve: %d %v", code, m)
	}
	ref := m["order_ref"].(string)
	code, m2, _ := e.do(t, "POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":%d,"request_id":"r1"}`, id, ann), true)
	if code != 202 || m2["order_ref"] != ref {
		t.Fatalf("same request again: %d %v, want 202 with %s", code, m2, ref)
	}
	code, m, hdr := e.do(t, "POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":%d,"request_id":"r2"}`, id, ann), true)
	if code != 409 || m["code"] != "already_bought" || hdr.Get("X-Order-Ref") != ref {
		t.Fatalf("second request: %d %v", code, m)
	}
	code, m, _ = e.do(t, "POST", "/v1/reservations", fmt.Sprintf(`{"item_id":%d,"user_id":%d}`, id, bob), true)
	if code != 410 || m["code"] != "sold_out" {
		t.Fatalf("bob: %d %v", code, m)
	}
	if s := statusOf(ann); s["status"] != "queued" || s["order_ref"] != ref {
		t.Fatalf("queued: %v", s)
	}
	// The worker stores it (here directly through the store).
	if n, err := e.db.InsertOrders(ctx, []seckill.OrderMessage{{OrderRef: ref, UserID: ann, ItemID: id, ReservedAt: now}}); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	if s := statusOf(ann); s["status"] != "confirmed" || s["order_ref"] != ref || s["order_id"].(float64) <= 0 {
		t.Fatalf("confirmed: %v", s)
	}
	if s := statusOf(bob); s["status"] != "none" {
		t.Fatalf("bob: %v", s)
	}
	_, m, _ = e.do(t, "GET", fmt.Sprintf("/v1/admin/items/%d/stats", id), "", true)
	want := map[string]float64{"stock_total": 1, "stock_left": 0, "reserved": 1, "orders": 1, "outbox_pending": 1}
	for k, v := range want {
		if m[k] != v {
			t.Fatalf("stats %s = %v, want %v (%v)", k, m[k], v, m)
		}
	}
	_, m, _ = e.do(t, "GET", "/v1/items", "", true)
	if items := m["items"].([]any); len(items) != 1 || items[0].(map[string]any)["state"] != "sold_out" {
		t.Fatalf("items: %v", m)
	}
}

// TestFrozenReservations: while the Redis guard is frozen (here: at start,
// its watch not running yet), a reservation answers 503
// backend_unavailable with Retry-After and takes nothing; /readyz says
// frozen; admin stats carry the guard's state.
func TestFrozenReservations(t *testing.T) {
	e := newEnv(t)
	g := stock.NewGuard(e.st, stock.GuardConfig{Source: e.db})
	e.svc.SetRedisGuard(g)
	code, _, _ := e.do(t, "POST", "/v1/admin/items", `{"name":"x","stock":5,"starts_at":"2020-01-01T00:00:00Z","ends_at":"2099-01-01T00:00:00Z","challenge":"none"}`, true)
	if code != 201 {
		t.Fatalf("create: %d", code)
	}
	users, err := e.db.EnsureUsers(context.Background(), []string{"frozen1"})
	if err != nil {
		t.Fatal(err)
	}
	items, _ := e.db.Items(context.Background())
	body := fmt.Sprintf(`{"item_id":%d,"user_id":%d,"request_id":"r1"}`, items[0].ID, users["frozen1"])
	code, m, h := e.do(t, "POST", "/v1/reservations", body, true)
	if code != 503 || m["code"] != string(seckill.EUnavailable) || h.Get("Retry-After") != "1" {
		t.Fatalf("reserve while frozen: %d %v Retry-After %q", code, m, h.Get("Retry-After"))
	}
	c, _ := e.st.Counters(context.Background(), items[0].ID)
	if c.StockLeft != 5 || c.Reserved != 0 {
		t.Fatalf("a frozen reservation took something: %+v", c)
	}
	resp, err := http.Get(e.srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	code, m = resp.StatusCode, nil
	_ = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if code != 503 || m["status"] != "unready" {
		t.Fatalf("readyz while frozen: %d %v", code, m)
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/v1/admin/readyz", nil)
	req.Header.Set("Authorization", "Bearer adm")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	code, m = resp.StatusCode, nil
	_ = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if code != 503 || m["status"] != "unready" || !strings.Contains(fmt.Sprint(m["checks"]), "reservations frozen") {
		t.Fatalf("admin readyz while frozen: %d %v", code, m)
	}
	code, m, _ = e.do(t, "GET", fmt.Sprintf("/v1/admin/items/%d/stats", items[0].ID), "", true)
	if guard, _ := m["redis_guard"].(map[string]any); code != 200 || guard["frozen"] != true || m["stock_left"] != float64(5) {
		t.Fatalf("stats while frozen: %d %v", code, m)
	}
}
