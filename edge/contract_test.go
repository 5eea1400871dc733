package edge_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestAlreadyBoughtNamesTheOrderEndToEnd: "already bought, here is your
// order" keeps one shape (*seckill.HeldError) from the backend's
// reservation through backendclient and the edge to the public answer:
// 409 already_bought with X-Order-Ref naming the order the buyer got with
// 202, whether the backend refuses (the edge's repeat-buyer check switched
// off) or the edge does (Bloom positive confirmed in Redis). Every refusal
// of the public API is counted once by its code, whichever check or route
// made it.
func TestAlreadyBoughtNamesTheOrderEndToEnd(t *testing.T) {
	env := newOutageEnv(t)
	const user = 601
	path := func() string { t.Helper(); return env.pathFor(t, user, env.challenge(t, user)) }
	buy := func(p string) (int, string, string) {
		t.Helper()
		tok, _ := env.e.Sessions().Sign(user, fmt.Sprintf("u%d", user))
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/items/%d/buy/%s", env.pub.URL, env.live, p), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Order-Ref"), string(body)
	}
	status, _, body := buy(path())
	if status != 202 {
		t.Fatalf("first buy: %d %s", status, body)
	}
	ref := regexp.MustCompile(`"order_ref":"([^"]+)"`).FindStringSubmatch(body)
	if ref == nil {
		t.Fatalf("first buy: no order_ref in %s", body)
	}

	// The backend refuses: the edge's repeat-buyer check (on the challenge
	// and buy routes) is off.
	if r := env.admin(t, "PUT", fmt.Sprintf("/admin/items/%d/defences", env.live), map[string]any{"bloom": false}); r.status != 200 {
		t.Fatalf("switching the Bloom defence off: %d %v", r.status, r.body)
	}
	status, got, body := buy(path())
	if status != 409 || !strings.Contains(body, `"code":"already_bought"`) || got != ref[1] {
		t.Fatalf("second buy, refused by the backend: %d X-Order-Ref %q %s; want 409 already_bought naming %s", status, got, body, ref[1])
	}

	// The edge refuses: Bloom positive, confirmed in Redis (the path is
	// taken while the check is off: the challenge route refuses too).
	p3 := path()
	if r := env.admin(t, "PUT", fmt.Sprintf("/admin/items/%d/defences", env.live), map[string]any{"bloom": true}); r.status != 200 {
		t.Fatalf("switching the Bloom defence on: %d %v", r.status, r.body)
	}
	status, got, body = buy(p3)
	if status != 409 || !strings.Contains(body, `"code":"already_bought"`) || got != ref[1] {
		t.Fatalf("third buy, refused by the edge: %d X-Order-Ref %q %s; want 409 already_bought naming %s", status, got, body, ref[1])
	}

	// Refusals of other routes and checks are counted the same way.
	if r := env.do(t, "POST", "/api/register", 0, map[string]any{"username": "x", "password": "long enough"}); r.status != 400 {
		t.Fatalf("register with a short name: %d %v", r.status, r.body)
	}
	if r := env.do(t, "GET", fmt.Sprintf("/api/items/%d/order", env.live), 0, nil); r.status != 401 {
		t.Fatalf("order without a session: %d %v", r.status, r.body)
	}
	if r := env.do(t, "GET", "/api/items/999999", 0, nil); r.status != 404 {
		t.Fatalf("unknown item: %d %v", r.status, r.body)
	}
	for reason, want := range map[string]float64{"already_bought": 2, "invalid": 1, "unauthenticated": 1, "unknown_item": 1} {
		if got := rejections(t, env.adm.URL, reason); got != want {
			t.Errorf("seckill_edge_rejections_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
}

// rejections reads one series of seckill_edge_rejections_total.
func rejections(t *testing.T, admin, reason string) float64 {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^seckill_edge_rejections_total\{reason="` + reason + `"\} (\S+)$`).FindSubmatch(raw)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
