package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"seckill/captcha/pow"
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

// TestStackUpPurchaseDown: `make up` (scripts/stack.sh up) refuses to start
// while a stranger holds the edge's public port, naming the port and the
// holder, and leaves no edge running; without it, it starts the real servers
// and the three parts as separate processes; a purchase goes through the
// edge; a second `up` says which pids it restarts; `make down` stops them
// all, no process of the stack is left behind, and the order survives
// down+up; `make clean` deletes the data.
func TestStackUpPurchaseDown(t *testing.T) {
	t.Parallel()
	testenv.ServicesScript(t) // the real servers are available here
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stackDir := filepath.Join(dir, "stack")
	public, admin := freeAddr(t), freeAddr(t)
	env := append(os.Environ(),
		"SECKILL_STACK_DIR="+stackDir,
		"SECKILL_BACKEND_LISTEN="+freeAddr(t), "SECKILL_PUBLIC_LISTEN="+public, "SECKILL_ADMIN_LISTEN="+admin,
		"SECKILL_WORKER_METRICS_LISTEN="+freeAddr(t), "SECKILL_ADMIN_TOKEN="+stackToken)
	run := func(arg string, extraEnv ...string) (string, error) {
		cmd := exec.Command("bash", "../scripts/stack.sh", arg)
		cmd.Env = append(env, extraEnv...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	stack := func(arg string) string {
		out, err := run(arg)
		if err != nil {
			t.Fatalf("stack.sh %s: %v\n%s", arg, err, out)
		}
		return out
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			_, _ = run("down")
		}
	})
	readPid := func(part string) int {
		raw, _ := os.ReadFile(filepath.Join(stackDir, part+".pid"))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
		return pid
	}

	// A stranger on the public port answering 200 to everything, with
	// its own instance: up must fail and say so.
	ln, err := net.Listen("tcp", public)
	if err != nil {
		t.Fatal(err)
	}
	stranger := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"status":"ok","service":"edge","instance":"0123456789abcdef"}`)
	})}
	go func() { _ = stranger.Serve(ln) }()
	_, port, _ := net.SplitHostPort(public)
	// First the check before starting anything, then (with that check
	// off) the readiness check: the edge started, died on the taken port,
	// and the stranger's 200 must not pass for it.
	for _, extra := range []string{"", "SECKILL_STACK_SKIP_PORT_CHECK=1"} {
		out, err := run("up", extra)
		if err == nil {
			t.Fatalf("up (%s) succeeded with a stranger on %s:\n%s", extra, public, out)
		}
		for _, want := range []string{"port " + port + " ", "already in use", fmt.Sprintf("pid=%d,", os.Getpid())} {
			if !strings.Contains(out, want) {
				t.Fatalf("up's (%s) failure does not say %q:\n%s", extra, want, out)
			}
		}
		if st := stack("status"); !strings.Contains(st, "edge: stopped") || !strings.Contains(st, "backend: stopped") {
			t.Fatalf("after a failed up (%s):\n%s", extra, st)
		}
	}
	stranger.Close()

	stack("up")
	pub, adm := "http://"+public, "http://"+admin
	now := time.Now()
	var created struct{ ID int64 }
	if code := postJSON(t, adm+"/admin/items", stackToken, map[string]any{
		"name": "tea", "price_cents": 300, "stock": 5, "challenge": "pow",
		"starts_at": now.Add(-time.Second).UTC().Format(time.RFC3339Nano), "ends_at": now.Add(time.Hour).UTC().Format(time.RFC3339Nano),
	}, &created); code != 201 {
		t.Fatalf("create item: %d", code)
	}
	var sessions struct{ Tokens map[string]string }
	if code := postJSON(t, adm+"/admin/sessions", stackToken, map[string]any{"usernames": []string{"ann"}}, &sessions); code != 200 {
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
		map[string]string{"challenge_id": ch.ChallengeID, "answer": pow.Solve(ch.Seed, ch.Difficulty)}, &p); code != 200 {
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
	orderURL := fmt.Sprintf("%s/api/items/%d/order", pub, created.ID)
	testenv.Eventually(t, 20*time.Second, "the order confirmed", func() bool {
		getJSON(t, orderURL, tok, &order)
		return order.Status == "confirmed"
	})
	if order.OrderRef != buy.OrderRef {
		t.Fatalf("order %s, bought %s", order.OrderRef, buy.OrderRef)
	}
	checkStackCredentials(t, stackDir, stack("status"))

	// A second up restarts the parts and says which pids it stopped.
	oldEdge := readPid("edge")
	if out := stack("up"); !strings.Contains(out, fmt.Sprintf("already up (edge pid %d,", oldEdge)) {
		t.Fatalf("second up does not name the running edge %d:\n%s", oldEdge, out)
	}
	if e := readPid("edge"); e == oldEdge || e == 0 || syscall.Kill(oldEdge, 0) == nil {
		t.Fatalf("edge pid %d after the second up, was %d", e, oldEdge)
	}

	var pids []int
	for _, f := range strings.Fields(stack("pids")) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) < 7 { // edge, backend, worker, redis, postgres, zookeeper, rabbitmq (+ helpers)
		t.Fatalf("only %d pids recorded: %v", len(pids), pids)
	}
	waitGone := func(pids []int, after string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for _, pid := range pids {
			for syscall.Kill(pid, 0) == nil {
				if time.Now().After(deadline) {
					out, _ := exec.Command("ps", "-o", "pid,cmd", "-p", strconv.Itoa(pid)).CombinedOutput()
					t.Fatalf("process %d still runs after %s:\n%s", pid, after, out)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	if out := stack("down"); !strings.Contains(out, "data is kept in "+stackDir+"/servers") {
		t.Fatalf("down does not say the data is kept:\n%s", out)
	}
	waitGone(pids, "down")

	// The order survives down+up, the up here being `make stack`
	// (stack.sh run) on a terminal, stopped by Ctrl-C: that stops
	// everything, its `tail -F` of the logs included.
	var term lockedBuffer
	runCmd := exec.Command("script", "-qefc", "bash ../scripts/stack.sh run; echo STACK-EXITED $?; sleep 60", "/dev/null")
	runCmd.Env = append(env, "SHELL=/bin/bash")
	runCmd.Stdout, runCmd.Stderr = &term, &term
	keys, err := runCmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := runCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = runCmd.Process.Kill(); _ = runCmd.Wait() })
	testenv.Eventually(t, 90*time.Second, "stack.sh run following the logs", func() bool {
		return strings.Contains(term.String(), "following the logs")
	})
	order.Status, order.OrderRef = "", ""
	if code := getJSON(t, orderURL, tok, &order); code != 200 || order.Status != "confirmed" || order.OrderRef != buy.OrderRef {
		t.Fatalf("after down+up: %d %+v, bought %s", code, order, buy.OrderRef)
	}
	pids = pids[:0]
	for _, f := range strings.Fields(stack("pids")) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	tails := tailsOf(t, stackDir)
	if len(tails) != 1 {
		t.Fatalf("%d tail processes of %s while running, want 1", len(tails), stackDir)
	}
	if _, err := keys.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "stack.sh run to exit after Ctrl-C", func() bool {
		return strings.Contains(term.String(), "STACK-EXITED")
	})
	if !strings.Contains(term.String(), "STACK-EXITED 0") {
		t.Fatalf("stack.sh run after Ctrl-C:\n%s", term.String())
	}
	if left := tailsOf(t, stackDir); len(left) > 0 {
		t.Fatalf("tail still runs after Ctrl-C on stack.sh run: %v", left)
	}
	waitGone(pids, "Ctrl-C on stack.sh run")

	out := stack("clean")
	downed = true
	if !strings.Contains(out, "deleted "+stackDir+": all server data") {
		t.Fatalf("clean does not say what it deleted:\n%s", out)
	}
	if _, err := os.Stat(stackDir); !os.IsNotExist(err) {
		t.Fatalf("%s after clean: %v", stackDir, err)
	}
}

// tailsOf returns the pids of the tail processes following logs in dir.
func tailsOf(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		if filepath.Base(args[0]) == "tail" && strings.Contains(string(raw), dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// lockedBuffer is a bytes.Buffer safe for one writer and other readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// stackToken is an admin token the edge accepts outside `seckill dev` (at
// least 32 bytes, no published example).
const stackToken = "e2e-stack-admin-token-0123456789abcdef"
