package deploy

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"seckill/limit"
)

const (
	repoRoot       = ".."
	composePath    = "../docker-compose.yml"
	dockerfilePath = "../Dockerfile"
)

// servers are the images of the servers the parts use: the port each listens
// on inside the compose network. A service with an image and no build must be
// one of them.
var servers = map[string]int{
	"redis":     6379,
	"rabbitmq":  5672,
	"postgres":  5432,
	"zookeeper": 2181,
}

// requiredServices must all be in docker-compose.yml.
var requiredServices = []string{"redis", "rabbitmq", "zookeeper", "postgres", "backend", "worker", "edge"}

// defaultPorts of the URL schemes the parts' settings use.
var defaultPorts = map[string]int{
	"http": 80, "https": 443, "redis": 6379, "rediss": 6379,
	"amqp": 5672, "amqps": 5671, "postgres": 5432, "postgresql": 5432,
}

// seckillBin is the binary built once by TestMain.
var seckillBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "seckill-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	seckillBin = filepath.Join(dir, "seckill")
	out, err := exec.Command("go", "build", "-o", seckillBin, "../cmd/seckill").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building cmd/seckill: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ---------------------------------------------------------------- compose

type composeFile struct {
	Services map[string]*service `yaml:"services"`
}

type service struct {
	Image       string       `yaml:"image"`
	Build       any          `yaml:"build"`
	Command     any          `yaml:"command"`
	Environment any          `yaml:"environment"`
	Ports       []any        `yaml:"ports"`
	DependsOn   any          `yaml:"depends_on"`
	Healthcheck *healthcheck `yaml:"healthcheck"`

	// decoded by load
	name string
	cmd  []string
	env  map[string]string
	deps map[string]string // service -> condition ("" in the short form)
}

type healthcheck struct {
	Test    any  `yaml:"test"`
	Disable bool `yaml:"disable"`
}

// ours tells a service built from the repository (a part of seckill) from a
// server run from its image.
func (s *service) ours() bool { return s.Build != nil }

// load parses docker-compose.yml as docker-compose would with none of the
// variables it names set (and no .env file): ${VAR:-default} gives default.
func load(t *testing.T) *composeFile {
	t.Helper()
	raw, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", composePath, err)
	}
	if err := interpolateNode(&doc); err != nil {
		t.Fatalf("%s: %v", composePath, err)
	}
	var cf composeFile
	if err := doc.Decode(&cf); err != nil {
		t.Fatalf("%s: %v", composePath, err)
	}
	if len(cf.Services) == 0 {
		t.Fatalf("%s: no services", composePath)
	}
	for name, s := range cf.Services {
		s.name = name
		if s.cmd, err = stringList(s.Command); err != nil {
			t.Fatalf("service %s: command: %v", name, err)
		}
		if s.env, err = envMap(s.Environment); err != nil {
			t.Fatalf("service %s: environment: %v", name, err)
		}
		if s.deps, err = depsMap(s.DependsOn); err != nil {
			t.Fatalf("service %s: depends_on: %v", name, err)
		}
	}
	return &cf
}

var varRE = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// composeSecrets are the values the tests give the variables the file
// requires (${VAR:?...}): its secrets, which have no default.
var composeSecrets = map[string]string{
	"SECKILL_ADMIN_TOKEN":    "test-admin-token-0123456789abcdef0123456789abcdef",
	"SECKILL_SESSION_SECRET": "test-session-secret-0123456789abcdef0123456789ab",
	"SECKILL_BACKEND_TOKEN":  "test-backend-token-0123456789abcdef0123456789abc",
	"SECKILL_REDIS_PASSWORD": "testredispassword0123456789abcdef0123",
	"SECKILL_AMQP_PASSWORD":  "testamqppassword0123456789abcdef01234",
	"SECKILL_PG_PASSWORD":    "testpgpassword0123456789abcdef0123456",
}

// interpolate substitutes variables as docker-compose does when none is set
// but the secrets, which have the values of composeSecrets.
func interpolate(s string) (string, error) {
	var err error
	out := varRE.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := varRE.FindStringSubmatch(m)
		switch op := sub[2]; {
		case op == ":-" || op == "-":
			return sub[3]
		case strings.HasSuffix(op, "?"):
			if v, ok := composeSecrets[sub[1]]; ok {
				return v
			}
			err = fmt.Errorf("%s: a required variable that is not a secret of composeSecrets; give it a default", m)
		}
		return ""
	})
	return out, err
}

func interpolateNode(n *yaml.Node) error {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			if err := interpolateNode(c); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			if err := interpolateNode(n.Content[i]); err != nil {
				return err
			}
		}
	case yaml.ScalarNode:
		if strings.Contains(n.Value, "$") {
			v, err := interpolate(n.Value)
			if err != nil {
				return err
			}
			n.Value = v
		}
	}
	return nil
}

func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return strings.Fields(v), nil
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, fmt.Sprint(e))
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected %T", v)
}

func envMap(v any) (map[string]string, error) {
	out := map[string]string{}
	switch v := v.(type) {
	case nil:
	case map[string]any:
		for k, e := range v {
			if e == nil {
				e = ""
			}
			out[k] = fmt.Sprint(e)
		}
	case []any:
		for _, e := range v {
			k, val, _ := strings.Cut(fmt.Sprint(e), "=")
			out[k] = val
		}
	default:
		return nil, fmt.Errorf("unexpected %T", v)
	}
	return out, nil
}

func depsMap(v any) (map[string]string, error) {
	out := map[string]string{}
	switch v := v.(type) {
	case nil:
	case []any:
		for _, e := range v {
			out[fmt.Sprint(e)] = ""
		}
	case map[string]any:
		for k, e := range v {
			m, _ := e.(map[string]any)
			c, _ := m["condition"].(string)
			out[k] = c
		}
	default:
		return nil, fmt.Errorf("unexpected %T", v)
	}
	return out, nil
}

// port is one entry of ports: in the short syntax [IP:]HOST:CONTAINER[/proto].
type port struct{ ip, host, container string }

func parsePort(v any) (port, error) {
	s, ok := v.(string)
	if !ok {
		return port{}, fmt.Errorf("port %v: use the short syntax \"IP:HOST:CONTAINER\" in quotes", v)
	}
	s, _, _ = strings.Cut(s, "/")
	f := strings.Split(s, ":")
	switch len(f) {
	case 1:
		return port{container: f[0]}, nil
	case 2:
		return port{host: f[0], container: f[1]}, nil
	case 3:
		return port{ip: f[0], host: f[1], container: f[2]}, nil
	}
	return port{}, fmt.Errorf("port %q: unexpected form", s)
}

// healthURLs are the URLs a healthcheck probes.
func (s *service) healthURLs() ([]*url.URL, error) {
	if s.Healthcheck == nil || s.Healthcheck.Disable {
		return nil, nil
	}
	test, err := stringList(s.Healthcheck.Test)
	if err != nil {
		return nil, err
	}
	var out []*url.URL
	for _, m := range regexp.MustCompile(`https?://[^\s"']+`).FindAllString(strings.Join(test, " "), -1) {
		u, err := url.Parse(m)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

func (s *service) hasHealthcheck() bool {
	if s.Healthcheck == nil || s.Healthcheck.Disable {
		return false
	}
	test, _ := stringList(s.Healthcheck.Test)
	return len(test) > 0 && test[0] != "NONE"
}

// listenPorts are the ports a part listens on, from its SECKILL_*_LISTEN.
func listenPorts(t *testing.T, s *service) map[string]string {
	t.Helper()
	ports := map[string]string{} // port -> variable
	for k, v := range s.env {
		if !strings.HasPrefix(k, "SECKILL_") || !strings.HasSuffix(k, "_LISTEN") || v == "" {
			continue
		}
		host, p, err := net.SplitHostPort(v)
		if err != nil {
			t.Errorf("service %s: %s=%q: %v", s.name, k, v, err)
			continue
		}
		if host != "" && host != "0.0.0.0" && host != "::" {
			t.Errorf("service %s: %s=%q: inside a container listen on 0.0.0.0, or nothing outside it can connect", s.name, k, v)
		}
		if p == "0" {
			t.Errorf("service %s: %s=%q: a container needs a fixed port", s.name, k, v)
		}
		ports[p] = k
	}
	return ports
}

// ------------------------------------------------------------------ binary

// helpText runs `seckill ARGS... --help`.
func helpText(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(seckillBin, append(args, "--help")...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no SECKILL_* leaks into the defaults
	if err := cmd.Run(); err != nil {
		t.Fatalf("seckill %s --help: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// subcommands lists the commands of `seckill --help`.
func subcommands(t *testing.T) []string {
	t.Helper()
	var cmds []string
	in := false
	for _, line := range strings.Split(helpText(t), "\n") {
		switch {
		case strings.HasPrefix(line, "Available Commands:"):
			in = true
		case in && strings.TrimSpace(line) == "":
			in = false
		case in:
			if f := strings.Fields(line); len(f) > 0 && f[0] != "help" && f[0] != "completion" {
				cmds = append(cmds, f[0])
			}
		}
	}
	if len(cmds) == 0 {
		t.Fatal("seckill --help lists no commands")
	}
	return cmds
}

var (
	envRE  = regexp.MustCompile(`\(\$(SECKILL_[A-Z0-9_]+)\)`)
	flagRE = regexp.MustCompile(`--([a-z0-9][a-z0-9-]*)`)
)

// partConfig is what one part reads: its SECKILL_* variables and its flags.
type partConfig struct {
	env   map[string]bool
	flags map[string]bool
}

func readPart(t *testing.T, part string) partConfig {
	t.Helper()
	help := helpText(t, part)
	pc := partConfig{env: map[string]bool{}, flags: map[string]bool{}}
	for _, m := range envRE.FindAllStringSubmatch(help, -1) {
		pc.env[m[1]] = true
	}
	_, flags, _ := strings.Cut(help, "Flags:")
	for _, m := range flagRE.FindAllStringSubmatch(flags, -1) {
		pc.flags[m[1]] = true
	}
	if len(pc.env) == 0 {
		t.Fatalf("seckill %s --help names no ($SECKILL_...) variable:\n%s", part, help)
	}
	return pc
}

// ------------------------------------------------------------------- tests

// TestComposeConfig validates the file with docker-compose itself, and checks
// that load reads it as docker-compose does.
func TestComposeConfig(t *testing.T) {
	dc, err := exec.LookPath("docker-compose")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("docker-compose is not installed (scripts/services.sh install installs it)")
		}
		t.Skip("docker-compose is not installed: run scripts/services.sh install (or apt-get install docker-compose)")
	}
	// None of the variables the file names is set, as in load.
	raw, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range varRE.FindAllStringSubmatch(string(raw), -1) {
		named[m[1]+m[4]] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !named[k] {
			env = append(env, kv)
		}
	}
	for k, v := range composeSecrets {
		env = append(env, k+"="+v)
	}
	// An empty env file: a developer's .env must not change what is checked.
	envFile := filepath.Join(t.TempDir(), "empty.env")
	if err := os.WriteFile(envFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(dc, "--env-file", envFile, "-f", composePath, "config")
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, stderr.String())
	}
	if s := stderr.String(); strings.Contains(strings.ToLower(s), "warning") {
		t.Errorf("docker-compose config warns:\n%s", s)
	}

	var got struct {
		Services map[string]struct {
			Environment map[string]any `yaml:"environment"`
			Command     []string       `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("parsing the output of docker-compose config: %v", err)
	}
	cf := load(t)
	for name, s := range cf.Services {
		g, ok := got.Services[name]
		if !ok {
			t.Errorf("docker-compose config has no service %s", name)
			continue
		}
		genv, _ := envMap(map[string]any(g.Environment))
		if fmt.Sprint(genv) != fmt.Sprint(s.env) {
			t.Errorf("service %s: environment differs:\ndocker-compose: %v\nthis test:      %v", name, genv, s.env)
		}
		if s.ours() && !slices.Equal(g.Command, s.cmd) {
			t.Errorf("service %s: command differs: docker-compose %q, this test %q", name, g.Command, s.cmd)
		}
	}
	if len(got.Services) != len(cf.Services) {
		t.Errorf("docker-compose config has %d services, this test read %d", len(got.Services), len(cf.Services))
	}
}

// TestComposeMatchesBinary: every part runs a real subcommand, and every
// SECKILL_* variable and flag given to it is one that subcommand reads.
func TestComposeMatchesBinary(t *testing.T) {
	cf := load(t)
	for _, name := range requiredServices {
		if cf.Services[name] == nil {
			t.Errorf("service %s is missing", name)
		}
	}
	cmds := subcommands(t)
	parts := map[string]partConfig{}
	for _, name := range sortedNames(cf) {
		s := cf.Services[name]
		if !s.ours() {
			if _, ok := servers[imageName(s.Image)]; !ok {
				t.Errorf("service %s: image %q is neither built from the repository nor a known server (%v)", name, s.Image, keys(servers))
			}
			for k := range s.env {
				if strings.HasPrefix(k, "SECKILL_") {
					t.Errorf("service %s: %s is set on a server, which does not read it", name, k)
				}
			}
			continue
		}
		checkBuild(t, s)
		if len(s.cmd) == 0 {
			t.Errorf("service %s: no command: the image's default only prints help", name)
			continue
		}
		part := s.cmd[0]
		if !slices.Contains(cmds, part) {
			t.Errorf("service %s: command %q is not a subcommand of seckill (%v)", name, part, cmds)
			continue
		}
		pc, ok := parts[part]
		if !ok {
			pc = readPart(t, part)
			parts[part] = pc
		}
		for _, k := range sortedKeys(s.env) {
			if strings.HasPrefix(k, "SECKILL_") && !pc.env[k] {
				t.Errorf("service %s: seckill %s does not read %s (it reads %v)", name, part, k, keys(pc.env))
			}
		}
		for _, a := range s.cmd[1:] {
			if f, ok := strings.CutPrefix(a, "--"); ok {
				f, _, _ = strings.Cut(f, "=")
				if !pc.flags[f] {
					t.Errorf("service %s: seckill %s has no flag --%s", name, part, f)
				}
			}
		}
	}
}

func checkBuild(t *testing.T, s *service) {
	t.Helper()
	ctx, dockerfile := "", "Dockerfile"
	switch b := s.Build.(type) {
	case string:
		ctx = b
	case map[string]any:
		ctx, _ = b["context"].(string)
		if d, ok := b["dockerfile"].(string); ok {
			dockerfile = d
		}
	}
	abs, _ := filepath.Abs(filepath.Join(filepath.Dir(composePath), ctx))
	root, _ := filepath.Abs(repoRoot)
	if abs != root || dockerfile != "Dockerfile" {
		t.Errorf("service %s: build %v: every part is built from the repository's Dockerfile (build: .)", s.name, s.Build)
	}
}

// TestComposeNetwork: the ports the parts listen on are the ones published,
// health-checked, and used in the other services' URLs.
func TestComposeNetwork(t *testing.T) {
	cf := load(t)
	listen := map[string]map[string]string{} // service -> port -> variable
	for name, s := range cf.Services {
		if s.ours() {
			listen[name] = listenPorts(t, s)
		} else if p, ok := servers[imageName(s.Image)]; ok {
			listen[name] = map[string]string{strconv.Itoa(p): "the " + imageName(s.Image) + " image"}
		}
	}
	for _, name := range sortedNames(cf) {
		s := cf.Services[name]
		// Published ports: to a port the service listens on, on loopback only.
		for _, v := range s.Ports {
			p, err := parsePort(v)
			if err != nil {
				t.Errorf("service %s: %v", name, err)
				continue
			}
			if _, ok := listen[name][p.container]; !ok {
				t.Errorf("service %s: publishes container port %s, but it listens on %v", name, p.container, sortedKeys(listen[name]))
			}
			if p.ip != "127.0.0.1" {
				t.Errorf("service %s: port %v is published on every interface; publish on 127.0.0.1 only", name, v)
			}
		}
		if !s.ours() {
			continue
		}
		// Healthchecks: over loopback, to a port the part listens on.
		urls, err := s.healthURLs()
		if err != nil {
			t.Errorf("service %s: healthcheck: %v", name, err)
		}
		if len(urls) == 0 {
			t.Errorf("service %s: no HTTP healthcheck (probe /readyz or /healthz of one of its SECKILL_*_LISTEN)", name)
		}
		for _, u := range urls {
			if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" {
				t.Errorf("service %s: healthcheck probes %s; it runs inside the container: use 127.0.0.1", name, u)
			}
			if _, ok := listen[name][u.Port()]; !ok {
				t.Errorf("service %s: healthcheck probes port %s, but it listens on %v", name, u.Port(), sortedKeys(listen[name]))
			}
			if u.Path != "/readyz" && u.Path != "/healthz" {
				t.Errorf("service %s: healthcheck probes %s, not /readyz or /healthz", name, u.Path)
			}
		}
		// Addresses of other services: a service name and the port it listens on.
		for _, k := range sortedKeys(s.env) {
			host, p, ok := address(s.env[k])
			if !ok {
				continue
			}
			if host == "127.0.0.1" || host == "localhost" {
				t.Errorf("service %s: %s=%s points at the container itself; use the service name", name, k, s.env[k])
				continue
			}
			if _, ok := cf.Services[host]; !ok {
				if !strings.HasSuffix(k, "_LISTEN") {
					t.Errorf("service %s: %s=%s: no service %q", name, k, s.env[k], host)
				}
				continue
			}
			if _, ok := listen[host][p]; !ok {
				t.Errorf("service %s: %s=%s: %s listens on %v, not %s", name, k, s.env[k], host, sortedKeys(listen[host]), p)
			}
		}
	}
}

// address finds the service host and port in a setting: a URL, or HOST:PORT.
func address(v string) (host, port string, ok bool) {
	if u, err := url.Parse(v); err == nil && u.Host != "" {
		def, known := defaultPorts[u.Scheme]
		if !known {
			return "", "", false
		}
		port = u.Port()
		if port == "" {
			port = strconv.Itoa(def)
		}
		return u.Hostname(), port, true
	}
	if h, p, err := net.SplitHostPort(v); err == nil && h != "" && !strings.ContainsAny(h, "/") {
		if _, err := strconv.Atoi(p); err == nil {
			return h, p, true
		}
	}
	return "", "", false
}

// TestComposeDependencies: a part starts only once every service it connects
// to is healthy, and every service waited on that way has a healthcheck.
func TestComposeDependencies(t *testing.T) {
	cf := load(t)
	for _, name := range sortedNames(cf) {
		s := cf.Services[name]
		for dep, cond := range s.deps {
			d := cf.Services[dep]
			if d == nil {
				t.Errorf("service %s depends on %s, which is not a service", name, dep)
				continue
			}
			if cond == "service_healthy" && !d.hasHealthcheck() {
				t.Errorf("service %s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
			}
			if _, server := servers[imageName(d.Image)]; server && !d.ours() && cond != "service_healthy" {
				t.Errorf("service %s depends on the server %s with condition %q; use service_healthy", name, dep, cond)
			}
		}
		if !s.ours() {
			continue
		}
		for _, k := range sortedKeys(s.env) {
			host, _, ok := address(s.env[k])
			if !ok || cf.Services[host] == nil || host == name {
				continue
			}
			if s.deps[host] != "service_healthy" {
				t.Errorf("service %s: %s connects to %s, so it must depend on it with condition: service_healthy", name, k, host)
			}
		}
	}
}

// TestComposeCredentials: the URLs carry the users, passwords and database
// the servers are created with.
func TestComposeCredentials(t *testing.T) {
	cf := load(t)
	for _, name := range sortedNames(cf) {
		s := cf.Services[name]
		if !s.ours() {
			continue
		}
		for _, k := range sortedKeys(s.env) {
			u, err := url.Parse(s.env[k])
			if err != nil || cf.Services[u.Hostname()] == nil {
				continue
			}
			srv := cf.Services[u.Hostname()]
			pass, _ := u.User.Password()
			switch imageName(srv.Image) {
			case "rabbitmq":
				user, want := srv.env["RABBITMQ_DEFAULT_USER"], srv.env["RABBITMQ_DEFAULT_PASS"]
				if user == "" {
					user, want = "guest", "guest"
				}
				if user == "guest" {
					t.Errorf("service %s: %s: RabbitMQ's guest may only connect from loopback; set RABBITMQ_DEFAULT_USER/PASS on %s", name, k, srv.name)
				}
				if u.User.Username() != user || pass != want {
					t.Errorf("service %s: %s: user %q does not match RABBITMQ_DEFAULT_USER/PASS of %s (%q)", name, k, u.User.Username(), srv.name, user)
				}
			case "postgres":
				user := srv.env["POSTGRES_USER"]
				if user == "" {
					user = "postgres"
				}
				db := srv.env["POSTGRES_DB"]
				if db == "" {
					db = user
				}
				if u.User.Username() != user {
					t.Errorf("service %s: %s: user %q, but %s creates %q", name, k, u.User.Username(), srv.name, user)
				}
				if got := strings.TrimPrefix(u.Path, "/"); got != db {
					t.Errorf("service %s: %s: database %q, but %s creates %q (POSTGRES_DB)", name, k, got, srv.name, db)
				}
				if srv.env["POSTGRES_HOST_AUTH_METHOD"] != "trust" && pass != srv.env["POSTGRES_PASSWORD"] {
					t.Errorf("service %s: %s: the password is not POSTGRES_PASSWORD of %s", name, k, srv.name)
				}
			}
		}
	}
}

// TestComposeRequiresSecrets (issue 13, M4 and infrastructure credentials):
// no secret has a default (a placeholder such as change-me would be used as
// is); docker-compose refuses the file without each one, naming it; every
// server asks for a credential (Redis: an ACL user, the default user off;
// RabbitMQ: not guest; PostgreSQL: a password, not trust).
func TestComposeRequiresSecrets(t *testing.T) {
	raw, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	secretName := regexp.MustCompile(`TOKEN|SECRET|PASSWORD|_PASS$|REDISCLI_AUTH`)
	for _, m := range varRE.FindAllStringSubmatch(string(raw), -1) {
		name := m[1] // ${NAME...} only: $NAME is in comments here
		if secretName.MatchString(name) && m[2] != ":?" {
			t.Errorf("%s: a secret must be required (${%s:?...}), never defaulted", m[0], name)
		}
		if m[2] == ":?" && composeSecrets[name] == "" {
			t.Errorf("%s: required but not in composeSecrets", m[0])
		}
	}
	cf := load(t)
	for _, name := range sortedNames(cf) {
		for k, v := range cf.Services[name].env {
			if secretName.MatchString(k) && !slices.Contains(slices.Collect(maps.Values(composeSecrets)), v) {
				t.Errorf("service %s: %s is not one of the required secrets", name, k)
			}
		}
	}
	redis := cf.Services["redis"]
	script := strings.Join(redis.cmd, " ")
	for _, want := range []string{"user default off", "user seckill on >%s", "--aclfile /tmp/users.acl", `"$REDIS_PASSWORD"`} {
		if !strings.Contains(script, want) {
			t.Errorf("redis command lacks %q: %s", want, script)
		}
	}
	if redis.env["REDIS_PASSWORD"] != composeSecrets["SECKILL_REDIS_PASSWORD"] {
		t.Errorf("redis: REDIS_PASSWORD is %q", redis.env["REDIS_PASSWORD"])
	}
	if u := cf.Services["rabbitmq"].env["RABBITMQ_DEFAULT_USER"]; u == "" || u == "guest" {
		t.Errorf("rabbitmq: RABBITMQ_DEFAULT_USER %q", u)
	}
	pg := cf.Services["postgres"].env
	if pg["POSTGRES_HOST_AUTH_METHOD"] == "trust" || pg["POSTGRES_PASSWORD"] == "" {
		t.Errorf("postgres: trust or no password: %v", pg)
	}
	for _, name := range sortedNames(cf) {
		for k, v := range cf.Services[name].env {
			u, err := url.Parse(v)
			if err != nil || u.Scheme == "" || cf.Services[u.Hostname()] == nil || u.Scheme == "http" {
				continue
			}
			if p, ok := u.User.Password(); !ok || p == "" {
				t.Errorf("service %s: %s reaches %s without a password", name, k, u.Hostname())
			}
		}
	}

	dc, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Skip("docker-compose is not installed")
	}
	envFile := filepath.Join(t.TempDir(), "empty.env")
	if err := os.WriteFile(envFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for missing := range composeSecrets {
		var env []string
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); composeSecrets[k] == "" {
				env = append(env, kv)
			}
		}
		for k, v := range composeSecrets {
			if k != missing {
				env = append(env, k+"="+v)
			}
		}
		cmd := exec.Command(dc, "--env-file", envFile, "-f", composePath, "config")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), missing) || !strings.Contains(string(out), "compose-secrets.sh") {
			t.Errorf("docker-compose config without %s: %v\n%s", missing, err, out)
		}
	}
}

// ---------------------------------------------------------------- Dockerfile

type instruction struct {
	cmd  string // upper case
	args string
}

// parseDockerfile returns the instructions after the last FROM, and every RUN of
// the file.
func parseDockerfile(t *testing.T) (final []instruction, runs []string) {
	t.Helper()
	raw, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	var all []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if c, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(c + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		all = append(all, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	for _, in := range all {
		switch in.cmd {
		case "FROM":
			final = nil
		case "RUN":
			runs = append(runs, in.args)
		}
		final = append(final, in)
	}
	return final, runs
}

// TestDockerfile: the image holds the binary as its entrypoint, the files the
// parts are pointed at, the tools of the healthchecks, and exposes the ports.
func TestDockerfile(t *testing.T) {
	final, runs := parseDockerfile(t)
	cf := load(t)

	if !slices.ContainsFunc(runs, func(r string) bool {
		return strings.Contains(r, "CGO_ENABLED=0") && strings.Contains(r, "go build") &&
			strings.Contains(r, "-o /seckill") && strings.Contains(r, "./cmd/seckill")
	}) {
		t.Error("no RUN builds ./cmd/seckill to /seckill with CGO_ENABLED=0")
	}

	copies := map[string]string{} // destination in the image -> source in the context
	var binary, nonRoot bool
	var entrypoint string
	exposed := map[string]bool{}
	var finalRuns []string
	for _, in := range final {
		switch in.cmd {
		case "COPY", "ADD":
			f := strings.Fields(in.args)
			var from bool
			var plain []string
			for _, a := range f {
				if strings.HasPrefix(a, "--from=") {
					from = true
				} else if !strings.HasPrefix(a, "--") {
					plain = append(plain, a)
				}
			}
			if len(plain) != 2 {
				continue
			}
			if from && plain[0] == "/seckill" && plain[1] == "/seckill" {
				binary = true
			}
			if !from {
				copies[path.Clean(plain[1])] = path.Clean(plain[0])
			}
		case "ENTRYPOINT":
			entrypoint = in.args
		case "USER":
			u, _, _ := strings.Cut(in.args, ":")
			nonRoot = u != "root" && u != "0"
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				p, _, _ = strings.Cut(p, "/")
				exposed[p] = true
			}
		case "RUN":
			finalRuns = append(finalRuns, in.args)
		}
	}
	if !binary {
		t.Error("the final stage does not COPY --from=<build stage> /seckill /seckill")
	}
	if entrypoint != `["/seckill"]` {
		t.Errorf(`ENTRYPOINT is %s, want ["/seckill"]`, entrypoint)
	}
	if !nonRoot {
		t.Error("the final stage runs as root: add USER with a non-root uid")
	}
	if copies["/configs"] != "configs" {
		t.Errorf("the final stage does not copy configs/ to /configs (copies %v)", copies)
	}

	usesCurl := false
	for _, name := range sortedNames(cf) {
		s := cf.Services[name]
		if !s.ours() {
			continue
		}
		if s.Healthcheck != nil {
			test, _ := stringList(s.Healthcheck.Test)
			usesCurl = usesCurl || strings.Contains(strings.Join(test, " "), "curl")
		}
		for p, k := range listenPorts(t, s) {
			if !exposed[p] {
				t.Errorf("service %s: %s listens on %s, which the Dockerfile does not EXPOSE", name, k, p)
			}
		}
		// Settings that are paths in the image: copied there from the repository.
		for _, k := range sortedKeys(s.env) {
			v := s.env[k]
			if !strings.HasPrefix(v, "/") {
				continue
			}
			src := ""
			for dst, from := range copies {
				if rel, err := filepath.Rel(dst, v); err == nil && !strings.HasPrefix(rel, "..") {
					src = filepath.Join(repoRoot, from, rel)
				}
			}
			if src == "" {
				t.Errorf("service %s: %s=%s is not in the image: the final stage copies only %v", name, k, v, sortedKeys(copies))
				continue
			}
			data, err := os.ReadFile(src)
			if err != nil {
				t.Errorf("service %s: %s=%s: %v", name, k, v, err)
				continue
			}
			if k == "SECKILL_LIMITS" {
				if _, err := limit.ParseRules(data); err != nil {
					t.Errorf("service %s: %s=%s: %v", name, k, v, err)
				}
			}
		}
	}
	if usesCurl && !slices.ContainsFunc(finalRuns, func(r string) bool { return strings.Contains(r, "install") && strings.Contains(r, "curl") }) {
		t.Error("the healthchecks run curl, but the final stage does not install it")
	}
}

// ----------------------------------------------------------------- helpers

func imageName(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return path.Base(image)
}

func sortedNames(cf *composeFile) []string { return sortedKeys(cf.Services) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func keys[V any](m map[string]V) string { return strings.Join(sortedKeys(m), ", ") }
