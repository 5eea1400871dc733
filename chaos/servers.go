package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Servers are the shared RabbitMQ, PostgreSQL and ZooKeeper started by
// scripts/services.sh in one folder. Each run gets its own Redis (see
// Redis), database, queue and ZooKeeper root.
type Servers struct {
	Script  string // scripts/services.sh
	Dir     string
	AMQPURL string
	PGAdmin string // postgres://.../postgres
	ZK      string
}

// StartServers runs `services.sh start DIR` and reads DIR/env.
func StartServers(ctx context.Context, script, dir string) (*Servers, error) {
	cmd := exec.CommandContext(ctx, script, "start", dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("starting servers: %w", err)
	}
	env, err := readEnv(filepath.Join(dir, "env"))
	if err != nil {
		return nil, err
	}
	return &Servers{Script: script, Dir: dir, AMQPURL: env["SECKILL_TEST_AMQP"], PGAdmin: env["SECKILL_TEST_PG"], ZK: env["SECKILL_TEST_ZK"]}, nil
}

// Stop stops every server `start` started.
func (s *Servers) Stop() error {
	cmd := exec.Command(s.Script, "stop", s.Dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		k, v, ok := strings.Cut(line, "=")
		if ok {
			m[k] = strings.Trim(v, "'\"")
		}
	}
	return m, sc.Err()
}

// CreateDatabase makes a fresh database and returns its URL.
func (s *Servers) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, s.PGAdmin)
	if err != nil {
		return "", fmt.Errorf("connecting to postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("creating database %s: %w", name, err)
	}
	return strings.Replace(s.PGAdmin, "/postgres?", "/"+name+"?", 1), nil
}

// DropDatabase removes a run's database.
func (s *Servers) DropDatabase(ctx context.Context, name string) {
	conn, err := pgx.Connect(ctx, s.PGAdmin)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

// ---------------------------------------------------------------- RabbitMQ

func (s *Servers) rmqDir() string { return filepath.Join(s.Dir, "rabbitmq") }

// KillRabbitMQ sends SIGKILL to the broker's VM and its start script.
func (s *Servers) KillRabbitMQ() error {
	var errs []error
	for _, f := range []string{"beam.pid", "server.pid"} {
		pid, err := readPid(filepath.Join(s.rmqDir(), f))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if len(errs) == 2 {
		return errors.Join(errs...)
	}
	return nil
}

// StartRabbitMQ restarts the broker on the same folder (same port, data).
func (s *Servers) StartRabbitMQ(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, s.Script, "rabbitmq-start", s.rmqDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("restarting rabbitmq: %w: %s", err, out)
	}
	return nil
}

// RabbitMQCtl runs rabbitmqctl against the broker, with the environment
// services.sh gives it (its own cookie, node name and epmd).
func (s *Servers) RabbitMQCtl(ctx context.Context, args ...string) error {
	d := s.rmqDir()
	vars, err := readEnv(filepath.Join(d, "rabbitmq.vars"))
	if err != nil {
		return err
	}
	port, err := os.ReadFile(filepath.Join(d, "port"))
	if err != nil {
		return err
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + d,
		"LANG=C.UTF-8", "LC_ALL=C.UTF-8", "ERL_EPMD_PORT=" + vars["RMQ_EPMD_PORT"], "ERL_EPMD_ADDRESS=127.0.0.1",
		"RABBITMQ_NODENAME=" + vars["RMQ_NODE"], "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strings.TrimSpace(string(port)), "RABBITMQ_DIST_PORT=" + vars["RMQ_DIST_PORT"],
		"RABBITMQ_MNESIA_BASE=" + d + "/mnesia", "RABBITMQ_LOG_BASE=" + d + "/log",
		"RABBITMQ_CONFIG_FILE=" + d + "/rabbitmq", "RABBITMQ_ADVANCED_CONFIG_FILE=" + d + "/advanced.config",
		"RABBITMQ_CONF_ENV_FILE=" + d + "/rabbitmq-env.conf", "RABBITMQ_ENABLED_PLUGINS_FILE=" + d + "/enabled_plugins",
		"RABBITMQ_PID_FILE=" + d + "/beam.pid"}
	argv := append([]string{"/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", vars["RMQ_NODE"]}, args...)
	if os.Geteuid() == 0 {
		argv = append([]string{"setpriv", "--reuid=rabbitmq", "--regid=rabbitmq", "--init-groups", "--"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env, cmd.Dir = env, d
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// AMQPAddr is the broker's host:port.
func (s *Servers) AMQPAddr() string {
	return strings.TrimSuffix(strings.TrimPrefix(s.AMQPURL, "amqp://guest:guest@"), "/")
}

// -------------------------------------------------------------- PostgreSQL

func (s *Servers) pgCtl(ctx context.Context, args ...string) error {
	argv := append([]string{"/usr/lib/postgresql/15/bin/pg_ctl", "-D", filepath.Join(s.Dir, "pg", "data")}, args...)
	if os.Geteuid() == 0 {
		argv = append([]string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = filepath.Join(s.Dir, "pg")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// StopPostgres is `pg_ctl stop -m immediate`: no shutdown checkpoint, a
// crash as far as the data is concerned.
func (s *Servers) StopPostgres(ctx context.Context) error {
	return s.pgCtl(ctx, "-m", "immediate", "-w", "stop")
}

// StartPostgres starts PostgreSQL again on its port.
func (s *Servers) StartPostgres(ctx context.Context) error {
	d := filepath.Join(s.Dir, "pg")
	port, err := os.ReadFile(filepath.Join(d, "port"))
	if err != nil {
		return err
	}
	if err := s.pgCtl(ctx, "-w", "-t", "60", "-l", filepath.Join(d, "log"), "-o",
		fmt.Sprintf("-p %s -k %s -c listen_addresses=127.0.0.1 -c max_connections=300", strings.TrimSpace(string(port)), d), "start"); err != nil {
		return err
	}
	// services.sh stop finds the new postmaster by this file.
	if pid, err := readPid(filepath.Join(d, "data", "postmaster.pid")); err == nil {
		_ = os.WriteFile(filepath.Join(d, "postgres.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644)
	}
	return nil
}

// PostgresUp reports whether PostgreSQL answers a query.
func (s *Servers) PostgresUp(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.PGAdmin)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx) == nil
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// tcpUp reports whether something accepts connections on addr.
func tcpUp(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// freePort returns a loopback address nobody listens on (it may be taken
// between this call and its use; good enough on a test machine).
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StopZooKeeper stops the shared ZooKeeper (services.sh zookeeper-stop).
func (s *Servers) StopZooKeeper(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, s.Script, "zookeeper-stop", s.Dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("stopping zookeeper: %w: %s", err, out)
	}
	return nil
}

// StartZooKeeper starts it again on the same port and data; a no-op when
// it runs.
func (s *Servers) StartZooKeeper(ctx context.Context) error {
	if tcpUp(s.ZK) {
		return nil
	}
	out, err := exec.CommandContext(ctx, s.Script, "zookeeper-start", s.Dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("starting zookeeper: %w: %s", err, out)
	}
	return nil
}

// Heal brings back a shared server a failed run left down or blocked, so
// the rows after it start from a healthy system.
func (s *Servers) Heal(ctx context.Context) error {
	var errs []error
	if !tcpUp(s.AMQPAddr()) {
		errs = append(errs, s.StartRabbitMQ(ctx))
	} else {
		errs = append(errs, s.RabbitMQCtl(ctx, "set_vm_memory_high_watermark", "0.4"))
	}
	if !s.PostgresUp(ctx) {
		errs = append(errs, s.StartPostgres(ctx))
	}
	errs = append(errs, s.StartZooKeeper(ctx))
	return errors.Join(errs...)
}
