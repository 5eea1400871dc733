package dynconfig

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus"

	"seckill/internal/atomicfile"
	"seckill/internal/zkconn"
)

// Reload results (label result of seckill_config_reloads_total).
const (
	ResultApplied  = "applied"
	ResultRejected = "rejected"
	ResultStale    = "stale"
)

// Sources of the configuration in force.
const (
	SourceStatic    = "static"
	SourceDisk      = "disk"
	SourceZooKeeper = "zookeeper"
)

// WatcherOption tunes a Watcher.
type WatcherOption func(*Watcher)

// WithRegisterer registers the watcher's metrics on reg (by default they are
// registered nowhere).
func WithRegisterer(reg prometheus.Registerer) WatcherOption {
	return func(w *Watcher) { w.reg = reg }
}

// WithSessionTimeout sets the ZooKeeper session timeout (default 10s; the
// server bounds it to 2..20 ticks).
func WithSessionTimeout(d time.Duration) WatcherOption {
	return func(w *Watcher) { w.sessionTimeout = d }
}

// WithStartTimeout sets how long Run waits for ZooKeeper at start before it
// loads the copy on disk (default 3s).
func WithStartTimeout(d time.Duration) WatcherOption {
	return func(w *Watcher) { w.startTimeout = d }
}

// WithDialer sets the dialer of the ZooKeeper connection (tests use it to
// cut the network).
func WithDialer(d zk.Dialer) WatcherOption {
	return func(w *Watcher) { w.dialer = d }
}

// WithCredential authenticates the watcher's session (the edge's digest
// identity): its status node is then writable by it alone, and it never
// creates folders (the pusher lays them out: `seckill config init`).
func WithCredential(c *zkconn.Credential) WatcherOption {
	return func(w *Watcher) { w.cred = c }
}

// WithPublicKeys sets the public keys a version's signature is checked
// with (any of them may have signed it: a rotation lists old and new).
// Without a key every version is refused.
func WithPublicKeys(keys ...ed25519.PublicKey) WatcherOption {
	return func(w *Watcher) { w.keys = append(w.keys, keys...) }
}

// Watcher keeps one edge's configuration in step with ZooKeeper.
type Watcher struct {
	addrs          string
	root           string
	diskPath       string
	edgeID         string
	apply          func(Config) error
	log            *slog.Logger
	reg            prometheus.Registerer
	sessionTimeout time.Duration
	startTimeout   time.Duration
	dialer         zk.Dialer
	cred           *zkconn.Credential
	keys           []ed25519.PublicKey
	start          time.Time

	mu         sync.Mutex // serialises reloads and guards the fields below
	version    int32      // in force; 0 = the caller's static configuration
	source     string
	inForce    []byte // config JSON in force
	rejected   int32  // last rejected version, so a re-read does not count twice
	rejectedAt []byte
	lastGood   time.Time
	lastReload time.Time
	lastErr    string
	conn       *zk.Conn

	mVersion   prometheus.Gauge
	mReloads   *prometheus.CounterVec
	mConnected prometheus.Gauge
	mSince     prometheus.GaugeFunc
}

// NewWatcher returns a watcher of the configuration under root (DefaultRoot
// when empty) in the ZooKeeper at addrs (comma-separated). apply swaps a
// new configuration in (atomically, from the edge's point of view); an
// error from it rejects that version. diskPath keeps the last good copy
// ("" = none); edgeID names the registration node root/edges/<edgeID>.
func NewWatcher(addrs, root, diskPath, edgeID string, apply func(Config) error, log *slog.Logger, opts ...WatcherOption) (*Watcher, error) {
	if apply == nil {
		return nil, errors.New("dynconfig: NewWatcher: apply is nil")
	}
	if edgeID == "" || path.Base("/"+edgeID) != edgeID {
		return nil, fmt.Errorf("dynconfig: NewWatcher: edge id %q must be a non-empty node name", edgeID)
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Watcher{
		addrs: addrs, root: cleanRoot(root), diskPath: diskPath, edgeID: edgeID, apply: apply,
		log: log.With("component", "dynconfig", "edge", edgeID), sessionTimeout: 10 * time.Second,
		startTimeout: 3 * time.Second, start: time.Now(), source: SourceStatic,
	}
	for _, o := range opts {
		o(w)
	}
	w.mVersion = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "seckill_config_version", Help: "Version of the dynamic limiter configuration in force (0: the static one).",
	})
	w.mReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "seckill_config_reloads_total", Help: "Configuration versions seen, by result: applied, rejected (invalid, kept the previous one) or stale (older than the one in force).",
	}, []string{"result"})
	for _, r := range []string{ResultApplied, ResultRejected, ResultStale} {
		w.mReloads.WithLabelValues(r)
	}
	w.mConnected = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "seckill_config_zookeeper_connected", Help: "1 while the configuration watcher has a ZooKeeper session.",
	})
	w.mSince = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "seckill_config_seconds_since_last_good_reload", Help: "Seconds since a configuration was last applied (since start when none was).",
	}, func() float64 {
		w.mu.Lock()
		t := w.lastGood
		w.mu.Unlock()
		if t.IsZero() {
			t = w.start
		}
		return time.Since(t).Seconds()
	})
	if w.reg != nil {
		for _, c := range []prometheus.Collector{w.mVersion, w.mReloads, w.mConnected, w.mSince} {
			if err := w.reg.Register(c); err != nil {
				return nil, fmt.Errorf("dynconfig: registering metrics: %w", err)
			}
		}
	}
	return w, nil
}

// Status is the watcher's state.
type Status struct {
	Version    int32 // in force; 0: the static configuration
	Source     string
	LastReload time.Time
	LastGood   time.Time
	LastError  string
}

// Status returns the watcher's state.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Status{Version: w.version, Source: w.source, LastReload: w.lastReload, LastGood: w.lastGood, LastError: w.lastErr}
}

func (w *Watcher) limitsPath() string { return path.Join(w.root, limitsNode) }
func (w *Watcher) edgePath() string   { return path.Join(w.root, edgesNode, w.edgeID) }

// LoadLast applies the last good copy on disk, if there is one and it is
// newer than the configuration in force. It returns the version in force.
// Run calls it when ZooKeeper is unreachable at start.
func (w *Watcher) LoadLast() (int32, error) {
	return w.loadLast("ZooKeeper unreachable: applied the last good configuration from disk")
}

func (w *Watcher) loadLast(msg string) (int32, error) {
	if w.diskPath == "" {
		return w.Status().Version, errors.New("dynconfig: no disk path")
	}
	data, err := os.ReadFile(w.diskPath)
	if err != nil {
		return w.Status().Version, fmt.Errorf("dynconfig: reading the last good copy: %w", err)
	}
	rec, cfg, err := DecodeRecord(data)
	if err == nil {
		err = Verify(rec, w.keys)
	}
	if err != nil {
		return w.Status().Version, fmt.Errorf("dynconfig: the last good copy %s: %w", w.diskPath, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if rec.Version <= w.version {
		return w.version, nil
	}
	if err := w.apply(cfg); err != nil {
		w.lastErr = fmt.Sprintf("the last good copy (version %d) was refused: %v", rec.Version, err)
		return w.version, errors.New(w.lastErr)
	}
	w.version, w.source, w.inForce = rec.Version, SourceDisk, rec.Config
	w.lastGood, w.lastReload, w.lastErr = time.Now(), time.Now(), ""
	w.mVersion.Set(float64(rec.Version))
	w.log.Warn(msg, "version", rec.Version, "path", w.diskPath)
	return rec.Version, nil
}

// Run follows the configuration until ctx ends. It never returns an error
// while ZooKeeper is away: the configuration in force stays in force.
func (w *Watcher) Run(ctx context.Context) error {
	conn, events, err := zkconn.Connect([]string{w.addrs}, zkconn.Options{SessionTimeout: w.sessionTimeout, Dialer: w.dialer, Credential: w.cred})
	if err != nil {
		// Only a malformed address list fails here.
		if _, lerr := w.LoadLast(); lerr != nil {
			w.log.Error("no dynamic configuration: the static one stays in force", "err", lerr)
		}
		return fmt.Errorf("dynconfig: connecting to ZooKeeper: %w", err)
	}
	defer conn.Close()
	w.mu.Lock()
	w.conn = conn
	w.mu.Unlock()

	// The event stream: state for the metric, and a resync after every new
	// session or reconnection (changes made meanwhile may have been missed).
	resync := make(chan struct{}, 1)
	go func() {
		for ev := range events {
			if ev.Type != zk.EventSession {
				continue
			}
			switch ev.State {
			case zk.StateHasSession:
				w.mConnected.Set(1)
				select {
				case resync <- struct{}{}:
				default:
				}
			case zk.StateDisconnected, zk.StateExpired, zk.StateAuthFailed, zk.StateConnecting:
				w.mConnected.Set(0)
			}
		}
		w.mConnected.Set(0)
	}()

	// At start: the last good copy first, so that a version in ZooKeeper
	// older than it (a replay) is refused right after a restart too; newer
	// versions in ZooKeeper follow as soon as it answers.
	if w.diskPath != "" {
		if _, err := os.Stat(w.diskPath); err == nil {
			if v, err := w.loadLast("starting from the last good configuration on disk; newer versions in ZooKeeper follow"); err != nil {
				w.log.Error("ignoring the copy on disk", "version", v, "err", err)
			}
		}
	}
	// Then wait a little for ZooKeeper, else say so.
	timer := time.NewTimer(w.startTimeout)
	select {
	case <-ctx.Done():
		timer.Stop()
		return nil
	case <-resync:
		timer.Stop()
		select { // read at once below
		case resync <- struct{}{}:
		default:
		}
	case <-timer.C:
		if v, err := w.LoadLast(); err != nil {
			w.log.Error("ZooKeeper unreachable and no usable copy on disk: the configuration in force stays", "version", v, "err", err)
		}
	}

	var dataCh, regCh <-chan zk.Event
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-ctx.Done():
			w.deregister()
			return nil
		case <-resync:
			dataCh, regCh = nil, nil
		case ev, ok := <-dataCh:
			dataCh = nil
			if ok && ev.Type == zk.EventNotWatching {
				w.log.Warn("configuration watch lost; re-reading after reconnect", "err", ev.Err)
				continue // the next session's resync re-reads
			}
		case ev, ok := <-regCh:
			regCh = nil
			if ok && ev.Type == zk.EventNotWatching {
				continue
			}
			if ok && ev.Type == zk.EventNodeDataChanged {
				// Our own update: only watch again.
				if ch, err := w.rearm(ctx, conn); err == nil {
					regCh = ch
				}
			}
		case <-retry.C:
		}
		if conn.State() != zk.StateHasSession {
			continue // resync comes with the next session
		}
		if dataCh == nil {
			ch, err := w.read(ctx, conn)
			if err != nil {
				w.log.Warn("reading the configuration", "err", err)
				retry.Reset(time.Second)
				continue
			}
			dataCh = ch
		}
		if regCh == nil {
			ch, err := w.register(ctx, conn)
			if err != nil {
				w.log.Warn("registering the edge", "err", err)
				retry.Reset(time.Second)
				continue
			}
			regCh = ch
		}
	}
}

// read reads the node, handles it and returns the new watch.
func (w *Watcher) read(ctx context.Context, conn *zk.Conn) (<-chan zk.Event, error) {
	type got struct {
		data   []byte
		st     *zk.Stat
		ch     <-chan zk.Event
		exists bool
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	g, err := do(rctx, func() (got, error) {
		data, st, ch, err := conn.GetW(w.limitsPath())
		if errors.Is(err, zk.ErrNoNode) {
			// Nothing pushed yet: watch for the creation.
			ok, _, ch, err := conn.ExistsW(w.limitsPath())
			if err != nil || !ok {
				return got{ch: ch}, err
			}
			data, st, ch, err = conn.GetW(w.limitsPath())
			return got{data, st, ch, true}, err
		}
		return got{data, st, ch, err == nil}, err
	})
	if err != nil {
		return nil, err
	}
	if g.exists {
		w.handle(g.data, g.st)
		w.writeRegistration(ctx, conn)
	}
	return g.ch, nil
}

// handle validates and applies one version of the node.
func (w *Watcher) handle(data []byte, st *zk.Stat) {
	offered := st.Version + 1
	rec, cfg, err := DecodeRecord(data)
	if err == nil && rec.Version != offered {
		err = fmt.Errorf("record says version %d but the node is at version %d: written around `seckill config push`", rec.Version, offered)
	}
	if err == nil {
		// Unsigned or badly signed: not from the pusher.
		err = Verify(rec, w.keys)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err == nil && offered == w.version && bytes.Equal(compact(rec.Config), compact(w.inForce)):
		if w.source != SourceZooKeeper {
			w.source = SourceZooKeeper // the disk copy was that version
		}
		return // a re-read of the version in force
	case offered <= w.version:
		// Not newer than the version in force (a replayed older version,
		// or another content under the same number): never applied.
		w.mReloads.WithLabelValues(ResultStale).Inc()
		w.log.Warn("ignoring a configuration older than the one in force", "offered", offered, "in_force", w.version)
		return
	}
	if err == nil {
		if aerr := w.apply(cfg); aerr != nil {
			err = fmt.Errorf("refused by the edge: %w", aerr)
		}
	}
	now := time.Now()
	w.lastReload = now
	if err != nil {
		msg := fmt.Sprintf("version %d rejected, version %d stays in force: %v", offered, w.version, err)
		if w.rejected != offered || !bytes.Equal(w.rejectedAt, data) {
			w.rejected, w.rejectedAt = offered, data
			w.mReloads.WithLabelValues(ResultRejected).Inc()
			w.log.Error("configuration rejected", "version", offered, "in_force", w.version, "err", err)
		}
		w.lastErr = msg
		return
	}
	w.version, w.source, w.inForce = offered, SourceZooKeeper, rec.Config
	w.lastGood, w.lastErr = now, ""
	w.mVersion.Set(float64(offered))
	w.mReloads.WithLabelValues(ResultApplied).Inc()
	w.log.Info("configuration applied", "version", offered, "pushed_by", rec.PushedBy, "pushed_at", rec.PushedAt, "rules", len(cfg.Rules))
	if err := w.saveLocked(data); err != nil {
		w.log.Error("writing the last good copy", "path", w.diskPath, "err", err)
	}
}

func compact(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

// saveLocked writes the last good copy atomically (temporary file, fsync,
// rename).
func (w *Watcher) saveLocked(data []byte) error {
	if w.diskPath == "" {
		return nil
	}
	return atomicfile.Write(w.diskPath, data)
}

func (w *Watcher) statusJSON() []byte {
	b, _ := json.Marshal(EdgeStatus{
		Edge: w.edgeID, Version: w.version, Source: w.source,
		LastReload: w.lastReload, LastError: w.lastErr, Since: w.start,
	})
	return b
}

// writeRegistration rewrites the registration node after a reload (a
// missing node is created by register).
func (w *Watcher) writeRegistration(ctx context.Context, conn *zk.Conn) {
	w.mu.Lock()
	data := w.statusJSON()
	w.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := do(rctx, func() (*zk.Stat, error) { return conn.Set(w.edgePath(), data, -1) })
	if err != nil && !errors.Is(err, zk.ErrNoNode) {
		w.log.Warn("updating the registration node", "err", err)
	}
}

// register creates (or rewrites) the ephemeral registration node and
// watches it, so that it is re-created if it disappears (a previous
// session's node with the same id expiring).
func (w *Watcher) register(ctx context.Context, conn *zk.Conn) (<-chan zk.Event, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if w.cred == nil {
		if err := ensurePath(rctx, conn, path.Join(w.root, edgesNode), zk.WorldACL(zk.PermAll)); err != nil {
			return nil, err
		}
	}
	p := w.edgePath()
	return do(rctx, func() (<-chan zk.Event, error) {
		w.mu.Lock()
		data := w.statusJSON()
		w.mu.Unlock()
		_, err := conn.Create(p, data, zk.FlagEphemeral, zkconn.OwnNode(w.cred != nil))
		if errors.Is(err, zk.ErrNoNode) && w.cred != nil {
			return nil, fmt.Errorf("registering %s: the folder is missing: run `seckill config init` (or push) with the edges' credential", p)
		}
		if errors.Is(err, zk.ErrNodeExists) {
			_, err = conn.Set(p, data, -1)
		}
		if err != nil {
			return nil, fmt.Errorf("registering %s: %w", p, err)
		}
		ok, _, ch, err := conn.ExistsW(p)
		if err == nil && !ok {
			// Deleted in between: the watch fires on creation; re-register.
			return nil, errors.New("registration node vanished")
		}
		return ch, err
	})
}

// rearm watches the registration node again; an error (or a node gone)
// makes the caller register again.
func (w *Watcher) rearm(ctx context.Context, conn *zk.Conn) (<-chan zk.Event, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return do(rctx, func() (<-chan zk.Event, error) {
		ok, _, ch, err := conn.ExistsW(w.edgePath())
		if err == nil && !ok {
			return nil, errors.New("registration node gone")
		}
		return ch, err
	})
}

// deregister deletes the registration node at shutdown (best effort).
func (w *Watcher) deregister() {
	w.mu.Lock()
	conn := w.conn
	w.mu.Unlock()
	if conn == nil || conn.State() != zk.StateHasSession {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = do(ctx, func() (struct{}, error) { return struct{}{}, conn.Delete(w.edgePath(), -1) })
}
