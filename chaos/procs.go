package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Proc is one child process (a seckill part or a server) that can be
// killed and started again with the same arguments.
type Proc struct {
	Name string
	Path string
	Args []string
	Env  []string
	Log  string // appended to

	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts the process; it fails if it is already running.
func (p *Proc) Start() error {
	if p.Running() {
		return fmt.Errorf("%s already runs", p.Name)
	}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "==== %s start %s %s\n", time.Now().Format(time.RFC3339Nano), p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = p.Env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// Running reports whether the process has been started and not exited.
func (p *Proc) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited is closed when the process ends.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return fmt.Errorf("%s is not running", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *Proc) Kill() {
	if p.Running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Stop sends SIGTERM, waits up to d, then SIGKILL.
func (p *Proc) Stop(d time.Duration) {
	if !p.Running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		p.Kill()
	}
}

// waitFile waits for a non-empty file (an --addr-file) while p runs.
func waitFile(ctx context.Context, p *Proc, path string, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for {
		if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
		if p != nil && !p.Running() {
			return "", fmt.Errorf("%s exited before writing %s (log %s)", p.Name, path, p.Log)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s: no %s after %s (log %s)", p.Name, path, d, p.Log)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitUntil polls ok every 20 ms until it holds or d passes.
func waitUntil(ctx context.Context, d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var probeClient = &http.Client{Timeout: time.Second}

// httpOK reports whether GET url answers 200.
func httpOK(url string) bool {
	resp, err := probeClient.Get(url)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// ------------------------------------------------------------------ Redis

// Redis is one private redis-server with an append-only file, owned by a
// run: it can be killed, stopped, and started again on its folder.
type Redis struct {
	Dir   string
	Addr  string
	Fsync string // always or everysec
	proc  *Proc
}

// StartRedis starts a redis-server in dir on a free port.
func StartRedis(ctx context.Context, dir, fsync string) (*Redis, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{Dir: dir, Addr: addr, Fsync: fsync}
	return r, r.Start(ctx)
}

// URL is the redis:// URL of the server.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// Start (re)starts the server in its folder, loading its AOF.
func (r *Redis) Start(ctx context.Context) error {
	_, port, _ := strings.Cut(r.Addr, ":")
	r.proc = &Proc{Name: "redis", Path: "redis-server", Log: filepath.Join(r.Dir, "redis.out"), Env: os.Environ(),
		Args: []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
			"--appendfsync", r.Fsync, "--dir", r.Dir, "--logfile", filepath.Join(r.Dir, "redis.log")}}
	if err := r.proc.Start(); err != nil {
		return err
	}
	if !waitUntil(ctx, 30*time.Second, func() bool { return r.Ping(ctx) }) {
		return fmt.Errorf("redis on %s did not answer PING (log %s/redis.log)", r.Addr, r.Dir)
	}
	return nil
}

// Ping reports whether the server answers PING within 500 ms.
func (r *Redis) Ping(ctx context.Context) bool {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 300 * time.Millisecond, ReadTimeout: 500 * time.Millisecond})
	defer c.Close()
	return c.Ping(ctx).Err() == nil
}

// Kill is kill -9.
func (r *Redis) Kill() { r.proc.Kill() }

// Signal sends a signal (SIGSTOP, SIGCONT).
func (r *Redis) Signal(sig syscall.Signal) error { return r.proc.Signal(sig) }

// Stop shuts the server down (it flushes its AOF).
func (r *Redis) Stop() {
	if r.proc != nil {
		_ = r.proc.Signal(syscall.SIGCONT)
		r.proc.Stop(10 * time.Second)
	}
}

// IncrAOF is the path of the newest incremental AOF file.
func (r *Redis) IncrAOF() (string, error) {
	m, _ := filepath.Glob(filepath.Join(r.Dir, "appendonlydir", "*.incr.aof"))
	best, bestN := "", -1
	for _, f := range m {
		parts := strings.Split(filepath.Base(f), ".")
		if len(parts) >= 4 {
			if n, err := strconv.Atoi(parts[len(parts)-3]); err == nil && n > bestN {
				best, bestN = f, n
			}
		}
	}
	if best == "" {
		return "", errors.New("no incremental AOF file in " + r.Dir)
	}
	return best, nil
}

// -------------------------------------------------------------- toxiproxy

// Toxiproxy is a toxiproxy server (github.com/Shopify/toxiproxy/v2, run as
// its own process) and a tiny client of its HTTP API.
type Toxiproxy struct {
	API  string
	proc *Proc
}

// StartToxiproxy runs the toxiproxy server binary on a free port.
func StartToxiproxy(ctx context.Context, bin, logPath string) (*Toxiproxy, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	host, port, _ := strings.Cut(addr, ":")
	p := &Proc{Name: "toxiproxy", Path: bin, Args: []string{"-host", host, "-port", port}, Env: os.Environ(), Log: logPath}
	if err := p.Start(); err != nil {
		return nil, err
	}
	t := &Toxiproxy{API: "http://" + addr, proc: p}
	if !waitUntil(ctx, 10*time.Second, func() bool { return httpOK(t.API + "/version") }) {
		p.Kill()
		return nil, fmt.Errorf("toxiproxy did not start (log %s)", logPath)
	}
	return t, nil
}

// Stop ends the server.
func (t *Toxiproxy) Stop() { t.proc.Stop(5 * time.Second) }

func (t *Toxiproxy) call(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, t.API+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := probeClient.Do(req)
	if err != nil {
		return fmt.Errorf("toxiproxy %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("toxiproxy %s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// Proxy creates a proxy to upstream on a free loopback port and returns the
// address it listens on.
func (t *Toxiproxy) Proxy(name, upstream string) (string, error) {
	var out struct {
		Listen string `json:"listen"`
	}
	err := t.call(http.MethodPost, "/proxies", map[string]any{"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": true}, &out)
	return out.Listen, err
}

// DeleteProxy removes a proxy (and cuts its connections).
func (t *Toxiproxy) DeleteProxy(name string) {
	_ = t.call(http.MethodDelete, "/proxies/"+name, nil, nil)
}

// AddToxic adds a toxic (latency, timeout, ...) to a proxy's stream
// (upstream: client to server; downstream: server to client).
func (t *Toxiproxy) AddToxic(proxy, name, typ, stream string, attrs map[string]any) error {
	return t.call(http.MethodPost, "/proxies/"+proxy+"/toxics", map[string]any{
		"name": name, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs}, nil)
}

// RemoveToxic removes a toxic.
func (t *Toxiproxy) RemoveToxic(proxy, name string) error {
	return t.call(http.MethodDelete, "/proxies/"+proxy+"/toxics/"+name, nil, nil)
}
