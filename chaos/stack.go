package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"seckill/apiclient"
)

// Features are what the seckill binary under test offers; rows that need
// a missing one are skipped with a message.
type Features struct {
	RelayCmd      bool // `seckill relay`
	RelayRedisURL bool // `seckill backend --relay-redis-url`
	ClockOffset   bool // `seckill edge --clock-offset`
}

// DetectFeatures asks the binary's --help.
func DetectFeatures(bin string) Features {
	help := func(args ...string) (string, bool) {
		out, err := exec.Command(bin, append(args, "--help")...).CombinedOutput()
		return string(out), err == nil
	}
	var f Features
	if out, ok := help("relay"); ok && strings.Contains(out, "--relay-id") {
		f.RelayCmd = true
	}
	if out, ok := help("backend"); ok {
		f.RelayRedisURL = strings.Contains(out, "--relay-redis-url")
	}
	// --clock-offset is hidden: a known flag with --help still prints help.
	_, f.ClockOffset = help("edge", "--clock-offset", "0s")
	return f
}

// StackOptions shape one run's stack.
type StackOptions struct {
	Fsync          string // Redis appendfsync: always (default) or everysec
	RedisDir       string // Redis's folder, when it must be elsewhere (a tmpfs)
	SeparateRelay  bool   // the relay as its own process (`seckill relay`)
	RelayRedisToxi bool   // the relay's Redis traffic through toxiproxy
	RelayAMQPToxi  bool   // the relay's RabbitMQ traffic through toxiproxy
	EdgeClockSkew  time.Duration
	// BackendRedisToxi: all of the backend's Redis traffic through toxiproxy.
	BackendRedisToxi bool
}

// Stack is one run's system: its own Redis, database, queue and ZooKeeper
// root on the shared servers, and seckill backend, worker, edge (and relay)
// as child processes.
type Stack struct {
	Dir     string
	Bin     string
	Servers *Servers
	Redis   *Redis
	Toxi    *Toxiproxy
	Opt     StackOptions
	Name    string // database, queue, prefix, ZooKeeper root and proxy names derive from it

	PGURL, Queue, Prefix, ZKRoot string
	RelayRedisURL, RelayAMQPURL  string // what the relay dials (proxies or not)
	AdminToken                   string

	Backend, Worker, Edge, Relay *Proc
	BackendAddr, WorkerMetrics   string
	RelayMetrics                 string
	EdgePublic, EdgeAdmin        string
	API                          *apiclient.Client

	Item    int64    // the run's item, once created
	History *History // what the buyers saw
}

// Proxy names of a stack.
func (s *Stack) redisProxy() string { return s.Name + "-relay-redis" }
func (s *Stack) amqpProxy() string  { return s.Name + "-relay-amqp" }
func (s *Stack) backendRedisProxy() string {
	return s.Name + "-backend-redis"
}

// StartStack builds and starts a run's stack.
func StartStack(ctx context.Context, srv *Servers, toxi *Toxiproxy, bin, dir, name string, opt StackOptions) (s *Stack, err error) {
	if opt.Fsync == "" {
		opt.Fsync = "always"
	}
	s = &Stack{Dir: dir, Bin: bin, Servers: srv, Toxi: toxi, Opt: opt, Name: name,
		Queue: "chaos." + name, Prefix: "chaos:" + name + ":", ZKRoot: "/chaos/" + name, AdminToken: randomSecret()}
	defer func() {
		if err != nil {
			s.Stop(context.WithoutCancel(ctx))
		}
	}()
	redisDir := opt.RedisDir
	if redisDir == "" {
		redisDir = filepath.Join(dir, "redis")
	}
	if err := os.MkdirAll(redisDir, 0o755); err != nil {
		return s, err
	}
	if s.Redis, err = StartRedis(ctx, redisDir, opt.Fsync); err != nil {
		return s, err
	}
	if s.PGURL, err = srv.CreateDatabase(ctx, strings.ReplaceAll(name, "-", "_")); err != nil {
		return s, err
	}
	s.RelayRedisURL, s.RelayAMQPURL = s.Redis.URL(), srv.AMQPURL
	if opt.RelayRedisToxi || opt.RelayAMQPToxi || opt.BackendRedisToxi {
		if toxi == nil {
			return s, errors.New("this row needs toxiproxy")
		}
	}
	if opt.RelayRedisToxi {
		l, err := toxi.Proxy(s.redisProxy(), s.Redis.Addr)
		if err != nil {
			return s, err
		}
		s.RelayRedisURL = "redis://" + l + "/0"
	}
	if opt.RelayAMQPToxi {
		l, err := toxi.Proxy(s.amqpProxy(), srv.AMQPAddr())
		if err != nil {
			return s, err
		}
		s.RelayAMQPURL = "amqp://guest:guest@" + l + "/"
	}
	backendRedis := s.Redis.URL()
	if opt.BackendRedisToxi {
		l, err := toxi.Proxy(s.backendRedisProxy(), s.Redis.Addr)
		if err != nil {
			return s, err
		}
		backendRedis = "redis://" + l + "/0"
		if !opt.SeparateRelay && !opt.RelayRedisToxi {
			s.RelayRedisURL = backendRedis
		}
	}
	limits := filepath.Join(dir, "limits.yaml")
	if err := os.WriteFile(limits, []byte(generousLimits), 0o644); err != nil {
		return s, err
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + dir,
		"SECKILL_ADMIN_TOKEN=" + s.AdminToken, "SECKILL_SESSION_SECRET=" + randomSecret(),
		"SECKILL_BACKEND_TOKEN=" + randomSecret(),
		"SECKILL_LOG_LEVEL=info"}
	common := []string{"--redis-url", s.Redis.URL(), "--redis-prefix", s.Prefix}
	relayID := "chaos-relay-" + name

	// backend
	bArgs := []string{"backend", "--redis-url", backendRedis, "--redis-prefix", s.Prefix,
		"--listen", "127.0.0.1:0", "--addr-file", filepath.Join(dir, "backend.addr"),
		"--pg-url", s.PGURL, "--queue", s.Queue, "--zk", srv.ZK, "--zk-root", s.ZKRoot,
		"--relay-id", relayID, "--relay-steal-after", "10s"}
	switch {
	case opt.SeparateRelay:
		bArgs = append(bArgs, "--relay=false", "--amqp-url", srv.AMQPURL)
	default:
		bArgs = append(bArgs, "--amqp-url", s.RelayAMQPURL)
		if opt.RelayRedisToxi {
			bArgs = append(bArgs, "--relay-redis-url", s.RelayRedisURL)
		}
	}
	s.Backend = &Proc{Name: "backend", Path: bin, Args: bArgs, Env: env, Log: filepath.Join(dir, "backend.log")}
	if err := s.Backend.Start(); err != nil {
		return s, err
	}
	if s.BackendAddr, err = waitFile(ctx, s.Backend, filepath.Join(dir, "backend.addr"), 30*time.Second); err != nil {
		return s, err
	}
	s.Backend.Args = replaceFlag(s.Backend.Args, "--listen", s.BackendAddr) // restarts keep the address
	if !waitUntil(ctx, 30*time.Second, func() bool { return httpOK("http://" + s.BackendAddr + "/readyz") }) {
		return s, fmt.Errorf("backend not ready (log %s)", s.Backend.Log)
	}

	// relay
	if opt.SeparateRelay {
		if s.RelayMetrics, err = freePort(); err != nil {
			return s, err
		}
		s.Relay = &Proc{Name: "relay", Path: bin, Env: env, Log: filepath.Join(dir, "relay.log"),
			Args: []string{"relay", "--redis-url", s.RelayRedisURL, "--redis-prefix", s.Prefix, "--amqp-url", s.RelayAMQPURL,
				"--queue", s.Queue, "--relay-id", relayID, "--relay-steal-after", "10s", "--metrics-listen", s.RelayMetrics}}
		if err := s.Relay.Start(); err != nil {
			return s, err
		}
		if !waitUntil(ctx, 30*time.Second, s.RelayHealthy) {
			return s, fmt.Errorf("relay not healthy (log %s)", s.Relay.Log)
		}
	}

	// worker
	if s.WorkerMetrics, err = freePort(); err != nil {
		return s, err
	}
	s.Worker = &Proc{Name: "worker", Path: bin, Env: env, Log: filepath.Join(dir, "worker.log"),
		Args: append([]string{"worker", "--amqp-url", srv.AMQPURL, "--queue", s.Queue, "--pg-url", s.PGURL,
			"--metrics-listen", s.WorkerMetrics}, common...)}
	if err := s.Worker.Start(); err != nil {
		return s, err
	}
	if !waitUntil(ctx, 30*time.Second, s.WorkerHealthy) {
		return s, fmt.Errorf("worker not ready (log %s)", s.Worker.Log)
	}

	// edge
	eArgs := append([]string{"edge", "--public-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--addr-file", filepath.Join(dir, "edge.addr"), "--backend-url", "http://" + s.BackendAddr,
		"--zk", srv.ZK, "--zk-root", s.ZKRoot, "--edge-id", "chaos-" + name,
		"--config-cache", filepath.Join(dir, "edge-config.json"), "--limits", limits}, common...)
	if opt.EdgeClockSkew != 0 {
		eArgs = append(eArgs, "--clock-offset", opt.EdgeClockSkew.String())
	}
	s.Edge = &Proc{Name: "edge", Path: bin, Args: eArgs, Env: env, Log: filepath.Join(dir, "edge.log")}
	if err := s.Edge.Start(); err != nil {
		return s, err
	}
	addrs, err := waitFile(ctx, s.Edge, filepath.Join(dir, "edge.addr"), 60*time.Second)
	if err != nil {
		return s, err
	}
	for _, f := range strings.Fields(addrs) {
		if v, ok := strings.CutPrefix(f, "public="); ok {
			s.EdgePublic = v
		}
		if v, ok := strings.CutPrefix(f, "admin="); ok {
			s.EdgeAdmin = v
		}
	}
	s.Edge.Args = replaceFlag(replaceFlag(s.Edge.Args, "--public-listen", s.EdgePublic), "--admin-listen", s.EdgeAdmin)
	if !waitUntil(ctx, 30*time.Second, s.EdgeHealthy) {
		return s, fmt.Errorf("edge not ready (log %s)", s.Edge.Log)
	}
	s.API = apiclient.New("http://"+s.EdgePublic, "http://"+s.EdgeAdmin, s.AdminToken, nil)
	return s, nil
}

func replaceFlag(args []string, flag, value string) []string {
	out := append([]string(nil), args...)
	for i := range out {
		if out[i] == flag && i+1 < len(out) {
			out[i+1] = value
		}
	}
	return out
}

// Health probes of each part.
func (s *Stack) BackendHealthy() bool { return httpOK("http://" + s.BackendAddr + "/readyz") }
func (s *Stack) WorkerHealthy() bool  { return httpOK("http://" + s.WorkerMetrics + "/readyz") }
func (s *Stack) EdgeHealthy() bool    { return httpOK("http://" + s.EdgeAdmin + "/readyz") }
func (s *Stack) RelayHealthy() bool   { return httpOK("http://" + s.RelayMetrics + "/healthz") }

// RelayProcs are the processes that run the relay (its own, or the backend).
func (s *Stack) RelayProcs() []*Proc {
	if s.Relay != nil {
		return []*Proc{s.Relay}
	}
	return []*Proc{s.Backend}
}

// Stop ends everything the stack started and removes its database, queue
// and proxies.
func (s *Stack) Stop(ctx context.Context) {
	for _, p := range []*Proc{s.Edge, s.Backend, s.Relay, s.Worker} {
		if p != nil {
			p.Stop(10 * time.Second)
		}
	}
	if s.Toxi != nil {
		s.Toxi.DeleteProxy(s.redisProxy())
		s.Toxi.DeleteProxy(s.amqpProxy())
		s.Toxi.DeleteProxy(s.backendRedisProxy())
	}
	if s.Redis != nil {
		s.Redis.Stop()
	}
	if s.PGURL != "" {
		s.Servers.DropDatabase(ctx, strings.ReplaceAll(s.Name, "-", "_"))
	}
	if conn, err := amqp.Dial(s.Servers.AMQPURL); err == nil {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(s.Queue, false, false, false)
			_, _ = ch.QueueDelete(s.Queue+".dead", false, false, false)
		}
		conn.Close()
	}
}

// Reconcile runs `seckill reconcile --dry-run` on the item and returns its
// exit code and output.
func (s *Stack) Reconcile(ctx context.Context, item int64) (int, string) {
	cmd := exec.CommandContext(ctx, s.Bin, "reconcile", "--items", fmt.Sprint(item), "--settle", "5s", "--dry-run",
		"--redis-url", s.Redis.URL(), "--redis-prefix", s.Prefix, "--pg-url", s.PGURL)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	default:
		return -1, err.Error()
	}
}

// generousLimits are token buckets no run reaches: the matrix measures
// faults, not the limiter (one IP drives every buyer).
const generousLimits = `rules:
  - {name: register-per-ip,    class: register,  key: ip,     rate: 1000000,   burst: 1000000}
  - {name: login-per-ip,       class: login,     key: ip,     rate: 1000000,   burst: 1000000}
  - {name: catalog-per-ip,     class: catalog,   key: ip,     rate: 1000000,   burst: 1000000}
  - {name: challenge-per-ip,   class: challenge, key: ip,     rate: 1000000,   burst: 1000000}
  - {name: challenge-per-user, class: challenge, key: user,   rate: 1000,      burst: 1000}
  - {name: path-per-user,      class: path,      key: user,   rate: 1000,      burst: 1000}
  - {name: buy-per-ip,         class: buy,       key: ip,     rate: 1000000,   burst: 1000000}
  - {name: buy-per-user,       class: buy,       key: user,   rate: 1000,      burst: 1000}
  - {name: buy-per-item,       class: buy,       key: item,   rate: 1000000,   burst: 1000000}
  - {name: status-per-user,    class: status,    key: user,   rate: 1000,      burst: 1000}
  - {name: everything,         class: "*",       key: global, rate: 10000000,  burst: 10000000}
`

// randomSecret is a secret the edge accepts outside `seckill dev`: 32
// random bytes in hex (openssl rand -hex 32).
func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
