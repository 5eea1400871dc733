package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"seckill/captcha/pow"
	"seckill/lab"
)

// runCmd runs seckill with args and returns its exit error, stdout and stderr.
func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, func(string) string { return "" }, &out, &errb)
	return out.String(), errb.String(), err
}

// TestLabAdviceNamesRealFlags (issue 14 F11): every flag the lab's advice
// names exists on the command it names; a bare flag must exist on both
// targets, seckill edge and seckill dev. (The lab used to advise
// --path-ttl, which seckill dev rejects as unknown.)
func TestLabAdviceNamesRealFlags(t *testing.T) {
	getenv := func(string) string { return "" }
	var sink bytes.Buffer
	targets := map[string]*cobra.Command{"dev": devCmd(getenv, &sink, &sink), "edge": withConfigFile(edgeCmd(getenv, &sink, &sink), getenv)}
	// The advice: every r.note(...) of the lab's sources, and the message
	// that stops a run against an edge that ignores X-Forwarded-For.
	var advice []string
	files, _ := filepath.Glob("../../lab/*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.Contains(line, "r.note(") {
				advice = append(advice, line)
			}
		}
	}
	advice = append(advice, (&lab.ForwardingError{Rule: "catalog-per-ip", Quota: 100, From: "127.0.0.1"}).Error())
	flagRe := regexp.MustCompile(`(seckill (dev|edge) )?--([a-z][a-z0-9-]*)`)
	checked := 0
	for _, a := range advice {
		for _, m := range flagRe.FindAllStringSubmatch(a, -1) {
			on := []string{"dev", "edge"}
			if m[2] != "" {
				on = []string{m[2]}
			}
			for _, target := range on {
				checked++
				if targets[target].Flags().Lookup(m[3]) == nil {
					t.Errorf("the lab advises --%s, which seckill %s does not have:\n  %s", m[3], target, strings.TrimSpace(a))
				}
			}
		}
	}
	if checked < 3 {
		t.Fatalf("only %d flag mentions checked: the scan finds nothing", checked)
	}
	// The regression itself: seckill dev does reject --path-ttl.
	if _, _, err := runCmd(t, "dev", "--path-ttl", "5s"); err == nil || !strings.Contains(err.Error(), "unknown flag: --path-ttl") {
		t.Errorf("seckill dev --path-ttl: %v", err)
	}
}

// TestHelpAndUsage (issue 14 F20): top-level examples start with seckill
// dev; every bench subcommand has examples; backend --help points to
// docs/BACKEND_API.md; --version; a flag error hints at --help; a missing
// argument is named.
func TestHelpAndUsage(t *testing.T) {
	t.Parallel()
	out, _, _ := runCmd(t, "--help")
	ex := out[strings.Index(out, "Examples:"):]
	if first := strings.Fields(strings.SplitN(ex, "\n", 3)[1]); len(first) < 2 || first[0] != "seckill" || first[1] != "dev" {
		t.Errorf("the first top-level example is %q, want seckill dev", first)
	}
	for _, sub := range []string{"pipeline", "ceilings", "all", "edge", "chain", "loginflood"} {
		out, _, _ := runCmd(t, "bench", sub, "--help")
		if !strings.Contains(out, "Examples:\n  seckill bench "+sub) {
			t.Errorf("seckill bench %s --help has no example of itself:\n%s", sub, out)
		}
	}
	if out, _, _ := runCmd(t, "backend", "--help"); !strings.Contains(out, "docs/BACKEND_API.md") || strings.Contains(out, "docs/API.md") {
		t.Errorf("backend --help names the wrong document:\n%s", out)
	}
	if out, _, err := runCmd(t, "--version"); err != nil || !strings.HasPrefix(out, "seckill version ") || !strings.Contains(out, "go1.") {
		t.Errorf("--version: %v %q", err, out)
	}
	_, _, err := runCmd(t, "lab", "run", "x.yaml", "--no-such-flag")
	if err == nil || err.Error() != "unknown flag: --no-such-flag (see 'seckill lab run --help' for the flags it takes)" {
		t.Errorf("a flag error: %v", err)
	}
	for args, want := range map[string]string{
		"config validate": "missing FILE (usage: seckill config validate FILE; see seckill config validate --help)",
		"config rollback": "missing VERSION (usage: seckill config rollback VERSION; see seckill config rollback --help)",
		"lab run":         "missing SCENARIO.yaml (usage: seckill lab run SCENARIO.yaml; see seckill lab run --help)",
		"lab compare a":   "missing B (usage: seckill lab compare A B; see seckill lab compare --help)",
		"config push a b": `too many arguments: seckill config push takes FILE, got ["a" "b"] (see seckill config push --help)`,
	} {
		if _, _, err := runCmd(t, strings.Fields(args)...); err == nil || err.Error() != want {
			t.Errorf("seckill %s: %v\nwant %s", args, err, want)
		}
	}
}

// TestConfigValidateReportsAll (issue 14 F21): one bad duration no longer
// hides the other problems; a YAML syntax error is placed on its own line;
// configs/limits.yaml itself validates.
func TestConfigValidateReportsAll(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../configs/edge-dynamic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	lineOf := func(prefix string) int {
		for i, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line %q in configs/edge-dynamic.yaml", prefix)
		return 0
	}
	bad := strings.NewReplacer("open_for: 1s", "open_for: 3x", "difficulty: 16", "difficulty: 99", "max_in_flight: 512", "max_in_flight: -1",
		"rate: 0.4,", "rate: -1, ").Replace(string(raw))
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := runCmd(t, "config", "validate", file)
	if code, ok := err.(exitCode); !ok || code != exitInvalid {
		t.Fatalf("exit %v, want %d", err, exitInvalid)
	}
	want := []string{
		"bad.yaml: 4 problem(s):",
		file + ":" + itoa(lineOf("  - {name: register-per-ip")) + ": rules[0] (register-per-ip): rate -1 must be > 0",
		file + ":" + itoa(lineOf("difficulty: ")) + ": difficulty: 99 must be between 0 and 32 bits",
		file + ":" + itoa(lineOf("max_in_flight: ")) + ": max_in_flight: -1 must be between 1 and 1048576",
		file + ":" + itoa(lineOf("  open_for: ")) + `: time: unknown unit "x" in duration "3x"`,
	}
	got := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(got) != len(want) {
		t.Fatalf("config validate printed:\n%s\nwant %d lines", stderr, len(want))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("line %d: %q\nwant it to contain %q", i+1, got[i], want[i])
		}
	}

	// A brace missing on rules[4]'s line: that line, not line 1 where
	// the document began.
	broken := strings.Replace(string(raw), "rate: 10,     burst: 30}", "rate: 10,     burst: 30", 1)
	if broken == string(raw) {
		t.Fatal("the challenge-per-ip rule changed: update the test")
	}
	if err := os.WriteFile(file, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, _ = runCmd(t, "config", "validate", file)
	if want := file + ":" + itoa(lineOf("  - {name: challenge-per-ip")) + ": YAML syntax: did not find expected ',' or '}'"; !strings.Contains(stderr, want) {
		t.Errorf("syntax error:\n%s\nwant %s", stderr, want)
	}

	out, stderr, err := runCmd(t, "config", "validate", "../../configs/limits.yaml")
	if err != nil || !strings.Contains(out, "configs/limits.yaml: valid limits file (11 rules") {
		t.Errorf("configs/limits.yaml: %v %q %q", err, out, stderr)
	}
	// and a limits file's own problems are found the same way
	if err := os.WriteFile(file, []byte("rules:\n  - {name: a, class: buy, key: ip, rate: 0, burst: 1}\n  - {name: b, class: nope, key: ip, rate: 1, burst: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = runCmd(t, "config", "validate", file)
	if code, ok := err.(exitCode); !ok || code != exitInvalid || !strings.Contains(stderr, file+":2: rules[0] (a)") || !strings.Contains(stderr, file+":3: rules[1] (b)") {
		t.Errorf("a bad limits file: %v\n%s", err, stderr)
	}
}

// TestLabReportDefault (issue 14 F3): without --report the lab writes
// into a new timestamped folder.
func TestLabReportDefault(t *testing.T) {
	t.Parallel()
	got := defaultReportDir("configs/lab/small.yaml", time.Date(2026, 11, 30, 16, 15, 2, 0, time.UTC))
	if got != filepath.Join("lab-reports", "small-20261130T161502Z") {
		t.Errorf("defaultReportDir: %q", got)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestConfigShowStackDown (issue 14 F23): with a stale SECKILL_ZK (after
// make down) config show fails at once, saying what to do, instead of
// waiting out its ZooKeeper timeout (an hour here: a wait would hang the
// test).
func TestConfigShowStackDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, _, err = runCmd(t, "config", "show", "--zk", addr, "--zk-timeout", "1h")
	if err == nil || !strings.Contains(err.Error(), "no ZooKeeper answers at "+addr) || !strings.Contains(err.Error(), "make up") {
		t.Fatalf("config show against a stopped ZooKeeper: %v", err)
	}
}

// TestSolve (issue 14 F5): seckill solve turns a challenge answer into the
// path request's body, and says why when there is nothing to solve.
func TestSolve(t *testing.T) {
	t.Parallel()
	solve := func(in string) (string, error) {
		var out bytes.Buffer
		cmd := solveCmd(strings.NewReader(in), &out)
		cmd.SetArgs(nil)
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		err := cmd.Execute()
		return out.String(), err
	}
	out, err := solve(`{"challenge_id":"c1","kind":"pow","expires_at":"2026-11-30T16:00:00Z","seed":"abc","difficulty":12}`)
	var body struct {
		ChallengeID string `json:"challenge_id"`
		Answer      string `json:"answer"`
	}
	if err != nil || json.Unmarshal([]byte(out), &body) != nil || body.ChallengeID != "c1" || !pow.Check("abc", body.Answer, 12) {
		t.Fatalf("solve: %q %v", out, err)
	}
	if out, err := solve(`{"challenge_id":"c2","kind":"pow","seed":"abc","difficulty":0}`); err != nil || out != `{"challenge_id":"c2","answer":"0"}`+"\n" {
		t.Errorf("difficulty 0: %q %v", out, err)
	}
	for in, want := range map[string]string{
		`{"type":"x","status":409,"code":"not_live","detail":"the sale has not started"}`: "no challenge to solve: the request was refused with 409 not_live: the sale has not started",
		`{"challenge_id":"c3","kind":"captcha","image":"data:"}`:                          "this challenge is a captcha",
		`not json`: "reading the challenge from standard input",
	} {
		if _, err := solve(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("solve(%s): %v, want %q", in, err, want)
		}
	}
}

// TestStackPidsOnePerLine (issue 14 F23): stack.sh pids prints one pid a
// line, also from pid files that end without a newline (it used to glue
// two together).
func TestStackPidsOnePerLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, pid := range map[string]string{"edge.pid": "101", "backend.pid": "102", "servers/redis/redis.pid": "103", "servers/pg/postmaster.pid": "104\n/data\n"} {
		f := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(pid), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", "../../scripts/stack.sh", "pids")
	cmd.Env = append(os.Environ(), "SECKILL_STACK_DIR="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(string(out))
	sort.Strings(got)
	if strings.Join(got, ",") != "101,102,103,104" || strings.Count(string(out), "\n") != 4 {
		t.Errorf("stack.sh pids printed %q", out)
	}
}

// TestDevPortTakenCreatesNothing (issue 14 F23): seckill dev on a taken
// port fails naming it, and neither creates nor logs the demo sale first.
func TestDevPortTakenCreatesNothing(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, stderr, err := runCmd(t, "dev", "--public-listen", ln.Addr().String(), "--admin-listen", "127.0.0.1:0", "--backend-listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("dev on a taken port: %v", err)
	}
	if strings.Contains(stderr, "item created") {
		t.Errorf("the demo sale was created before the bind error:\n%s", stderr)
	}
}
