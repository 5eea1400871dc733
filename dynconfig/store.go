package dynconfig

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path"
	"sort"
	"strconv"
	"time"

	"github.com/go-zookeeper/zk"

	"seckill/internal/zkconn"
)

// DefaultRoot is the default root path in ZooKeeper.
const DefaultRoot = "/seckill"

// DefaultHistory is how many pushes the history keeps.
const DefaultHistory = 20

// Paths under the root.
const (
	limitsNode  = "config/limits"
	historyNode = "config/history"
	edgesNode   = "edges"
)

// Record is what the limits node (and each history node) holds.
//
// Version is the configuration's version as operators see it: the ZooKeeper
// node's own data version plus one (1 for the first push). Push keeps the
// two in step; a node whose Version does not match was written around the
// CLI and is rejected by the edges.
type Record struct {
	Version  int32     `json:"version"`
	PushedAt time.Time `json:"pushed_at"`
	PushedBy string    `json:"pushed_by"`
	// RollbackOf is the version a rollback copied, 0 otherwise.
	RollbackOf int32           `json:"rollback_of,omitempty"`
	Config     json.RawMessage `json:"config"`
	// KeyID names the public key that checks Signature (KeyID).
	KeyID string `json:"key_id,omitempty"`
	// Signature is the pusher's Ed25519 signature (base64) over the
	// version and content (sign.go). Edges refuse a version without a
	// valid one.
	Signature string `json:"signature,omitempty"`
}

// DecodeRecord reads a record strictly (unknown fields are errors) and
// parses and validates its configuration.
func DecodeRecord(data []byte) (Record, Config, error) {
	var r Record
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, Config{}, fmt.Errorf("record is not valid JSON {version, pushed_at, pushed_by, config}: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return r, Config{}, errors.New("record: trailing data after the JSON object")
	}
	if len(r.Config) == 0 || string(r.Config) == "null" {
		return r, Config{}, errors.New("record has no config")
	}
	c, err := Parse(r.Config)
	if err != nil {
		return r, c, fmt.Errorf("config of version %d is invalid:\n%w", r.Version, err)
	}
	return r, c, nil
}

// ErrConflict is the error of a push whose expected version is not the
// version in ZooKeeper any more: somebody else pushed in between.
var ErrConflict = errors.New("dynconfig: version conflict")

// ConflictError says which version won. errors.Is(err, ErrConflict) holds.
type ConflictError struct {
	Expected int32
	Current  int32  // 0: no configuration
	PushedBy string // of the current version, when known
	PushedAt time.Time
}

func (e *ConflictError) Error() string {
	who := ""
	if e.PushedBy != "" {
		who = fmt.Sprintf(" (pushed by %s at %s)", e.PushedBy, e.PushedAt.Format(time.RFC3339))
	}
	return fmt.Sprintf("dynconfig: version conflict: expected version %d, but version %d is current%s", e.Expected, e.Current, who)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Store reads and writes the configuration in ZooKeeper.
type Store struct {
	conn *zk.Conn
	root string
	Keep int    // pushes kept under config/history (DefaultHistory)
	By   string // pushed_by of pushes (default user@host)
	Now  func() time.Time
	// Signer signs every version pushed; Push and Rollback refuse to run
	// without it (the edges refuse unsigned versions).
	Signer ed25519.PrivateKey
	// Roles, when set, are the deployment's ZooKeeper identities: the
	// connection must be authenticated as Roles.Pusher, nodes are created
	// with the pusher's ACL, and Init (run by every push) sets the tree's
	// ACLs. Nil: an open tree (world-writable nodes, as before H3).
	Roles *zkconn.Roles
	// Trusted are public keys, besides the Signer's own, whose versions a
	// rollback may push again (the old key during a rotation).
	Trusted []ed25519.PublicKey
}

func (s *Store) trusted() []ed25519.PublicKey {
	keys := append([]ed25519.PublicKey{}, s.Trusted...)
	if s.Signer != nil {
		keys = append(keys, s.Signer.Public().(ed25519.PublicKey))
	}
	return keys
}

// NewStore returns a store under root (DefaultRoot when empty) using conn.
func NewStore(conn *zk.Conn, root string) *Store {
	return &Store{conn: conn, root: cleanRoot(root), Keep: DefaultHistory, By: defaultBy(), Now: time.Now}
}

func cleanRoot(root string) string {
	if root == "" {
		root = DefaultRoot
	}
	root = path.Clean("/" + root)
	return root
}

func defaultBy() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	if host != "" {
		name += "@" + host
	}
	return name
}

// LimitsPath is the node holding the configuration in force.
func (s *Store) LimitsPath() string { return path.Join(s.root, limitsNode) }

func (s *Store) historyPath(v int32) string {
	return path.Join(s.root, historyNode, fmt.Sprintf("%010d", v))
}

// Dial connects to ZooKeeper (comma-separated addresses) and waits until a
// session is established or ctx ends.
func Dial(ctx context.Context, addrs string, sessionTimeout time.Duration) (*zk.Conn, <-chan zk.Event, error) {
	return DialAs(ctx, addrs, sessionTimeout, nil)
}

// DialAs is Dial authenticated as cred (nil: unauthenticated): it returns
// once the session has the credential.
func DialAs(ctx context.Context, addrs string, sessionTimeout time.Duration, cred *zkconn.Credential) (*zk.Conn, <-chan zk.Event, error) {
	if sessionTimeout <= 0 {
		sessionTimeout = 10 * time.Second
	}
	conn, events, err := zkconn.Connect([]string{addrs}, zkconn.Options{SessionTimeout: sessionTimeout, Credential: cred})
	if err != nil {
		return nil, nil, err
	}
	// Forward the events so that the caller can follow them too.
	out := make(chan zk.Event, 64)
	ready := make(chan struct{})
	go func() {
		defer close(out)
		once := false
		for ev := range events {
			if ev.Type == zk.EventSession && ev.State == zk.StateHasSession && !once {
				once = true
				close(ready)
			}
			select {
			case out <- ev:
			default: // nobody reads: drop
			}
		}
	}()
	select {
	case <-ready:
		return conn, out, nil
	case <-ctx.Done():
		conn.Close()
		return nil, nil, fmt.Errorf("connecting to ZooKeeper at %s: %w", addrs, ctx.Err())
	}
}

// do runs a ZooKeeper call, giving up when ctx ends (requests wait while the
// connection is down).
func do[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := f()
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// ensurePath creates p and its parents (persistent, empty) with acl when
// absent.
func ensurePath(ctx context.Context, conn *zk.Conn, p string, acl []zk.ACL) error {
	_, err := do(ctx, func() (struct{}, error) { return struct{}{}, zkconn.EnsurePath(conn, p, acl) })
	return err
}

// nodeACL is the ACL of the nodes the pusher creates.
func (s *Store) nodeACL() []zk.ACL {
	if s.Roles == nil {
		return zk.WorldACL(zk.PermAll)
	}
	return s.Roles.PusherACL()
}

// InitReport says what Init changed.
type InitReport struct {
	Created []string // folders created
	Secured []string // nodes whose ACL was set
	Removed []string // world-writable registrations deleted (they register again)
	Skipped []string // folders left alone (no credential given for their role)
}

// Init lays out the tree under the root with its ACLs (zkconn.Roles):
// it creates the folders missing, sets the ACL of every folder and of the
// limits and history nodes, and deletes the registrations and edge status
// nodes anyone may write (left from an open tree, or planted): real
// backends and edges register again at once, under the new ACL. The
// connection must be authenticated as the pusher, and an existing node
// must let it change the ACL (a world-open node does).
func (s *Store) Init(ctx context.Context) (InitReport, error) {
	var rep InitReport
	if s.Roles == nil {
		return rep, errors.New("dynconfig: Init needs the roles' credentials")
	}
	if parent := path.Dir(s.root); parent != "/" {
		if err := ensurePath(ctx, s.conn, parent, s.Roles.PusherACL()); err != nil {
			return rep, err
		}
	}
	for _, f := range s.Roles.Folders(s.root) {
		dir := path.Base(f.Path)
		if (dir == zkconn.BackendsDir && len(s.Roles.Backends) == 0) || (dir == zkconn.EdgesDir && len(s.Roles.Edges) == 0) {
			rep.Skipped = append(rep.Skipped, f.Path)
			continue
		}
		created, err := do(ctx, func() (bool, error) {
			_, err := s.conn.Create(f.Path, nil, 0, f.ACL)
			if errors.Is(err, zk.ErrNodeExists) {
				return false, nil
			}
			return err == nil, err
		})
		if err != nil {
			return rep, fmt.Errorf("creating %s: %w", f.Path, err)
		}
		if created {
			rep.Created = append(rep.Created, f.Path)
		} else if err := s.setACL(ctx, f.Path, f.ACL); err != nil {
			return rep, err
		} else {
			rep.Secured = append(rep.Secured, f.Path)
		}
		if dir == zkconn.BackendsDir || dir == zkconn.EdgesDir {
			removed, err := s.removeOpen(ctx, f.Path)
			rep.Removed = append(rep.Removed, removed...)
			if err != nil {
				return rep, err
			}
		}
	}
	nodes := []string{s.LimitsPath()}
	names, err := s.historyNames(ctx)
	if err != nil {
		return rep, err
	}
	for _, n := range names {
		nodes = append(nodes, path.Join(s.root, historyNode, n))
	}
	for _, p := range nodes {
		err := s.setACL(ctx, p, s.Roles.PusherACL())
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return rep, err
		}
		rep.Secured = append(rep.Secured, p)
	}
	return rep, nil
}

func (s *Store) setACL(ctx context.Context, p string, acl []zk.ACL) error {
	_, err := do(ctx, func() (*zk.Stat, error) { return s.conn.SetACL(p, acl, -1) })
	if err != nil {
		return fmt.Errorf("setting the ACL of %s: %w", p, err)
	}
	return nil
}

// removeOpen deletes the children of dir that anyone may write.
func (s *Store) removeOpen(ctx context.Context, dir string) ([]string, error) {
	kids, err := do(ctx, func() ([]string, error) { k, _, err := s.conn.Children(dir); return k, err })
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var removed []string
	for _, k := range kids {
		p := path.Join(dir, k)
		acl, err := do(ctx, func() ([]zk.ACL, error) { a, _, err := s.conn.GetACL(p); return a, err })
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("reading the ACL of %s: %w", p, err)
		}
		if !zkconn.WorldWritable(acl) {
			continue
		}
		_, err = do(ctx, func() (struct{}, error) { return struct{}{}, s.conn.Delete(p, -1) })
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			return removed, fmt.Errorf("deleting the world-writable %s: %w", p, err)
		}
		removed = append(removed, p)
	}
	return removed, nil
}

// Get returns the record in force and its configuration; the error wraps
// zk.ErrNoNode when nothing was pushed yet. A record that does not decode
// is returned with the error.
func (s *Store) Get(ctx context.Context) (Record, Config, error) {
	type got struct {
		data []byte
		st   *zk.Stat
	}
	g, err := do(ctx, func() (got, error) {
		d, st, err := s.conn.Get(s.LimitsPath())
		return got{d, st}, err
	})
	if err != nil {
		return Record{}, Config{}, fmt.Errorf("reading %s: %w", s.LimitsPath(), err)
	}
	r, c, err := DecodeRecord(g.data)
	if err == nil && r.Version != g.st.Version+1 {
		err = fmt.Errorf("record says version %d but the node is at version %d: written around `seckill config push`", r.Version, g.st.Version+1)
	}
	if err != nil {
		r.Version = g.st.Version + 1
	}
	return r, c, err
}

// Current returns the version in force (0 when nothing was pushed), even
// when its record is damaged.
func (s *Store) Current(ctx context.Context) (int32, error) {
	st, err := do(ctx, func() (*zk.Stat, error) {
		ok, st, err := s.conn.Exists(s.LimitsPath())
		if err == nil && !ok {
			st = nil
		}
		return st, err
	})
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", s.LimitsPath(), err)
	}
	if st == nil {
		return 0, nil
	}
	return st.Version + 1, nil
}

// Push validates cfg and writes it as version expected+1, only if the
// version in force is still expected (0: nothing pushed yet). It returns
// the new version, or a *ConflictError (errors.Is ErrConflict) naming the
// version that won. The history node is written in the same transaction.
func (s *Store) Push(ctx context.Context, cfg Config, expected int32) (int32, error) {
	return s.push(ctx, cfg, expected, 0)
}

func (s *Store) push(ctx context.Context, cfg Config, expected, rollbackOf int32) (int32, error) {
	if s.Signer == nil {
		return 0, errors.New("dynconfig: refusing to push unsigned: the edges accept only signed versions (a signing key: `seckill config keygen`, then --signing-key)")
	}
	if err := cfg.Validate(); err != nil {
		return 0, fmt.Errorf("dynconfig: refusing to push an invalid configuration:\n%w", err)
	}
	if expected < 0 {
		return 0, fmt.Errorf("dynconfig: expected version %d: use 0 for the first push", expected)
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return 0, err
	}
	v := expected + 1
	rec := Record{Version: v, PushedAt: s.Now().UTC().Truncate(time.Millisecond), PushedBy: s.By, RollbackOf: rollbackOf, Config: raw}
	if err := Sign(&rec, s.Signer); err != nil {
		return 0, fmt.Errorf("dynconfig: signing version %d: %w", v, err)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	acl := s.nodeACL()
	if s.Roles != nil {
		if _, err := s.Init(ctx); err != nil {
			return 0, fmt.Errorf("dynconfig: setting the ACLs: %w", err)
		}
	} else if err := ensurePath(ctx, s.conn, path.Join(s.root, historyNode), acl); err != nil {
		return 0, err
	}
	var main any
	if expected == 0 {
		main = &zk.CreateRequest{Path: s.LimitsPath(), Data: data, Acl: acl}
	} else {
		main = &zk.SetDataRequest{Path: s.LimitsPath(), Data: data, Version: expected - 1}
	}
	hist := &zk.CreateRequest{Path: s.historyPath(v), Data: data, Acl: acl}
	res, err := do(ctx, func() ([]zk.MultiResponse, error) { return s.conn.Multi(main, hist) })
	if err != nil {
		mainErr := err
		if len(res) > 0 && res[0].Error != nil {
			mainErr = res[0].Error
		}
		switch {
		case errors.Is(mainErr, zk.ErrBadVersion), errors.Is(mainErr, zk.ErrNodeExists), errors.Is(mainErr, zk.ErrNoNode):
			return 0, s.conflict(ctx, expected)
		case len(res) > 1 && errors.Is(res[1].Error, zk.ErrNodeExists):
			return 0, fmt.Errorf("dynconfig: history node %s exists already (was %s deleted and re-created?)", s.historyPath(v), s.LimitsPath())
		}
		return 0, fmt.Errorf("dynconfig: pushing version %d: %w", v, err)
	}
	s.trimHistory(ctx)
	return v, nil
}

func (s *Store) conflict(ctx context.Context, expected int32) error {
	ce := &ConflictError{Expected: expected}
	if r, _, err := s.Get(ctx); err == nil {
		ce.Current, ce.PushedBy, ce.PushedAt = r.Version, r.PushedBy, r.PushedAt
	} else if cur, err := s.Current(ctx); err == nil {
		ce.Current = cur
	}
	return ce
}

// trimHistory deletes all but the last s.History pushes (best effort).
func (s *Store) trimHistory(ctx context.Context) {
	keep := s.Keep
	if keep <= 0 {
		keep = DefaultHistory
	}
	names, err := s.historyNames(ctx)
	if err != nil || len(names) <= keep {
		return
	}
	for _, n := range names[:len(names)-keep] {
		p := path.Join(s.root, historyNode, n)
		_, _ = do(ctx, func() (struct{}, error) { return struct{}{}, s.conn.Delete(p, -1) })
	}
}

func (s *Store) historyNames(ctx context.Context) ([]string, error) {
	names, err := do(ctx, func() ([]string, error) {
		n, _, err := s.conn.Children(path.Join(s.root, historyNode))
		return n, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sort.Strings(names) // zero-padded
	return names, nil
}

// History returns the pushes kept, oldest first. A damaged entry is
// returned with Config nil and its version from the node name.
func (s *Store) History(ctx context.Context) ([]Record, error) {
	names, err := s.historyNames(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(names))
	for _, n := range names {
		p := path.Join(s.root, historyNode, n)
		data, err := do(ctx, func() ([]byte, error) { d, _, err := s.conn.Get(p); return d, err })
		if errors.Is(err, zk.ErrNoNode) {
			continue // trimmed meanwhile
		}
		if err != nil {
			return nil, err
		}
		var r Record
		if json.Unmarshal(data, &r) != nil {
			v, _ := strconv.ParseInt(n, 10, 32)
			r = Record{Version: int32(v)}
		}
		out = append(out, r)
	}
	return out, nil
}

// Rollback pushes the configuration of an old version (from the history)
// as a new version, only if the version in force is still expected.
func (s *Store) Rollback(ctx context.Context, version, expected int32) (int32, error) {
	p := s.historyPath(version)
	data, err := do(ctx, func() ([]byte, error) { d, _, err := s.conn.Get(p); return d, err })
	if errors.Is(err, zk.ErrNoNode) {
		return 0, fmt.Errorf("dynconfig: version %d is not in the history (only the last %d pushes are kept)", version, s.Keep)
	}
	if err != nil {
		return 0, err
	}
	rec, cfg, err := DecodeRecord(data)
	if err != nil {
		return 0, fmt.Errorf("dynconfig: version %d: %w", version, err)
	}
	// Signing it again must not launder a history entry somebody wrote
	// around the CLI.
	if err := Verify(rec, s.trusted()); err != nil {
		return 0, fmt.Errorf("dynconfig: refusing to roll back to version %d: %w (its signer's public key may be given with --config-public-keys)", version, err)
	}
	return s.push(ctx, cfg, expected, version)
}

// EdgeStatus is what each edge reports in its registration node
// root/edges/<id> (ephemeral).
type EdgeStatus struct {
	Edge       string    `json:"edge"`
	Version    int32     `json:"version"` // in force; 0: the static configuration
	Source     string    `json:"source"`  // zookeeper, disk or static
	LastReload time.Time `json:"last_reload"`
	LastError  string    `json:"last_error"`
	Since      time.Time `json:"since"`
}

// Edges returns the registration of every live edge, sorted by id.
func (s *Store) Edges(ctx context.Context) ([]EdgeStatus, error) {
	dir := path.Join(s.root, edgesNode)
	names, err := do(ctx, func() ([]string, error) { n, _, err := s.conn.Children(dir); return n, err })
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []EdgeStatus
	for _, n := range names {
		p := path.Join(dir, n)
		data, err := do(ctx, func() ([]byte, error) { d, _, err := s.conn.Get(p); return d, err })
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var es EdgeStatus
		if json.Unmarshal(data, &es) != nil {
			es = EdgeStatus{LastError: "unreadable registration"}
		}
		es.Edge = n
		out = append(out, es)
	}
	return out, nil
}
