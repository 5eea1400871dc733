package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"seckill"
	"seckill/internal/testenv"
	"seckill/internal/zkconn"
)

const token = "internal-backend-token-0123456789abcdef"

func signedNode(url string, key []byte) []byte {
	n := Node{URL: url, StartedAt: time.Now().UTC()}
	if key != nil {
		n.Sign(key)
	}
	b, _ := json.Marshal(n)
	return b
}

// A rogue registration (no MAC, a MAC under another key, a MAC under the
// empty token, a real registration's MAC moved to another URL) is never
// routed to, neither from ZooKeeper nor from the cached list.
func TestRogueRegistrationsIgnored(t *testing.T) {
	t.Parallel()
	addr, root := zkRoot(t)
	real, evil := startFake(t), startFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg, err := Register(ctx, []string{addr}, root, real.url(), quiet(), WithSessionTimeout(session), WithAdminToken(token))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	conn, _, err := zk.Connect([]string{addr}, session, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	realData, _, err := conn.Get(reg.Path())
	if err != nil {
		t.Fatal(err)
	}
	var moved Node
	_ = json.Unmarshal(realData, &moved)
	moved.URL = evil.url()
	movedData, _ := json.Marshal(moved)
	rogues := [][]byte{
		signedNode(evil.url(), nil),
		signedNode(evil.url(), RegistrationKey("another-token")),
		signedNode(evil.url(), RegistrationKey("")),
		movedData,
	}
	for _, data := range rogues {
		if _, err := conn.Create(path.Join(backendsPath(root), "backend-rogue-"), data, zk.FlagSequence|zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	cache := filepath.Join(t.TempDir(), "backends.json")
	bal, err := NewBalancer(ctx, []string{addr}, root, WithLogger(quiet()), WithAdminToken(token), WithCache(cache))
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	waitURLs(t, bal, 5*time.Second, real.url())
	if got := bal.Rejected(); got != int64(len(rogues)) {
		t.Fatalf("rejected %d registrations, want %d", got, len(rogues))
	}
	for i := range 20 {
		if _, err := bal.Reserve(ctx, 1, seckill.Account{ID: int64(i)}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if r, e := real.calls.Load(), evil.calls.Load(); r != 20 || e != 0 {
		t.Fatalf("calls: real %d, rogue %d; want 20, 0", r, e)
	}
	// A balancer with a third token trusts none of them.
	other, err := NewBalancer(ctx, []string{addr}, root, WithLogger(quiet()), WithAdminToken("a-third-token"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if got := urls(other); len(got) != 0 || other.Rejected() != int64(len(rogues)+1) {
		t.Fatalf("balancer with another token: %v, rejected %d", got, other.Rejected())
	}

	// The cached list holds only the real registration; a rogue entry
	// written into the file makes the file ignored.
	testenv.Eventually(t, 5*time.Second, "the cache file", func() bool {
		u, err := loadCache(cache, RegistrationKey(token))
		return err == nil && slices.Equal(u, []string{real.url()})
	})
	raw, _ := os.ReadFile(cache)
	var c backendCache
	_ = json.Unmarshal(raw, &c)
	c.Backends = append(c.Backends, cachedNode{Name: "backend-rogue", Data: rogues[0]})
	raw, _ = json.Marshal(c)
	if err := os.WriteFile(cache, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if u, err := loadCache(cache, RegistrationKey(token)); err == nil {
		t.Fatalf("tampered cache accepted: %v", u)
	}
}

// With the tree laid out by the pusher (zkconn.Roles): a backend with its
// credential registers, its node is writable by it alone; an
// unauthenticated client or an unknown identity cannot register, nor change
// or delete a registration.
func TestRegistrationACL(t *testing.T) {
	t.Parallel()
	addr, root := zkRoot(t)
	pusher := zkconn.Credential{User: "pusher", Password: "pusher-secret"}
	backendC := zkconn.Credential{User: "backend", Password: "backend-secret"}
	roles := zkconn.Roles{Pusher: pusher, Backends: []zkconn.Credential{backendC}}
	admin := connectAs(t, addr, &pusher)
	for _, f := range roles.Folders(root) {
		if err := zkconn.EnsurePath(admin, f.Path, f.ACL); err != nil {
			t.Fatal(err)
		}
	}
	a := startFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg, err := Register(ctx, []string{addr}, root, a.url(), quiet(), WithSessionTimeout(session), WithAdminToken(token), WithCredential(&backendC))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	bal, err := NewBalancer(ctx, []string{addr}, root, WithLogger(quiet()), WithAdminToken(token), WithCredential(&zkconn.Credential{User: "edge", Password: "edge-secret"}))
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	waitURLs(t, bal, 5*time.Second, a.url())

	data := signedNode("http://evil", RegistrationKey(token)) // even with the key
	for name, c := range map[string]*zk.Conn{
		"anonymous": connectAs(t, addr, nil),
		"unknown":   connectAs(t, addr, &zkconn.Credential{User: "backend", Password: "guessed"}),
		"pusher":    admin,
	} {
		if _, err := c.Set(reg.Path(), data, -1); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("%s changed a registration: %v", name, err)
		}
		if name == "pusher" {
			continue // the pusher may delete (cleanup); it cannot register
		}
		if _, err := c.Create(path.Join(backendsPath(root), "backend-x"), data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("%s registered: %v", name, err)
		}
		if err := c.Delete(reg.Path(), -1); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("%s deleted a registration: %v", name, err)
		}
	}
	if got := urls(bal); !slices.Equal(got, []string{a.url()}) {
		t.Fatalf("backends %v", got)
	}
	// Registering without the credential fails in the ACL'd tree.
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	if r, err := Register(rctx, []string{addr}, root, "http://no-credential", quiet(), WithAdminToken(token)); err == nil {
		r.Close()
		t.Fatal("a backend without the credential registered")
	}
}

func connectAs(t *testing.T, addr string, c *zkconn.Credential) *zk.Conn {
	t.Helper()
	conn, events, err := zkconn.Connect([]string{addr}, zkconn.Options{SessionTimeout: session, Credential: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.Type == zk.EventSession && ev.State == zk.StateHasSession {
				return conn
			}
		case <-deadline:
			t.Fatal("no ZooKeeper session")
		}
	}
}

// TestAuthenticatedRegistrationAfterSessionExpiry: a backend with its
// credential, cut off from ZooKeeper past its session, registers again on
// the new session (the credential is sent again) in the ACL'd tree.
func TestAuthenticatedRegistrationAfterSessionExpiry(t *testing.T) {
	t.Parallel()
	addr, root := zkRoot(t)
	pusher := zkconn.Credential{User: "pusher", Password: "pusher-secret"}
	backendC := zkconn.Credential{User: "backend", Password: "backend-secret"}
	roles := zkconn.Roles{Pusher: pusher, Backends: []zkconn.Credential{backendC}}
	admin := connectAs(t, addr, &pusher)
	for _, f := range roles.Folders(root) {
		if err := zkconn.EnsurePath(admin, f.Path, f.ACL); err != nil {
			t.Fatal(err)
		}
	}
	a := startFake(t)
	ca := &cutter{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := Register(ctx, []string{addr}, root, a.url(), quiet(), WithSessionTimeout(session), WithDialer(ca.dial),
		WithAdminToken(token), WithCredential(&backendC))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	bal, err := NewBalancer(ctx, []string{addr}, root, WithSessionTimeout(session), WithLogger(quiet()), WithAdminToken(token))
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	waitURLs(t, bal, 5*time.Second, a.url())
	first := r.Path()
	ca.Cut()
	waitURLs(t, bal, 4*session, []string{}...)
	ca.Restore()
	waitURLs(t, bal, 4*session, a.url())
	if r.Created() != 2 || r.Path() == first {
		t.Fatalf("created %d nodes, path %s (first %s)", r.Created(), r.Path(), first)
	}
	acl, _, err := admin.GetACL(r.Path())
	if err != nil || zkconn.WorldWritable(acl) || len(acl) != 2 || acl[0].Scheme != "digest" || !strings.HasPrefix(acl[0].ID, "backend:") {
		t.Fatalf("ACL of the new registration: %v, %v", acl, err)
	}
}
