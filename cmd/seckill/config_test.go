package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestConfigPrecedence(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("a: from-file\nb: from-file\nc: from-file\nd: 3s\nlist: [x, y]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ENV_B": "from-env"}
	getenv := func(k string) string { return env[k] }
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var a, b, c, e, list string
	var d time.Duration
	envFlag(fs, getenv, &a, "a", "ENV_A", "default", "")
	envFlag(fs, getenv, &b, "b", "ENV_B", "default", "")
	envFlag(fs, getenv, &c, "c", "ENV_C", "default", "")
	envFlag(fs, getenv, &e, "e", "ENV_E", "default", "")
	envFlag(fs, getenv, &list, "list", "ENV_L", "", "")
	envDuration(fs, getenv, &d, "d", "ENV_D", time.Second, "")
	fs.String("config", file, "")
	if err := fs.Parse([]string{"--a", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if err := resolveSettings(fs, getenv); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{"a": a, "b": b, "c": c, "e": e, "list": list, "d": d.String()}
	want := map[string]string{"a": "from-flag", "b": "from-env", "c": "from-file", "e": "default", "list": "x,y", "d": "3s"}
	for k := range want {
		if got[k] != want[k] {
			t.Errorf("%s = %q, want %q", k, got[k], want[k])
		}
	}
	sources := map[string]string{"a": "", "b": "$ENV_B", "c": file, "e": "default"}
	for k, want := range sources {
		if got := sourceOf(fs, k); got != want {
			t.Errorf("source of %s = %q, want %q", k, got, want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("nope: 1\n"), 0o644)
	if err := applyConfigFile(fs, bad, getenv); err == nil || !strings.Contains(err.Error(), `unknown setting "nope"`) {
		t.Fatalf("unknown setting: %v", err)
	}
}

// The shipped config files only name settings the commands know.
func TestShippedConfigFiles(t *testing.T) {
	t.Parallel()
	for _, part := range []string{"backend", "worker", "edge"} {
		var out bytes.Buffer
		cmds := map[string]func() *pflag.FlagSet{}
		getenv := func(string) string { return "" }
		switch part {
		case "backend":
			cmds[part] = func() *pflag.FlagSet { return backendCmd(getenv, &out, &out).Flags() }
		case "worker":
			cmds[part] = func() *pflag.FlagSet { return workerCmd(getenv, &out, &out).Flags() }
		case "edge":
			cmds[part] = func() *pflag.FlagSet { return edgeCmd(getenv, &out, &out).Flags() }
		}
		if err := applyConfigFile(cmds[part](), "../../configs/"+part+".yaml", getenv); err != nil {
			t.Errorf("configs/%s.yaml: %v", part, err)
		}
	}
}

// Every command says what it does and shows an example.
func TestHelpHasExamples(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	root := []string{"--help"}
	if err := run(context.Background(), root, func(string) string { return "" }, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Examples:") {
		t.Fatalf("seckill --help has no example:\n%s", out.String())
	}
	for _, sub := range []string{"backend", "worker", "edge", "dev", "reconcile", "migrate", "bench"} {
		out.Reset()
		if err := run(context.Background(), []string{sub, "--help"}, func(string) string { return "" }, &out, &out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "Examples:") || !strings.Contains(out.String(), "Usage:") {
			t.Errorf("seckill %s --help lacks a usage or an example:\n%s", sub, out.String())
		}
	}
}

// TestOldFlagNameBeatsEnvironment: a flag given on the line under its old
// name wins over the environment variable of its current name (a backend
// started with --admin-token X beside SECKILL_BACKEND_TOKEN=Y used Y, and
// its registrations carried a MAC no edge with X accepted).
func TestOldFlagNameBeatsEnvironment(t *testing.T) {
	t.Parallel()
	getenv := func(k string) string {
		if k == "ENV_TOKEN" {
			return "from-env"
		}
		return ""
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var token string
	envFlag(fs, getenv, &token, "backend-token", "ENV_TOKEN", "", "")
	aliasFlags(fs, map[string]string{"admin-token": "backend-token"})
	if err := fs.Parse([]string{"--admin-token", "from-line"}); err != nil {
		t.Fatal(err)
	}
	if err := resolveSettings(fs, getenv); err != nil {
		t.Fatal(err)
	}
	if token != "from-line" {
		t.Fatalf("token %q, want the value given on the line under the old name", token)
	}
}
