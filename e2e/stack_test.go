package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"seckill/captcha"
	"seckill/internal/testenv"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestStackUpPurchaseDown: `make up` (scripts/stack.sh up) starts the real
// servers and the three parts as separate processes; a purchase goes
// through the edge; `make down` stops them and no process of the stack is
// left behind.
func TestStackUpPurchaseDown(t *testing.T) {
	t.Parallel()
	testenv.ServicesScript(t) // the real servers are available here
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	public, admin := freeAddr(t), freeAddr(t)
	env := append(os.Environ(),
		"SECKILL_STACK_DIR="+filepath.Join(dir, "stack"),
		"SECKILL_BACKEND_LISTEN="+freeAddr(t), "SECKILL_PUBLIC_LISTEN="+public, "SECKILL_ADMIN_LISTEN="+admin,
		"SECKILL_WORKER_METRICS_LISTEN="+freeAddr(t), "SECKILL_ADMIN_TOKEN=stack-token")
	stack := func(arg string) string {
		cmd := exec.Command("bash", "../scripts/stack.sh", arg)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("stack.sh %s: %v\n%s", arg, err, out)
		}
		return string(out)
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			cmd := exec.Command("bash", "../scripts/stack.sh", "down")
			cmd.Env = env
			_ = cmd.Run()
		}
	})
	stack("up")
	var pids []int
	for _, f := range strings.Fields(stack("pids")) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) < 7 { // edge, backend, worker, redis, postgres, zookeeper, rabbitmq (+ helpers)
		t.Fatalf("only %d pids recorded: %v", len(pids), pids)
	}

	pub, adm := "http://"+public, "http://"+admin
	now := time.Now()
	var created struct{ ID int64 }
	if code := postJSON(t, adm+"/admin/items", "stack-token", map[string]any{
		"name": "tea", "price_cents": 300, "stock": 5, "challenge": "pow",
		"starts_at": now.Add(-time.Second).UTC().Format(time.RFC3339Nano), "ends_at": now.Add(time.Hour).UTC().Format(time.RFC3339Nano),
	}, &created); code != 201 {
		t.Fatalf("create item: %d", code)
	}
	var sessions struct{ Tokens map[string]string }
	if code := postJSON(t, adm+"/admin/sessions", "stack-token", map[string]any{"usernames": []string{"ann"}}, &sessions); code != 200 {
		t.Fatalf("sessions: %d", code)
	}
	tok := sessions.Tokens["ann"]
	var ch struct {
		ChallengeID string `json:"challenge_id"`
		Seed        string
		Difficulty  int
	}
	testenv.Eventually(t, 10*time.Second, "the edge to know the item", func() bool {
		return postJSON(t, fmt.Sprintf("%s/api/items/%d/challenge", pub, created.ID), tok, nil, &ch) == 200
	})
	var p struct{ Path string }
	if code := postJSON(t, fmt.Sprintf("%s/api/items/%d/path", pub, created.ID), tok,
		map[string]string{"challenge_id": ch.ChallengeID, "answer": captcha.SolvePoW(ch.Seed, ch.Difficulty)}, &p); code != 200 {
		t.Fatalf("path: %d", code)
	}
	var buy struct {
		OrderRef string `json:"order_ref"`
	}
	if code := postJSON(t, fmt.Sprintf("%s/api/items/%d/buy/%s", pub, created.ID, p.Path), tok, nil, &buy); code != 202 {
		t.Fatalf("buy: %d", code)
	}
	var order struct {
		Status   string
		OrderRef string `json:"order_ref"`
	}
	testenv.Eventually(t, 20*time.Second, "the order confirmed", func() bool {
		getJSON(t, fmt.Sprintf("%s/api/items/%d/order", pub, created.ID), tok, &order)
		return order.Status == "confirmed"
	})
	if order.OrderRef != buy.OrderRef {
		t.Fatalf("order %s, bought %s", order.OrderRef, buy.OrderRef)
	}

	stack("down")
	downed = true
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				out, _ := exec.Command("ps", "-o", "pid,cmd", "-p", strconv.Itoa(pid)).CombinedOutput()
				t.Fatalf("process %d still runs after down:\n%s", pid, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
