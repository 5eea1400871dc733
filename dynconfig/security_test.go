package dynconfig

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"seckill/internal/testenv"
	"seckill/internal/zkconn"
)

func newKey(t *testing.T) (ed25519.PrivateKey, ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// record returns the node content of version v holding cfg, signed with
// key (nil: unsigned).
func record(t *testing.T, v int32, cfg Config, key ed25519.PrivateKey) []byte {
	t.Helper()
	raw, _ := json.Marshal(cfg)
	r := Record{Version: v, PushedAt: time.Now().UTC(), PushedBy: "mallory", Config: raw}
	if key != nil {
		if err := Sign(&r, key); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(r)
	return b
}

func TestSignature(t *testing.T) {
	priv, pub := newKey(t)
	_, other := newKey(t)
	raw, _ := json.Marshal(cfgN(3))
	r := Record{Version: 4, RollbackOf: 2, PushedAt: time.Now().UTC(), PushedBy: "ops", Config: raw}
	if err := Verify(r, []ed25519.PublicKey{pub}); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned: %v", err)
	}
	if err := Sign(&r, priv); err != nil {
		t.Fatal(err)
	}
	if r.KeyID != KeyID(pub) || len(r.KeyID) != 16 {
		t.Fatalf("key id %q, want %q", r.KeyID, KeyID(pub))
	}
	if err := Verify(r, []ed25519.PublicKey{other, pub}); err != nil {
		t.Fatalf("good signature, second key: %v", err)
	}
	if err := Verify(r, []ed25519.PublicKey{other}); err == nil {
		t.Fatal("verified with a key that did not sign")
	}
	// The signature survives the JSON round trip and covers every field.
	b, _ := json.Marshal(r)
	back, _, err := DecodeRecord(b)
	if err != nil || Verify(back, []ed25519.PublicKey{pub}) != nil {
		t.Fatalf("round trip: %v / %v", err, Verify(back, []ed25519.PublicKey{pub}))
	}
	for name, change := range map[string]func(*Record){
		"version":     func(r *Record) { r.Version = 5 },
		"rollback_of": func(r *Record) { r.RollbackOf = 1 },
		"pushed_by":   func(r *Record) { r.PushedBy = "x" },
		"pushed_at":   func(r *Record) { r.PushedAt = r.PushedAt.Add(time.Millisecond) },
		"config":      func(r *Record) { c, _ := json.Marshal(cfgN(4)); r.Config = c },
	} {
		c := back
		change(&c)
		if Verify(c, []ed25519.PublicKey{pub}) == nil {
			t.Errorf("%s changed: still verifies", name)
		}
	}
}

func TestPushRefusedWithoutSigningKey(t *testing.T) {
	addr := testenv.ZooKeeper(t)
	conn := dial(t, addr)
	root := newRoot(t, conn)
	st := NewStore(conn, root)
	if _, err := st.Push(context.Background(), cfgN(1), 0); err == nil || !strings.Contains(err.Error(), "unsigned") {
		t.Fatalf("push without a key: %v", err)
	}
	if ok, _, _ := conn.Exists(st.LimitsPath()); ok {
		t.Fatal("an unsigned version was written")
	}
}

// An unsigned version, one signed by a key the edge does not trust, and a
// replayed older signed version (written over the node, and with the node
// deleted and created again so that its number matches) are all ignored:
// the edge keeps its last good configuration, also on disk.
func TestUnsignedAndReplayedVersionsIgnored(t *testing.T) {
	addr := testenv.ZooKeeper(t)
	conn := dial(t, addr)
	root := newRoot(t, conn)
	st := newStore(conn, root)
	dir := t.TempDir()
	a := startEdge(t, addr, root, "edge-a", filepath.Join(dir, "a.json"))
	push(t, st, cfgN(1), 0)
	old, _, err := conn.Get(st.LimitsPath()) // signed version 1
	if err != nil {
		t.Fatal(err)
	}
	push(t, st, cfgN(2), 1)
	testenv.Eventually(t, 2*time.Second, "version 2 applied", func() bool { return a.lastBurst() == 2 })

	keep := func(what string, rejected, stale float64) {
		t.Helper()
		testenv.Eventually(t, 2*time.Second, what+" seen", func() bool {
			return a.metric(ResultRejected) == rejected && a.metric(ResultStale) == stale
		})
		if s := a.w.Status(); s.Version != 2 || a.lastBurst() != 2 || len(a.applied()) != 2 {
			t.Fatalf("after %s: status %+v, burst %d, applied %d", what, s, a.lastBurst(), len(a.applied()))
		}
		data, _ := os.ReadFile(a.disk)
		if r, _, err := DecodeRecord(data); err != nil || r.Version != 2 {
			t.Fatalf("after %s: disk copy %+v, %v", what, r, err)
		}
	}
	// Unsigned version 3 (the node's next number).
	if _, err := conn.Set(st.LimitsPath(), record(t, 3, cfgN(99), nil), 1); err != nil {
		t.Fatal(err)
	}
	keep("an unsigned version", 1, 0)
	if s := a.w.Status(); !strings.Contains(s.LastError, "version is not signed") {
		t.Fatalf("last error %q", s.LastError)
	}
	// Version 4 signed by a key the edge does not know.
	rogue, _ := newKey(t)
	if _, err := conn.Set(st.LimitsPath(), record(t, 4, cfgN(99), rogue), 2); err != nil {
		t.Fatal(err)
	}
	keep("a version signed by an unknown key", 2, 0)
	if s := a.w.Status(); !strings.Contains(s.LastError, "bad signature") {
		t.Fatalf("last error %q", s.LastError)
	}
	// The signed version 1 written again over the node (now version 5).
	if _, err := conn.Set(st.LimitsPath(), old, 3); err != nil {
		t.Fatal(err)
	}
	keep("signed version 1 replayed over the node", 3, 0)
	// The node deleted and created again with signed version 1: its number
	// matches the node's, and it is older than the version in force.
	if err := conn.Delete(st.LimitsPath(), -1); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Create(st.LimitsPath(), old, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	keep("signed version 1 replayed in a new node", 3, 1)

	// A restarted edge with the same disk copy, ZooKeeper up: it starts
	// from version 2 and refuses the replayed version 1 in ZooKeeper.
	b := startEdge(t, addr, root, "edge-b", a.disk)
	testenv.Eventually(t, 2*time.Second, "replay counted stale", func() bool { return b.metric(ResultStale) == 1 })
	if b.lastBurst() != 2 || b.w.Status().Version != 2 {
		t.Fatalf("restarted edge: burst %d, status %+v", b.lastBurst(), b.w.Status())
	}
}

// A key rotation: edges trust the old and the new key, the pusher moves to
// the new key, then the old key is dropped from the edges.
func TestKeyRotation(t *testing.T) {
	addr := testenv.ZooKeeper(t)
	conn := dial(t, addr)
	root := newRoot(t, conn)
	oldKey, oldPub := newKey(t)
	newKey, newPub := newKey(t)
	st := NewStore(conn, root)
	st.Signer = oldKey
	dir := t.TempDir()
	both := startEdge(t, addr, root, "edge-both", filepath.Join(dir, "both.json"), WithPublicKeys(oldPub, newPub))
	onlyNew := startEdge(t, addr, root, "edge-new", filepath.Join(dir, "new.json"), WithPublicKeys(newPub))

	push(t, st, cfgN(1), 0) // old key
	testenv.Eventually(t, 2*time.Second, "old-key version applied where trusted", func() bool { return both.lastBurst() == 1 })
	testenv.Eventually(t, 2*time.Second, "old-key version refused by the new-only edge", func() bool { return onlyNew.metric(ResultRejected) == 1 })
	st.Signer = newKey
	push(t, st, cfgN(2), 1) // new key
	for _, e := range []*edge{both, onlyNew} {
		testenv.Eventually(t, 2*time.Second, "new-key version applied", func() bool { return e.lastBurst() == 2 })
	}
	// Rollback to version 1 is a new version, signed with the new key; the
	// pusher re-signs the old key's version only when it trusts that key.
	if _, err := st.Rollback(context.Background(), 1, 2); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("rollback to the old key's version without trusting it: %v", err)
	}
	st.Trusted = []ed25519.PublicKey{oldPub}
	v, err := st.Rollback(context.Background(), 1, 2)
	if err != nil || v != 3 {
		t.Fatalf("rollback: %d, %v", v, err)
	}
	for _, e := range []*edge{both, onlyNew} {
		testenv.Eventually(t, 2*time.Second, "rollback applied", func() bool { return e.lastBurst() == 1 && e.w.Status().Version == 3 })
	}
	if n := len(onlyNew.applied()); n != 2 {
		t.Fatalf("new-only edge applied %d versions, want 2", n)
	}
	// A history entry written around the CLI is never signed again by a
	// rollback.
	if _, err := conn.Set(st.historyPath(2), record(t, 2, cfgN(99), nil), -1); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Rollback(context.Background(), 2, 3); err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Fatalf("rollback to an unsigned history entry: %v", err)
	}

	// (GenerateKey/Parse round trip, as `seckill config keygen` writes them.)
	pubS, privS, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKey(privS + "\n")
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := ParsePublicKeys(pubS + ", " + pubS)
	if err != nil || len(pubs) != 2 || !pubs[0].Equal(priv.Public()) {
		t.Fatalf("ParsePublicKeys: %v, %d", err, len(pubs))
	}
}

func cred(user string) *zkconn.Credential {
	return &zkconn.Credential{User: user, Password: user + "-secret-" + strings.Repeat("x", 8)}
}

func dialAs(t *testing.T, addr string, c *zkconn.Credential) *zk.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := DialAs(ctx, addr, 10*time.Second, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// With the roles' credentials: only the pusher writes configuration
// nodes; an unauthenticated client, a backend and an edge cannot create or
// change them; an edge writes its own status node; a world-open tree left
// from before is taken over by the first push.
func TestACLs(t *testing.T) {
	addr := testenv.ZooKeeper(t)
	anon := dial(t, addr)
	root := newRoot(t, anon)
	pusher, backendC, edgeC := cred("pusher"), cred("backend"), cred("edge")
	roles := &zkconn.Roles{Pusher: *pusher, Backends: []zkconn.Credential{*backendC}, Edges: []zkconn.Credential{*edgeC}}

	// An open tree from before: folders and a planted registration.
	if err := zkconn.EnsurePath(anon, path.Join(root, "backends"), zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	planted, err := anon.Create(path.Join(root, "backends", "backend-rogue"), []byte(`{"url":"http://evil"}`), zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatal(err)
	}

	st := newStore(dialAs(t, addr, pusher), root)
	st.Roles = roles
	push(t, st, cfgN(1), 0)
	if ok, _, _ := anon.Exists(planted); ok {
		t.Fatal("the world-writable registration survived the push")
	}
	for _, f := range roles.Folders(root) {
		acl, _, err := anon.GetACL(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		if zkconn.WorldWritable(acl) {
			t.Fatalf("%s still world-writable: %v", f.Path, acl)
		}
	}

	data := record(t, 2, cfgN(99), testKey)
	for name, c := range map[string]*zk.Conn{"anonymous": anon, "backend": dialAs(t, addr, backendC), "edge": dialAs(t, addr, edgeC)} {
		if _, err := c.Set(st.LimitsPath(), data, -1); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("%s set the limits node: %v", name, err)
		}
		if _, err := c.Create(path.Join(root, "config", "other"), data, 0, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("%s created a config node: %v", name, err)
		}
		if _, err := c.Create(st.historyPath(2), data, 0, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("%s created a history node: %v", name, err)
		}
		if err := c.Delete(st.LimitsPath(), -1); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("%s deleted the limits node: %v", name, err)
		}
		if _, err := c.SetACL(st.LimitsPath(), zk.WorldACL(zk.PermAll), -1); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("%s changed the limits node's ACL: %v", name, err)
		}
		if name != "edge" {
			if _, err := c.Create(path.Join(root, "edges", "fake"), nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
				t.Errorf("%s created an edge status node: %v", name, err)
			}
		}
		if name != "backend" {
			if _, err := c.Create(path.Join(root, "backends", "backend-x"), nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
				t.Errorf("%s created a registration: %v", name, err)
			}
		}
	}

	// An edge with its credential reads the configuration (anyone may) and
	// writes its status node, which others can read but not change.
	e := startEdge(t, addr, root, "edge-a", filepath.Join(t.TempDir(), "a.json"), WithCredential(edgeC))
	testenv.Eventually(t, 2*time.Second, "version 1 applied", func() bool { return e.lastBurst() == 1 })
	testenv.Eventually(t, 2*time.Second, "status node", func() bool { r, ok := registration(t, anon, root, "edge-a"); return ok && r.Version == 1 })
	if _, err := anon.Set(path.Join(root, "edges", "edge-a"), []byte(`{}`), -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Fatalf("anonymous changed an edge's status: %v", err)
	}
	es, err := st.Edges(context.Background())
	if err != nil || len(es) != 1 || es[0].Version != 1 {
		t.Fatalf("the pusher's view of the edges: %+v, %v", es, err)
	}
}
