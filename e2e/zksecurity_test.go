package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"seckill/internal/testenv"
)

// TestZooKeeperLockedDown runs the real commands against the real
// ZooKeeper: `config keygen`, `config init` with the three roles'
// credentials, a backend and an edge with theirs. Nobody without a
// credential can register or push; a push without the signing key is
// refused; a signed push reaches the edge; the edge routes to the real
// backend and never to a registration planted without the backend token.
func TestZooKeeperLockedDown(t *testing.T) {
	t.Parallel()
	zkAddr := testenv.ZooKeeper(t)
	root := "/" + testenv.Name(t)
	s := newStack(t)
	dir := t.TempDir()
	const token = "e2e-internal-backend-token-0123456789"
	base := append(os.Environ(), "SECKILL_ZK="+zkAddr, "SECKILL_ZK_ROOT="+root, "SECKILL_LOG_LEVEL=warn")
	creds := []string{"SECKILL_ZK_PUSHER=pusher:pusher-pw", "SECKILL_ZK_BACKEND=backend:backend-pw", "SECKILL_ZK_EDGE=edge:edge-pw"}
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(binary, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	key := filepath.Join(dir, "limits")
	if out, err := run(base, "config", "keygen", "--out", key); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	if st, err := os.Stat(key + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", st, err)
	}
	pub, _ := os.ReadFile(key + ".pub")
	if out, err := run(append(base, creds...), "config", "init"); err != nil || !strings.Contains(out, "created "+root+"/backends") {
		t.Fatalf("init: %v\n%s", err, out)
	}

	be := startBackend(t, s, s.amqpURL, "--zk", zkAddr, "--zk-root", root, "--zk-auth", "backend:backend-pw", "--admin-token", token)
	conn, _, err := zk.Connect([]string{zkAddr}, 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testenv.Eventually(t, 10*time.Second, "the backend's registration", func() bool {
		kids, _, _ := conn.Children(path.Join(root, "backends"))
		return len(kids) == 1
	})
	// Nobody without the backends' credential registers.
	rogue := []byte(`{"url":"http://127.0.0.1:1","started_at":"2026-01-01T00:00:00Z","mac":"AAAA"}`)
	if _, err := conn.Create(path.Join(root, "backends", "backend-rogue"), rogue, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
		t.Fatalf("an anonymous registration: %v", err)
	}

	ep := startEdgeProc(t, s, time.Now().Add(30*time.Second), "--zk", zkAddr, "--zk-root", root, "--zk-auth", "edge:edge-pw",
		"--backend-token", token, "--config-public-keys", strings.TrimSpace(string(pub)), "--edge-id", "e2e-edge")
	status := func() (version int32, lastErr string) {
		data, _, err := conn.Get(path.Join(root, "edges", "e2e-edge"))
		if err != nil {
			return -1, err.Error()
		}
		var es struct {
			Version   int32  `json:"version"`
			LastError string `json:"last_error"`
		}
		_ = json.Unmarshal(data, &es)
		return es.Version, es.LastError
	}
	testenv.Eventually(t, 10*time.Second, "the edge's status node", func() bool { v, _ := status(); return v == 0 })

	file := "../configs/edge-dynamic.yaml"
	if out, err := run(base, "config", "push", "--signing-key", key+".key", file); err == nil || !strings.Contains(out, "not authenticated") {
		t.Fatalf("a push without the pusher's credential: %v\n%s", err, out)
	}
	if out, err := run(append(base, creds...), "config", "push", file); err == nil || !strings.Contains(out, "unsigned") {
		t.Fatalf("a push without the signing key: %v\n%s", err, out)
	}
	if out, err := run(append(base, creds...), "config", "push", "--signing-key", key+".key", file); err != nil {
		t.Fatalf("signed push: %v\n%s", err, out)
	}
	testenv.Eventually(t, 5*time.Second, "version 1 in force on the edge", func() bool { v, e := status(); return v == 1 && e == "" })
	if out, err := run(base, "config", "show"); err != nil || !strings.Contains(out, "version 1, pushed at") || !strings.Contains(out, ", signed by key ") ||
		!strings.Contains(out, "e2e-edge") {
		t.Fatalf("config show (anyone may read): %v\n%s", err, out)
	}

	resp, err := client.Get(ep.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `seckill_edge_backends{state="closed",url="`+be.url+`"}`) || strings.Contains(string(body), "127.0.0.1:1\"") {
		t.Fatalf("the edge's backends:\n%s", grepLines(string(body), "seckill_edge_backends"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
