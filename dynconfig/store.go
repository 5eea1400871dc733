package dynconfig

import (
	"bytes"
	"context"
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
	if sessionTimeout <= 0 {
		sessionTimeout = 10 * time.Second
	}
	conn, events, err := connect(addrs, sessionTimeout, nil)
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

func connect(addrs string, sessionTimeout time.Duration, dialer zk.Dialer) (*zk.Conn, <-chan zk.Event, error) {
	return zkconn.Connect([]string{addrs}, zkconn.Options{SessionTimeout: sessionTimeout, Dialer: dialer})
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

// ensurePath creates p and its parents (persistent, empty) when absent.
func ensurePath(ctx context.Context, conn *zk.Conn, p string) error {
	_, err := do(ctx, func() (struct{}, error) { return struct{}{}, zkconn.EnsurePath(conn, p, zk.WorldACL(zk.PermAll)) })
	return err
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
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	if err := ensurePath(ctx, s.conn, path.Join(s.root, historyNode)); err != nil {
		return 0, err
	}
	acl := zk.WorldACL(zk.PermAll)
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
	_, cfg, err := DecodeRecord(data)
	if err != nil {
		return 0, fmt.Errorf("dynconfig: version %d: %w", version, err)
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
