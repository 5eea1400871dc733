// Package discovery finds the purchase backends through ZooKeeper and
// spreads the edge's calls over them.
//
// Every `seckill backend` started with --zk registers itself (Register): an
// ephemeral sequential node under <root>/backends/ holding
// {"url": ..., "started_at": ...}. The node lives as long as the backend's
// ZooKeeper session: a backend that is SIGKILLed or cut off disappears when
// its session expires (the session timeout), one that shuts down cleanly
// removes its node at once. After a session expiry the registration creates
// a new node.
//
// A Balancer watches <root>/backends (one-shot watches, re-read and re-set
// after every event, re-read after every reconnect and session expiry) and
// keeps one backendclient.Client per URL, each behind its own circuit breaker. It
// picks round-robin among the backends whose breaker is not open and drops a
// backend the moment its node goes. It serves every method of the edge's
// Backend interface, so the edge can use it in place of one backendclient.Client.
package discovery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"path"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sony/gobreaker/v2"

	"seckill/internal/breaker"
	"seckill/internal/zkconn"
)

// DefaultRoot is the ZooKeeper folder of a seckill deployment.
const DefaultRoot = "/seckill"

// DefaultSessionTimeout is the ZooKeeper session timeout asked for: how
// long a backend that died without a goodbye stays registered. The server
// bounds it to [2, 20] ticks (4s to 40s with the default tickTime).
const DefaultSessionTimeout = zkconn.DefaultSessionTimeout

// Node is the content of a backend's node.
type Node struct {
	URL       string    `json:"url"`
	StartedAt time.Time `json:"started_at"`
	// MAC proves the registration was made by a holder of the internal
	// key (the backend token): base64 of HMAC-SHA256 under
	// RegistrationKey(token) over the URL and start time. Edges route only
	// to registrations whose MAC is valid.
	MAC string `json:"mac,omitempty"`
}

// registrationLabel derives the registrations' MAC key from the backend
// token, so the token itself never signs anything else.
const registrationLabel = "seckill registration v1"

// RegistrationKey is the MAC key of registrations: HMAC-SHA256(token,
// "seckill registration v1").
func RegistrationKey(token string) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(registrationLabel))
	return m.Sum(nil)
}

func (n Node) sum(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(registrationLabel))
	m.Write([]byte{0})
	m.Write([]byte(n.URL))
	m.Write([]byte{0})
	m.Write([]byte(n.StartedAt.UTC().Format(time.RFC3339Nano)))
	return m.Sum(nil)
}

// Sign sets n's MAC under key.
func (n *Node) Sign(key []byte) { n.MAC = base64.StdEncoding.EncodeToString(n.sum(key)) }

// Verify checks n's MAC under key.
func (n Node) Verify(key []byte) error {
	if n.MAC == "" {
		return errors.New("registration has no MAC")
	}
	got, err := base64.StdEncoding.DecodeString(n.MAC)
	if err != nil || !hmac.Equal(got, n.sum(key)) {
		return errors.New("registration MAC is not valid under the internal key (another --backend-token, or forged)")
	}
	return nil
}

// BreakerConfig tunes the circuit breaker each backend gets (the one
// configuration of every breaker: internal/breaker).
type BreakerConfig = breaker.Config

type options struct {
	sessionTimeout time.Duration
	dialer         zk.Dialer
	log            *slog.Logger
	breaker        BreakerConfig
	token          string
	hc             *http.Client
	onState        func(url string, from, to gobreaker.State)
	initial        []string
	cachePath      string
	cred           *zkconn.Credential
}

// Option tunes Register, NewBalancer and NewStatic.
type Option func(*options)

// WithSessionTimeout sets the ZooKeeper session timeout (default
// DefaultSessionTimeout).
func WithSessionTimeout(d time.Duration) Option { return func(o *options) { o.sessionTimeout = d } }

// WithDialer sets how ZooKeeper connections are dialled (tests cut them).
func WithDialer(d zk.Dialer) Option { return func(o *options) { o.dialer = d } }

// WithLogger sets the logger (Register takes its own argument).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithBreaker sets the per-backend circuit breaker.
func WithBreaker(b BreakerConfig) Option { return func(o *options) { o.breaker = b } }

// WithAdminToken sets the internal key: the Bearer token the backend
// clients send, from which the registrations' MAC key is derived
// (RegistrationKey): Register signs with it, a balancer routes only to
// registrations it verifies.
func WithAdminToken(token string) Option { return func(o *options) { o.token = token } }

// WithCredential authenticates the ZooKeeper session (the backend's or the
// edge's digest identity). A registration made with one is writable only
// by its backend, and folders are never created (the pusher lays them
// out: `seckill config init`); without one the tree is open.
func WithCredential(c *zkconn.Credential) Option { return func(o *options) { o.cred = c } }

// WithHTTPClient sets the HTTP client shared by the backend clients.
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.hc = hc } }

// WithOnStateChange is called on every breaker state change.
func WithOnStateChange(f func(url string, from, to gobreaker.State)) Option {
	return func(o *options) { o.onState = f }
}

// WithInitial sets the backends a balancer uses until ZooKeeper first
// answers (the operator's --backend-url), together with the cached list.
func WithInitial(urls []string) Option { return func(o *options) { o.initial = urls } }

// WithCache keeps the last list read from ZooKeeper in a file (written
// atomically on every change) and starts from it when ZooKeeper is away.
func WithCache(path string) Option { return func(o *options) { o.cachePath = path } }

func newOptions(opts []Option) options {
	o := options{sessionTimeout: DefaultSessionTimeout}
	for _, f := range opts {
		f(&o)
	}
	if o.sessionTimeout <= 0 {
		o.sessionTimeout = DefaultSessionTimeout
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	o.breaker = o.breaker.WithDefaults()
	return o
}

// backendsPath is the folder of the backends' nodes.
func backendsPath(root string) string {
	if root == "" {
		root = DefaultRoot
	}
	return path.Join("/", root, "backends")
}

func connect(addrs []string, o options, log *slog.Logger) (*zk.Conn, <-chan zk.Event, error) {
	return zkconn.Connect(addrs, zkconn.Options{SessionTimeout: o.sessionTimeout, Dialer: o.dialer, Log: log, Credential: o.cred})
}
