// Package zkconn is seckill's one way to connect to ZooKeeper: the address
// list, the session timeout, the client's logging, and digest
// authentication (sent again by the client after every reconnect).
//
// With a credential, the first StateHasSession event reaches the caller
// only once the credential is accepted, so a caller that waits for the
// session before writing always writes authenticated.
package zkconn

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// DefaultSessionTimeout is the ZooKeeper session timeout asked for. The
// server bounds it to [2, 20] ticks (4s to 40s with the default tickTime).
const DefaultSessionTimeout = 10 * time.Second

// Options tunes Connect. The zero value is usable.
type Options struct {
	SessionTimeout time.Duration // default DefaultSessionTimeout
	Dialer         zk.Dialer     // default net.DialTimeout (tests cut connections)
	Log            *slog.Logger  // the client's chatter at debug level; nil: dropped
	// Credential authenticates the session (digest scheme); nil: none.
	Credential *Credential
}

// SplitAddrs splits every element of addrs at commas and drops blanks.
func SplitAddrs(addrs ...string) []string {
	var out []string
	for _, a := range addrs {
		for _, s := range strings.Split(a, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// Connect starts a ZooKeeper client for addrs (host:port, each may be a
// comma list). It returns at once; the session comes when a server
// answers (watch the events for StateHasSession).
func Connect(addrs []string, o Options) (*zk.Conn, <-chan zk.Event, error) {
	servers := SplitAddrs(addrs...)
	if len(servers) == 0 {
		return nil, nil, fmt.Errorf("no ZooKeeper address in %q", strings.Join(addrs, ","))
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	dial := o.Dialer
	if dial == nil {
		dial = net.DialTimeout
	}
	var logger zk.Logger = quietLogger{}
	if o.Log != nil {
		logger = slogLogger{o.Log}
	}
	conn, events, err := zk.Connect(servers, o.SessionTimeout, zk.WithLogger(logger), zk.WithLogInfo(false), zk.WithDialer(dial))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to ZooKeeper at %s: %w", strings.Join(servers, ","), err)
	}
	if o.Credential == nil {
		return conn, events, nil
	}
	cred := *o.Credential
	authed := make(chan struct{})
	closed := make(chan struct{})
	go func() {
		// AddAuth waits for a session; the client sends the credential
		// again by itself after every later reconnect.
		for {
			err := conn.AddAuth("digest", []byte(cred.User+":"+cred.Password))
			if err == nil {
				close(authed)
				return
			}
			select {
			case <-closed:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	out := make(chan zk.Event, 16)
	send := func(ev zk.Event) {
		select {
		case out <- ev:
		default: // nobody reads: drop, as the client itself does
		}
	}
	go func() {
		defer close(out)
		defer close(closed)
		wait, held := authed, false // a session held back until the credential is accepted
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return
				}
				if wait != nil && ev.Type == zk.EventSession {
					switch ev.State {
					case zk.StateHasSession:
						held = true
						continue
					case zk.StateDisconnected, zk.StateExpired:
						held = false
					}
				}
				send(ev)
			case <-wait:
				wait = nil
				if held && conn.State() == zk.StateHasSession {
					send(zk.Event{Type: zk.EventSession, State: zk.StateHasSession})
				}
			}
		}
	}()
	return conn, out, nil
}

// EnsurePath creates p and its parents (persistent, empty) with acl when
// absent. It changes nothing that exists.
func EnsurePath(conn *zk.Conn, p string, acl []zk.ACL) error {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	cur := ""
	for _, part := range parts {
		cur += "/" + part
		_, err := conn.Create(cur, nil, 0, acl)
		if err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("creating %s: %w", cur, err)
		}
	}
	return nil
}

// quietLogger drops go-zookeeper's chatter (reconnect attempts every few
// milliseconds while ZooKeeper is away).
type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Printf(format string, a ...any) {
	l.log.Debug("zookeeper client", "msg", strings.TrimSpace(fmt.Sprintf(format, a...)))
}
