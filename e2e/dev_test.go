package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"seckill/captcha/pow"
)

type devProc struct {
	*proc
	public, admin, backend string
}

// startDev runs `seckill dev` (embedded stand-ins: miniredis, SQLite,
// in-process pipeline) on free ports.
func startDev(t *testing.T, args ...string) devProc {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	env := append(os.Environ(), "SECKILL_ADMIN_TOKEN=dev-token", "SECKILL_BACKEND_TOKEN="+testBackendToken, "SECKILL_LOG_LEVEL=warn")
	p := startProc(t, env, append([]string{"dev", "--public-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--addr-file", addrFile, "--limits", "../configs/limits.yaml"}, args...)...)
	d := devProc{proc: p}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil {
			for _, f := range strings.Fields(string(b)) {
				k, v, _ := strings.Cut(f, "=")
				switch k {
				case "public":
					d.public = "http://" + v
				case "admin":
					d.admin = "http://" + v
				case "backend":
					d.backend = "http://" + v
				}
			}
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("seckill dev did not start:\n%s", p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func postJSON(t *testing.T, url, token string, body any, out any) int {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func getJSON(t *testing.T, url, token string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

// TestDevFlashSale: the purchase-core concurrency test against `seckill
// dev`: 5,000 buyers x 3 attempts on 1,000 units. Exactly 1,000 accepted and
// stored, each buyer's order confirmed with the ref it was given.
func TestDevFlashSale(t *testing.T) {
	t.Parallel()
	d := startDev(t, "--no-demo")
	now := time.Now()
	var created struct{ ID int64 }
	if code := postJSON(t, d.admin+"/admin/items", "dev-token", map[string]any{
		"name": "flash", "price_cents": 100, "stock": 1000, "challenge": "none",
		"starts_at": now.Add(-time.Second).UTC().Format(time.RFC3339Nano), "ends_at": now.Add(time.Hour).UTC().Format(time.RFC3339Nano),
	}, &created); code != 201 {
		t.Fatalf("create item: %d", code)
	}
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("dev%05d", i)
	}
	var users struct{ Users map[string]int64 }
	if code := postJSON(t, d.backend+"/v1/admin/users", testBackendToken, map[string]any{"usernames": names}, &users); code != 200 || len(users.Users) != 5000 {
		t.Fatalf("users: %d %d", code, len(users.Users))
	}
	var mu sync.Mutex
	accepted := map[int64]string{}
	counts := map[string]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 128)
	for _, id := range users.Users {
		for a := range 3 {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ans, err := reserve(d.backend, created.ID, id, fmt.Sprintf("r%d-%d", id, a))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				counts[fmt.Sprintf("%d %s", ans.status, ans.code)]++
				if ans.status == 202 {
					if prev, ok := accepted[id]; ok {
						t.Errorf("user %d accepted twice (%s, %s)", id, prev, ans.orderRef)
					}
					accepted[id] = ans.orderRef
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("answers: %v", counts)
	if len(accepted) != 1000 || counts["202 "] != 1000 || counts["202 "]+counts["409 already_bought"]+counts["410 sold_out"] != 15000 {
		t.Fatalf("answers %v, want exactly 1000 accepted of 15000", counts)
	}
	var st map[string]float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		getJSON(t, fmt.Sprintf("%s/admin/items/%d/stats", d.admin, created.ID), "dev-token", &st)
		if st["orders"] == 1000 && st["outbox_pending"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for k, v := range map[string]float64{"stock_total": 1000, "stock_left": 0, "reserved": 1000, "orders": 1000, "failed": 0} {
		if st[k] != v {
			t.Fatalf("stats %s = %v, want %v", k, st[k], v)
		}
	}
	for user, ref := range accepted {
		var s struct {
			Status   string `json:"status"`
			OrderRef string `json:"order_ref"`
		}
		getJSON(t, fmt.Sprintf("%s/v1/items/%d/orders/%d", d.backend, created.ID, user), testBackendToken, &s)
		if s.Status != "confirmed" || s.OrderRef != ref {
			t.Fatalf("user %d: %+v, want confirmed %s", user, s, ref)
		}
	}
}

// TestDevScriptedPurchase: the demo sale of `seckill dev`, bought through
// the public API as a client does (register, login, challenge, path, buy,
// status); then Ctrl-C stops it cleanly.
func TestDevScriptedPurchase(t *testing.T) {
	t.Parallel()
	d := startDev(t, "--demo-start", "1s", "--difficulty", "8")
	var reg struct {
		UserID int64 `json:"user_id"`
	}
	var rch struct {
		ID         string `json:"challenge_id"`
		Kind, Seed string
		Difficulty int
	}
	if code := postJSON(t, d.public+"/api/register/challenge", "", nil, &rch); code != 200 || rch.Kind != "pow" {
		t.Fatalf("registration challenge: %d %+v", code, rch)
	}
	if code := postJSON(t, d.public+"/api/register", "", map[string]string{"username": "ann", "password": "correct horse",
		"challenge_id": rch.ID, "answer": pow.Solve(rch.Seed, rch.Difficulty)}, &reg); code != 201 {
		t.Fatalf("register: %d", code)
	}
	var login struct{ Token string }
	if code := postJSON(t, d.public+"/api/login", "", map[string]string{"username": "ann", "password": "correct horse"}, &login); code != 200 {
		t.Fatalf("login: %d", code)
	}
	var items struct {
		Items []struct {
			ID    int64
			State string
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		getJSON(t, d.public+"/api/items", "", &items)
		if len(items.Items) == 1 && items.Items[0].State == "live" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo sale not live: %+v", items)
		}
		time.Sleep(100 * time.Millisecond)
	}
	id := items.Items[0].ID
	var ch struct {
		ChallengeID string `json:"challenge_id"`
		Seed        string
		Difficulty  int
	}
	if code := postJSON(t, fmt.Sprintf("%s/api/items/%d/challenge", d.public, id), login.Token, nil, &ch); code != 200 {
		t.Fatalf("challenge: %d", code)
	}
	var p struct{ Path string }
	if code := postJSON(t, fmt.Sprintf("%s/api/items/%d/path", d.public, id), login.Token,
		map[string]string{"challenge_id": ch.ChallengeID, "answer": pow.Solve(ch.Seed, ch.Difficulty)}, &p); code != 200 {
		t.Fatalf("path: %d", code)
	}
	var buy struct {
		Status   string
		OrderRef string `json:"order_ref"`
	}
	if code := postJSON(t, fmt.Sprintf("%s/api/items/%d/buy/%s", d.public, id, p.Path), login.Token, nil, &buy); code != 202 || buy.Status != "queued" {
		t.Fatalf("buy: %d %+v", code, buy)
	}
	var order struct {
		Status   string
		OrderRef string `json:"order_ref"`
		OrderID  int64  `json:"order_id"`
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		getJSON(t, fmt.Sprintf("%s/api/items/%d/order", d.public, id), login.Token, &order)
		if order.Status == "confirmed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("order: %+v", order)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if order.OrderRef != buy.OrderRef || order.OrderID <= 0 {
		t.Fatalf("order %+v, bought %s", order, buy.OrderRef)
	}
	// Ctrl-C: a clean stop, exit status 0.
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		t.Fatal("seckill dev did not stop on SIGINT")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d after SIGINT:\n%s", code, d.out.String())
	}
}
