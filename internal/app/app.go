// Package app is the composition root: the one place that builds each role
// of seckill (backend, worker, relay, edge, and `seckill dev`, all in one
// process) from a typed, validated configuration, and runs it.
//
// Each role has a Config (settings named like the flags of its
// subcommand), a Validate method that returns every problem at once
// (Problems, each naming its setting), and a Start function that connects
// to the stores, listens, starts every goroutine of the role in one errgroup
// and returns a handle. The handle's Wait blocks until the context given to
// Start ends or a part fails, then shuts down in order (readiness off,
// drain, listeners closed, relay and consumers stopped) and returns only
// once every goroutine it started has returned and every client is closed.
//
// cmd/seckill (every subcommand), the e2e tests and the fault matrix (as
// child processes) build roles only through this package.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"seckill/internal/zkconn"
)

// Problem is one bad setting: its name (the flag's name; the config file's
// key) and what is wrong with its value.
type Problem struct {
	Setting string
	Msg     string
}

func (p Problem) Error() string { return p.Setting + ": " + p.Msg }

// Problems is every bad setting of a configuration.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap gives each problem to errors.As.
func (ps Problems) Unwrap() []error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errs
}

func (ps *Problems) add(setting, format string, args ...any) {
	*ps = append(*ps, Problem{Setting: setting, Msg: fmt.Sprintf(format, args...)})
}

func (ps Problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Setting < ps[j].Setting })
	return ps
}

// MinSecretLen is the shortest admin token, session secret or internal
// token accepted outside `seckill dev` (issue 13 M4).
const MinSecretLen = 32

// placeholders are values shipped in examples (compose, README, tests of
// old): a secret equal to one of them is known to everyone.
var placeholders = []string{
	"change-me", "change-me-session-secret", "change-me-backend", "changeme",
	"s3cret", "secret", "admin", "token", "password",
	"chaos-session-secret", "stack-token", "dev-token", "edge-admin", "admin-token",
}

// HowToMakeSecret is the advice every weak-secret problem ends with.
const HowToMakeSecret = "make one with: openssl rand -hex 32"

// checkSecret returns what is wrong with a secret, or "" when it is fine.
func checkSecret(v string) string {
	for _, p := range placeholders {
		if strings.EqualFold(v, p) {
			return fmt.Sprintf("is the placeholder %q, known to everyone; %s", p, HowToMakeSecret)
		}
	}
	if len(v) < MinSecretLen {
		return fmt.Sprintf("is %d bytes long; at least %d are needed (a short secret can be guessed); %s", len(v), MinSecretLen, HowToMakeSecret)
	}
	return ""
}

// secret adds a problem when a set secret is weak.
func (ps *Problems) secret(setting, v string) {
	if v == "" {
		return
	}
	if msg := checkSecret(v); msg != "" {
		ps.add(setting, "%s", msg)
	}
}

// isLoopback tells whether a listen address only accepts local clients.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (ps *Problems) listen(setting, addr string, optional bool) {
	if addr == "" {
		if !optional {
			ps.add(setting, "an address is needed (host:port)")
		}
		return
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		ps.add(setting, "%q is not host:port (%v)", addr, err)
	}
}

func (ps *Problems) positive(setting string, v int) {
	if v < 1 {
		ps.add(setting, "%d must be at least 1", v)
	}
}

func (ps *Problems) nonNegative(setting string, d time.Duration) {
	if d < 0 {
		ps.add(setting, "%v must not be negative", d)
	}
}

func (ps *Problems) atLeast(setting string, d, min time.Duration) {
	if d < min {
		ps.add(setting, "%v must be at least %v", d, min)
	}
}

// group runs the goroutines of one role. Every goroutine is in the
// errgroup. The shutdown starts when the parent context ends, a goroutine
// fails, or abort is called: the shutdown steps run in the order they were
// added (readiness off, drain, listeners closed), then bg ends (relays,
// consumers, watchers: what must outlive the drain runs on bg). wait
// returns when every goroutine has returned, then runs the closers (last
// added, first run): clients and stores.
type group struct {
	g      *errgroup.Group
	ctx    context.Context // ends at the start of the shutdown
	abort  context.CancelFunc
	bg     context.Context // ends after the shutdown steps
	stopBG context.CancelFunc

	mu       sync.Mutex
	steps    []func()
	stepping bool
	closers  []func()
	once     sync.Once
	err      error
}

func newGroup(parent context.Context) *group {
	ctx, abort := context.WithCancel(parent)
	g, gctx := errgroup.WithContext(ctx)
	bg, stopBG := context.WithCancel(context.WithoutCancel(parent))
	gr := &group{g: g, ctx: gctx, abort: abort, bg: bg, stopBG: stopBG}
	g.Go(func() error {
		<-gctx.Done()
		gr.mu.Lock()
		steps := gr.steps
		gr.stepping = true
		gr.mu.Unlock()
		for _, f := range steps {
			f()
		}
		stopBG()
		return nil
	})
	return gr
}

// Go runs f in the group; an error other than a cancellation or a closed
// server ends the role.
func (gr *group) Go(name string, f func() error) {
	gr.g.Go(func() error {
		if err := f(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}

// onShutdown adds a shutdown step (run at once when the shutdown already
// ran its steps).
func (gr *group) onShutdown(f func()) {
	gr.mu.Lock()
	if gr.stepping {
		gr.mu.Unlock()
		f()
		return
	}
	gr.steps = append(gr.steps, f)
	gr.mu.Unlock()
}

// onClose adds a closer, run after every goroutine returned.
func (gr *group) onClose(f func()) {
	gr.mu.Lock()
	gr.closers = append(gr.closers, f)
	gr.mu.Unlock()
}

// wait waits for every goroutine, then closes. Safe to call more than once.
func (gr *group) wait() error {
	gr.once.Do(func() {
		gr.err = gr.g.Wait()
		gr.abort()
		gr.stopBG()
		gr.mu.Lock()
		cs := gr.closers
		gr.closers = nil
		gr.mu.Unlock()
		for i := len(cs) - 1; i >= 0; i-- {
			cs[i]()
		}
	})
	return gr.err
}

// fail shuts down what a Start built before it failed, and returns err.
func (gr *group) fail(err error) error {
	gr.abort()
	_ = gr.wait()
	return err
}

// serve runs srv on ln in the group. The caller adds the shutdown step
// that shuts srv down (before: a server shut down before it serves
// returns at once).
func (gr *group) serve(name string, srv *http.Server, ln net.Listener) {
	gr.Go(name, func() error { return srv.Serve(ln) })
}

// shutdownServers shuts servers down together, each given up to 15 s for
// requests in flight.
func shutdownServers(log *slog.Logger, servers ...*http.Server) {
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(sctx); err != nil {
				log.Warn("http shutdown", "err", err)
			}
		}()
	}
	wg.Wait()
}

// sleep waits d: the drain wait, while readiness already fails.
func sleep(d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
}

// newRegistry is a Prometheus registry with the process's own metrics.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// listen opens a TCP listener, naming the setting on failure.
func listen(setting, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w (the setting --%s)", addr, err, setting)
	}
	return ln, nil
}

// WriteAddrFile writes the address a server listens on, for scripts and
// tests that start it on port 0 (atomically: a reader never sees half).
func WriteAddrFile(path, addr string) error {
	if path == "" {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func orDefault(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.Default()
	}
	return log
}

// zkAuth checks a ZooKeeper digest credential (user:password; "" = none).
func (ps *Problems) zkAuth(v string) {
	if v == "" {
		return
	}
	if _, err := zkconn.ParseCredential(v); err != nil {
		ps.add("zk-auth", "%v", err)
	}
}

// zkCredential returns a role's validated ZooKeeper credential; "" means
// none (said once in log, when not nil): the nodes this process creates
// are world-writable (docs/security-zookeeper.md).
func zkCredential(v, env string, log *slog.Logger) *zkconn.Credential {
	if v == "" {
		if log != nil {
			log.Warn("ZooKeeper without a credential: the nodes this process creates are world-writable (set --zk-auth / $" + env + "; docs/security-zookeeper.md)")
		}
		return nil
	}
	c, err := zkconn.ParseCredential(v)
	if err != nil {
		return nil // Validate said so
	}
	return &c
}
