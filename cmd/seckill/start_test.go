package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"seckill/internal/app"
)

// runErr runs seckill with the environment env and returns its error (the
// command must fail at start: these tests name no reachable server).
func runErr(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, args, func(k string) string { return env[k] }, &out, &out)
	if err == nil {
		t.Fatalf("seckill %v with %v: no error\n%s", args, env, out.String())
	}
	return err.Error()
}

func wantAll(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: %q not in:\n%s", what, w, got)
		}
	}
}

// A malformed environment value is an error at start naming the variable,
// the flag it sets and what it should be; every one is reported at once.
func TestBadEnvironmentValuesRefused(t *testing.T) {
	t.Parallel()
	got := runErr(t, map[string]string{"SECKILL_WORKER_BATCH": "abc", "SECKILL_WORKER_FLUSH": "10", "SECKILL_RELAY": "maybe"}, "worker")
	wantAll(t, "worker", got, "2 bad settings",
		`$SECKILL_WORKER_BATCH="abc": not a whole number (it sets --batch)`,
		`$SECKILL_WORKER_FLUSH="10": not a duration (such as 500ms, 10s, 2m or 1h) (it sets --flush)`)
	got = runErr(t, map[string]string{"SECKILL_RELAY": "maybe"}, "backend")
	wantAll(t, "backend", got, `$SECKILL_RELAY="maybe": not true or false (it sets --relay)`)
	got = runErr(t, map[string]string{"SECKILL_LOG_LEVEL": "loud"}, "relay")
	wantAll(t, "relay", got, `--log-level=loud (from $SECKILL_LOG_LEVEL): must be debug, info, warn or error`)
	// A value that parses but is out of range names its source too.
	got = runErr(t, map[string]string{"SECKILL_WORKER_BATCH": "0"}, "worker")
	wantAll(t, "worker batch 0", got, "--batch=0 (from $SECKILL_WORKER_BATCH): 0 must be at least 1")
	// The same words for a bad command-line value.
	got = runErr(t, nil, "worker", "--batch", "abc")
	wantAll(t, "worker --batch abc", got, `bad setting: --batch="abc": not a whole number`)
}

// A bad value in a config file names the file and the key; every one is
// reported.
func TestBadConfigFileValuesRefused(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "worker.yaml")
	if err := os.WriteFile(file, []byte("batch: lots\nflush: 10\nprefetch: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := runErr(t, nil, "worker", "--config", file)
	wantAll(t, "worker --config", got, "2 bad settings", file+`: batch: "lots": not a whole number`, file+`: flush: "10": not a duration`)
	if err := os.WriteFile(file, []byte("prefetch: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got = runErr(t, map[string]string{"SECKILL_CONFIG": file}, "worker")
	wantAll(t, "worker $SECKILL_CONFIG", got, "--prefetch=0 (from "+file+"): 0 must be at least 1")
}

// strong is a secret the edge accepts.
var strong = strings.Repeat("5e", 16)

// Values a pushed configuration would be refused for are refused at start,
// with dynconfig's own words (edge.New no longer gets the chance to clamp
// them).
func TestEdgeRefusesWhatAPushWouldRefuse(t *testing.T) {
	t.Parallel()
	env := map[string]string{"SECKILL_ADMIN_TOKEN": strong, "SECKILL_BACKEND_TOKEN": strong}
	got := runErr(t, env, "edge", "--difficulty", "40", "--max-in-flight", "0", "--breaker-open", "1ms", "--trusted-proxies", "10.0.0.0/8,nope")
	wantAll(t, "edge", got, "4 bad settings",
		"--difficulty=40: 40 must be between 0 and 32 bits",
		"--max-in-flight=0: 0 must be between 1 and 1048576",
		"--breaker-open=1ms: 1ms must be between 100ms and 10m0s",
		`--trusted-proxies=10.0.0.0/8,nope: not an IP or CIDR: "nope"`)
	got = runErr(t, map[string]string{"SECKILL_ADMIN_TOKEN": strong, "SECKILL_BACKEND_TOKEN": strong, "SECKILL_DIFFICULTY": "30", "SECKILL_DIFFICULTY_UNDER_LOAD": "4"}, "edge")
	wantAll(t, "edge under load", got, "--difficulty-under-load=4 (from $SECKILL_DIFFICULTY_UNDER_LOAD): difficulty + difficulty_under_load = 34 exceeds 32 bits")
	limits := filepath.Join(t.TempDir(), "limits.yaml")
	if err := os.WriteFile(limits, []byte("rules:\n  - {name: a, class: buy, key: user, rate: 1, burst: 1, shadow: true}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got = runErr(t, env, "edge", "--limits", limits)
	wantAll(t, "edge --limits", got, "--limits="+limits+": rules: every rule is shadow: nothing would be enforced")
	got = runErr(t, nil, "dev", "--difficulty", "33")
	wantAll(t, "dev", got, "--difficulty=33: 33 must be between 0 and 32 bits")
}

// Outside `seckill dev`, weak secrets are refused at start, each named,
// with how to make a good one (issue 13 M4).
func TestWeakSecretsRefused(t *testing.T) {
	t.Parallel()
	got := runErr(t, map[string]string{"SECKILL_ADMIN_TOKEN": "change-me", "SECKILL_SESSION_SECRET": "change-me-session-secret", "SECKILL_BACKEND_TOKEN": "short"}, "edge")
	wantAll(t, "edge", got, "3 bad settings",
		`--admin-token=**** (from $SECKILL_ADMIN_TOKEN): is the placeholder "change-me", known to everyone; make one with: openssl rand -hex 32`,
		`--session-secret=**** (from $SECKILL_SESSION_SECRET): is the placeholder "change-me-session-secret"`,
		`--backend-token=**** (from $SECKILL_BACKEND_TOKEN): is 5 bytes long; at least 32 are needed`)
	if strings.Contains(got, "change-me") && strings.Contains(got, "=change-me") {
		t.Errorf("a secret is printed:\n%s", got)
	}
	got = runErr(t, nil, "edge", "--admin-token", strings.Repeat("x", 31))
	wantAll(t, "edge 31 bytes", got, "--admin-token=****: is 31 bytes long; at least 32 are needed")
	got = runErr(t, nil, "edge")
	wantAll(t, "edge without token", got, "--admin-token (not set; nor $SECKILL_ADMIN_TOKEN): an admin token is required")
	got = runErr(t, map[string]string{"SECKILL_BACKEND_TOKEN": "change-me-backend"}, "backend")
	wantAll(t, "backend", got, `--backend-token=**** (from $SECKILL_BACKEND_TOKEN): is the placeholder "change-me-backend"`)
	// The internal credential is required (issue 13 M3), by the backend
	// and by the edge, which sends it.
	got = runErr(t, nil, "backend")
	wantAll(t, "backend without token", got, "--backend-token (not set; nor $SECKILL_BACKEND_TOKEN): the internal credential is required")
	got = runErr(t, map[string]string{"SECKILL_ADMIN_TOKEN": strong, "SECKILL_SESSION_SECRET": strong}, "edge")
	wantAll(t, "edge without backend token", got, "--backend-token (not set; nor $SECKILL_BACKEND_TOKEN): the backends' internal credential is required")
	// Strong secrets pass: the only problem left is the Redis URL.
	got = runErr(t, map[string]string{"SECKILL_ADMIN_TOKEN": strong, "SECKILL_SESSION_SECRET": strong, "SECKILL_BACKEND_TOKEN": strong}, "edge", "--redis-url", "nope")
	if strings.Contains(got, "secret") || strings.Contains(got, "token") || !strings.Contains(got, "--redis-url=nope") {
		t.Errorf("strong secrets: %s", got)
	}
	// seckill dev allows a short token: one person's machine.
	if err := (app.DevConfig{AdminToken: "s3cret"}).Validate(); err != nil && strings.Contains(err.Error(), "admin-token") {
		t.Errorf("dev refused a short token: %v", err)
	}
}

// lockedBuffer is a bytes.Buffer safe for a command's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type devRun struct {
	public, admin string
	out           *lockedBuffer
	stop          func() error
}

// startDev runs `seckill dev` in this process on free ports. The test's
// working folder (cmd/seckill) has no configs/limits.yaml: the built-in
// limits serve.
func startDev(t *testing.T, env map[string]string, args ...string) devRun {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"dev", "--public-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
			"--addr-file", addrFile, "--log-level", "warn"}, args...), func(k string) string { return env[k] }, out, out)
	}()
	d := devRun{out: out, stop: func() error { cancel(); return <-done }}
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
				}
			}
			return d
		}
		select {
		case err := <-done:
			t.Fatalf("seckill dev stopped: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("seckill dev did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpDo(t *testing.T, method, url, token string, body any, out any) int {
	t.Helper()
	var r *bytes.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		r = bytes.NewReader(raw)
	} else {
		r = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// With --data, `seckill dev` keeps its generated admin token and session
// secret beside the data file: after a restart the token is the same and a
// session made before still works (issue 14 F19, F24). The hint names how
// to set one's own. The limits are built in (F10).
func TestDevKeepsSecretsWithData(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("configs/limits.yaml"); err == nil {
		t.Fatal("configs/limits.yaml is reachable from the working folder: this test would not show dev runs without it (F10)")
	}
	data := filepath.Join(t.TempDir(), "shop.db")
	d := startDev(t, nil, "--data", data, "--demo-start", "0s")
	raw, err := os.ReadFile(app.SecretsFile(data))
	if err != nil {
		t.Fatal(err)
	}
	var kept struct {
		AdminToken    string `json:"admin_token"`
		SessionSecret string `json:"session_secret"`
	}
	if err := json.Unmarshal(raw, &kept); err != nil || len(kept.AdminToken) != 32 || len(kept.SessionSecret) != 64 {
		t.Fatalf("secrets file: %v %s", err, raw)
	}
	if fi, _ := os.Stat(app.SecretsFile(data)); fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets file mode %v", fi.Mode().Perm())
	}
	var sessions struct {
		Tokens map[string]string `json:"tokens"`
	}
	if code := httpDo(t, "POST", d.admin+"/admin/sessions", kept.AdminToken, map[string]any{"usernames": []string{"ann"}}, &sessions); code != 200 {
		t.Fatalf("sessions: %d\n%s", code, d.out.String())
	}
	ann := sessions.Tokens["ann"]
	if code := httpDo(t, "GET", d.public+"/api/items/1/order", ann, nil, nil); code != 200 {
		t.Fatalf("order before restart: %d", code)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	wantAll(t, "first start", d.out.String(), "token: "+kept.AdminToken, "kept in "+app.SecretsFile(data), "--admin-token or SECKILL_ADMIN_TOKEN")

	d = startDev(t, nil, "--data", data)
	defer func() { _ = d.stop() }()
	if code := httpDo(t, "GET", d.public+"/api/items/1/order", ann, nil, nil); code != 200 {
		t.Fatalf("a session made before the restart: %d", code)
	}
	if code := httpDo(t, "GET", d.admin+"/admin/items/1/stats", kept.AdminToken, nil, nil); code != 200 {
		t.Fatalf("the kept admin token after the restart: %d", code)
	}
	if raw2, _ := os.ReadFile(app.SecretsFile(data)); !bytes.Equal(raw, raw2) {
		t.Errorf("secrets file changed on restart:\n%s\n%s", raw, raw2)
	}
}

// --session-secret (or $SECKILL_SESSION_SECRET) and --admin-token are
// used as given; without --data nothing is written.
func TestDevSessionSecretFlag(t *testing.T) {
	t.Parallel()
	env := map[string]string{"SECKILL_SESSION_SECRET": strong}
	d := startDev(t, env, "--admin-token", "s3cret", "--demo-start", "0s")
	var sessions struct {
		Tokens map[string]string `json:"tokens"`
	}
	if code := httpDo(t, "POST", d.admin+"/admin/sessions", "s3cret", map[string]any{"usernames": []string{"bob"}}, &sessions); code != 200 {
		t.Fatalf("sessions: %d", code)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	wantAll(t, "hint", d.out.String(), "token: s3cret", "(from --admin-token)")
	d = startDev(t, nil, "--session-secret", strong, "--demo-start", "0s")
	defer func() { _ = d.stop() }()
	if code := httpDo(t, "GET", d.public+"/api/items/1/order", sessions.Tokens["bob"], nil, nil); code != 200 {
		t.Fatalf("a session under the same secret: %d", code)
	}
	wantAll(t, "hint without --data", d.out.String(), "new each start (--data keeps it)")
}

// goleak is for the tests of internal/app only: the binary never links it.
func TestGoleakNotLinked(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "seckill/cmd/seckill").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "go.uber.org/goleak") {
		t.Fatal("cmd/seckill links go.uber.org/goleak")
	}
	if !strings.Contains(string(out), "seckill/internal/app") {
		t.Fatal("cmd/seckill does not link internal/app: go list gave no useful answer")
	}
}
