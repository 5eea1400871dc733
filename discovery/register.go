package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"seckill/internal/backoff"
	"seckill/internal/zkconn"
)

// Registration keeps one backend registered under <root>/backends/ until
// Close: an ephemeral sequential node, created again whenever it is gone
// (after a session expiry, or deleted by hand).
type Registration struct {
	conn *zk.Conn
	dir  string
	auth bool // authenticated: own ACL, folders left to the pusher
	url  string
	data []byte
	log  *slog.Logger

	mu   sync.Mutex
	path string // the node now, "" before the first

	poke      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	created   atomic.Int64
}

var errGone = errors.New("node vanished right after its creation")

// Register connects to ZooKeeper (zkAddrs: host:port, each may be a comma
// list) and registers url under root (DefaultRoot when empty). It returns
// once the node exists, or fails when ctx ends first. log may be nil.
func Register(ctx context.Context, zkAddrs []string, root, url string, log *slog.Logger, opts ...Option) (*Registration, error) {
	first := make(chan error, 1)
	r, err := startRegistration(zkAddrs, root, url, log, first, opts...)
	if err != nil {
		return nil, err
	}
	select {
	case err = <-first:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// StartRegistration is Register without the wait: it returns at once and
// keeps trying in the background until the node exists (and keeps it, as
// Register does) until Close. A backend so serves while ZooKeeper is down
// and appears to the edges when it comes back.
func StartRegistration(zkAddrs []string, root, url string, log *slog.Logger, opts ...Option) (*Registration, error) {
	return startRegistration(zkAddrs, root, url, log, nil, opts...)
}

func startRegistration(zkAddrs []string, root, url string, log *slog.Logger, first chan<- error, opts ...Option) (*Registration, error) {
	o := newOptions(opts)
	if log != nil {
		o.log = log
	}
	log = o.log.With("component", "discovery", "url", url)
	node := Node{URL: url, StartedAt: time.Now().UTC()}
	node.Sign(RegistrationKey(o.token))
	data, err := json.Marshal(node)
	if err != nil {
		return nil, err
	}
	conn, events, err := connect(zkAddrs, o, log)
	if err != nil {
		return nil, err
	}
	r := &Registration{
		conn: conn, dir: backendsPath(root), url: url, data: data, log: log, auth: o.cred != nil,
		poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go r.follow(events)
	go r.run(first)
	return r, nil
}

// Path returns the node now ("" if none yet).
func (r *Registration) Path() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.path
}

// URL returns the URL registered.
func (r *Registration) URL() string { return r.url }

// Created returns how many nodes this registration has created (1 plus one
// per re-registration).
func (r *Registration) Created() int64 { return r.created.Load() }

// Close removes the node and ends the session. It is safe to call twice.
func (r *Registration) Close() {
	r.closeOnce.Do(func() {
		close(r.stop)
		if p := r.Path(); p != "" {
			deleted := make(chan error, 1)
			go func() { deleted <- r.conn.Delete(p, -1) }()
			select {
			case err := <-deleted:
				if err != nil && !errors.Is(err, zk.ErrNoNode) {
					r.log.Warn("removing the registration", "node", p, "err", err)
				}
			case <-time.After(3 * time.Second):
				r.log.Warn("removing the registration: no answer; it goes with the session", "node", p)
			}
		}
		// Closing the session removes any ephemeral node left.
		r.conn.Close()
		<-r.done
		r.log.Info("deregistered")
	})
}

// follow turns every new session (reconnect or expiry) into a re-check.
func (r *Registration) follow(events <-chan zk.Event) {
	for ev := range events {
		if ev.Type == zk.EventSession && (ev.State == zk.StateHasSession || ev.State == zk.StateExpired) {
			select {
			case r.poke <- struct{}{}:
			default:
			}
		}
	}
}

func (r *Registration) run(first chan<- error) {
	defer close(r.done)
	if r.auth {
		// Not before the session carries the credential (zkconn holds the
		// first session event back until then).
		select {
		case <-r.poke:
		case <-r.stop:
			return
		}
	}
	bo := backoff.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for {
		ch, err := r.once()
		if err == nil {
			bo.Reset()
			if first != nil {
				first <- nil
				first = nil
			}
			select {
			case <-ch: // deleted, or the session expired (EventNotWatching)
			case <-r.poke:
			case <-r.stop:
				return
			}
			continue
		}
		select {
		case <-r.stop:
			return
		default:
		}
		r.log.Warn("registering in zookeeper", "err", err)
		select {
		case <-time.After(bo.Next()):
		case <-r.poke:
		case <-r.stop:
			return
		}
	}
}

// once makes sure the node exists and returns a watch on it.
func (r *Registration) once() (<-chan zk.Event, error) {
	if p := r.Path(); p != "" {
		ok, _, ch, err := r.conn.ExistsW(p)
		if err != nil {
			return nil, err
		}
		if ok {
			return ch, nil
		}
		r.log.Warn("registration gone (session expired?): registering again", "node", p)
	}
	if !r.auth {
		if err := zkconn.EnsurePath(r.conn, r.dir, zk.WorldACL(zk.PermAll)); err != nil {
			return nil, err
		}
	}
	// The protected create finds its own node again when the answer was
	// lost with the connection, so a retry never leaves a twin behind.
	p, err := r.conn.CreateProtectedEphemeralSequential(r.dir+"/backend-", r.data, zkconn.OwnNode(r.auth))
	if errors.Is(err, zk.ErrNoNode) && r.auth {
		return nil, fmt.Errorf("%s is missing: run `seckill config init` (or push) with the backends' credential", r.dir)
	}
	if err != nil {
		return nil, err
	}
	select {
	case <-r.stop:
		// Closed meanwhile: Close may already have deleted the old node.
		_ = r.conn.Delete(p, -1)
		return nil, zk.ErrClosing
	default:
	}
	r.mu.Lock()
	r.path = p
	r.mu.Unlock()
	r.created.Add(1)
	r.log.Info("registered", "node", p)
	ok, _, ch, err := r.conn.ExistsW(p)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errGone
	}
	return ch, nil
}
