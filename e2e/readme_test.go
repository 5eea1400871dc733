package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"seckill/internal/testenv"
	"seckill/lab"
)

// readmeBlock is the shell block of README.md that follows marker.
func readmeBlock(t *testing.T, marker string) string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	i := strings.Index(s, marker)
	if i < 0 {
		t.Fatalf("README.md has no %q", marker)
	}
	s = s[i:]
	start := strings.Index(s, "```sh\n")
	end := strings.Index(s[start+6:], "\n```")
	if start < 0 || end < 0 {
		t.Fatalf("no shell block after %q in README.md", marker)
	}
	return s[start+6 : start+6+end+1]
}

// TestReadmeWalkthrough (issue 14 F5, F2): `make up` (scripts/stack.sh up,
// on free ports) trusts no proxy, so the lab refuses it, naming the fix;
// `make up LAB=1` restarts the edge believing loopback and the lab's check
// passes. Then the README's "Try a purchase" block runs as written (only
// its ports changed to the test's), twice: each run creates a sale, buys
// one unit with `seckill solve`, sees the order confirmed, and reconcile
// exits 0.
func TestReadmeWalkthrough(t *testing.T) {
	t.Parallel()
	testenv.ServicesScript(t)
	block := readmeBlock(t, "Try a purchase once `make up` has finished")
	for _, want := range []string{"localhost:8080", "localhost:8081", "bin/seckill solve", "source .seckill/env"} {
		if !strings.Contains(block, want) {
			t.Fatalf("the README block lost %q:\n%s", want, block)
		}
	}
	if strings.Contains(block, "jq") || strings.Contains(block, "items/1/") {
		t.Fatalf("the README block needs jq or assumes item 1 again:\n%s", block)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stackDir := filepath.Join(dir, "stack")
	public, admin := freeAddr(t), freeAddr(t)
	// The backend hashes at normal priority here (--hash-process=false):
	// the hasher's nice 19 on the busy test machine (every other package's
	// tests at once) missed its 2 s and the README's one registration got
	// 503 overloaded, which curl does not retry. The low-priority process
	// is e2e.TestBackendHashesInALowPriorityProcess's.
	env := append(os.Environ(), "SECKILL_HASH_PROCESS=false",
		"SECKILL_STACK_DIR="+stackDir,
		"SECKILL_BACKEND_LISTEN="+freeAddr(t), "SECKILL_PUBLIC_LISTEN="+public, "SECKILL_ADMIN_LISTEN="+admin,
		"SECKILL_WORKER_METRICS_LISTEN="+freeAddr(t))
	stack := func(arg string, extra ...string) string {
		cmd := exec.Command("bash", "../scripts/stack.sh", arg)
		cmd.Env = append(env, extra...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("stack.sh %s %v: %v\n%s", arg, extra, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { stack("down") })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// F2: a plain `make up` ignores X-Forwarded-For; the lab says so.
	out := stack("up")
	if !strings.Contains(out, "make up LAB=1") {
		t.Errorf("make up does not say how to start for the lab:\n%s", out)
	}
	_, err := lab.CheckForwarding(ctx, nil, "http://"+public)
	var fe *lab.ForwardingError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "make up LAB=1") {
		t.Fatalf("the lab's check against a plain make up: %v", err)
	}
	out = stack("up", "LAB=1")
	if !strings.Contains(out, "lab mode:") {
		t.Errorf("make up LAB=1 does not say it trusts loopback:\n%s", out)
	}
	if note, err := lab.CheckForwarding(ctx, nil, "http://"+public); err != nil || note != "" {
		t.Fatalf("the lab's check against make up LAB=1: %q %v", note, err)
	}

	// F5: the README block, as written, from a folder laid out like the
	// repository (.seckill and bin/seckill).
	work := filepath.Join(dir, "repo")
	bin, err := filepath.Abs("../bin/seckill")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(work, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(stackDir, filepath.Join(work, ".seckill")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(work, "bin", "seckill")); err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer("localhost:8080", public, "localhost:8081", admin).Replace(block)
	ids := map[string]bool{}
	for run := 1; run <= 2; run++ {
		cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
		cmd.Dir = work
		cmd.Env = os.Environ()
		raw, err := cmd.CombinedOutput()
		out := string(raw)
		t.Logf("run %d of the README block:\n%s", run, out)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		m := regexp.MustCompile(`sale (\d+) starts at`).FindStringSubmatch(out)
		if m == nil || ids[m[1]] {
			t.Fatalf("run %d: no new sale id in the output", run)
		}
		ids[m[1]] = true
		for _, want := range []string{`"status":"queued"`, `"status":"confirmed"`} {
			if !strings.Contains(out, want) {
				t.Errorf("run %d: the output lacks %s", run, want)
			}
		}
		if regexp.MustCompile(`"order_id":0\b`).MatchString(out[strings.Index(out, `"status":"confirmed"`):]) {
			t.Errorf("run %d: the confirmed order has no number", run)
		}
	}

	// F2 + F3: the README's lab command against make up LAB=1 plays, and
	// writes its report into a new timestamped folder it names.
	if err := os.Symlink(filepath.Join(filepath.Dir(bin), "..", "configs"), filepath.Join(work, "configs")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "bash", "-e", "-c", "source .seckill/env; bin/seckill lab run configs/lab/small.yaml --quiet --edge http://"+public+" --admin http://"+admin)
	cmd.Dir = work
	raw, err := cmd.CombinedOutput()
	out = string(raw)
	if err != nil {
		t.Fatalf("lab run against make up LAB=1: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^report: (lab-reports/small-\d{8}T\d{6}Z) \(report\.html, report\.json\)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the lab names no report folder:\n%s", out)
	}
	for _, f := range []string{"report.html", "report.json"} {
		if st, err := os.Stat(filepath.Join(work, m[1], f)); err != nil || st.Size() == 0 {
			t.Errorf("%s/%s: %v", m[1], f, err)
		}
	}
	t.Logf("lab against make up LAB=1: %s", m[1])
}
