package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMakeRunCtrlC: Ctrl-C on `make run` (typed on a terminal: script(1)
// gives make a pseudo-terminal) stops seckill cleanly and make exits 0,
// without "make: *** [run] Error 1".
func TestMakeRunCtrlC(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) not installed")
	}
	addr := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command("script", "-qefc", "make -C .. run ARGS='--public-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --no-demo --addr-file "+addr+"'", "/dev/null")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(2 * time.Minute) // the first build may take long
	for {
		if b, _ := os.ReadFile(addr); len(b) > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("make run ended before listening: %v\n%s", err, out.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("make run did not listen:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := stdin.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || strings.Contains(out.String(), "make: ***") {
			t.Fatalf("make run after Ctrl-C: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "msg=stopped") {
			t.Fatalf("seckill did not stop cleanly:\n%s", out.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("make run still runs 30 s after Ctrl-C:\n%s", out.String())
	}
}
