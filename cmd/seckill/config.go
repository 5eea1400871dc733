package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"seckill/internal/redisconf"
	"seckill/limit"
)

// common holds the settings every part shares.
type common struct {
	RedisURL    string
	RedisPrefix string
	AMQPURL     string
	PGURL       string
	Queue       string
	LogLevel    string
}

// envFlag registers a string flag whose default comes from an environment
// variable, so flags win over the environment and the environment over the
// built-in default.
func envFlag(fs *pflag.FlagSet, getenv func(string) string, p *string, name, env, def, usage string) {
	if v := getenv(env); v != "" {
		def = v
	}
	fs.StringVar(p, name, def, usage+" ($"+env+")")
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
}

func envDuration(fs *pflag.FlagSet, getenv func(string) string, p *time.Duration, name, env string, def time.Duration, usage string) {
	if v := getenv(env); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			def = d
		}
	}
	fs.DurationVar(p, name, def, usage+" ($"+env+")")
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
}

func envBool(fs *pflag.FlagSet, getenv func(string) string, p *bool, name, env string, def bool, usage string) {
	switch strings.ToLower(getenv(env)) {
	case "1", "true", "yes":
		def = true
	case "0", "false", "no":
		def = false
	}
	fs.BoolVar(p, name, def, usage+" ($"+env+")")
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
}

func envInt(fs *pflag.FlagSet, getenv func(string) string, p *int, name, env string, def int, usage string) {
	if v := getenv(env); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			def = n
		}
	}
	fs.IntVar(p, name, def, usage+" ($"+env+")")
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
}

const envAnnotation = "seckill/env"

// withConfigFile adds --config to a command: a YAML file of settings named
// like the flags (listen: 127.0.0.1:8090). Precedence: flags, then the
// environment, then the file, then the built-in defaults.
func withConfigFile(cmd *cobra.Command, getenv func(string) string) *cobra.Command {
	var file string
	cmd.Flags().StringVar(&file, "config", getenv("SECKILL_CONFIG"), "YAML file of settings named like the flags ($SECKILL_CONFIG)")
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if file != "" {
			if err := applyConfigFile(c.Flags(), file, getenv); err != nil {
				return err
			}
		}
		return run(c, args)
	}
	return cmd
}

func applyConfigFile(fs *pflag.FlagSet, file string, getenv func(string) string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	var settings map[string]any
	if err := yaml.Unmarshal(raw, &settings); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" || k == "help" {
			return fmt.Errorf("%s: unknown setting %q (settings are named like the flags: see --help)", file, k)
		}
		if f.Changed {
			continue // a flag wins
		}
		if env := f.Annotations[envAnnotation]; len(env) == 1 && getenv(env[0]) != "" {
			continue // the environment wins
		}
		v := settings[k]
		var s string
		switch x := v.(type) {
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			s = strings.Join(parts, ",")
		default:
			s = fmt.Sprint(x)
		}
		if err := fs.Set(k, s); err != nil {
			return fmt.Errorf("%s: setting %s: %w", file, k, err)
		}
	}
	return nil
}

func (c *common) register(fs *pflag.FlagSet, getenv func(string) string, needs ...string) {
	want := map[string]bool{}
	for _, n := range needs {
		want[n] = true
	}
	if want["redis"] {
		envFlag(fs, getenv, &c.RedisURL, "redis-url", "SECKILL_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL")
		envFlag(fs, getenv, &c.RedisPrefix, "redis-prefix", "SECKILL_REDIS_PREFIX", "seckill:", "prefix of every Redis key")
	}
	if want["amqp"] {
		envFlag(fs, getenv, &c.AMQPURL, "amqp-url", "SECKILL_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
		envFlag(fs, getenv, &c.Queue, "queue", "SECKILL_QUEUE", "seckill.orders", "RabbitMQ queue of orders (its dead letters go to QUEUE.dead)")
	}
	if want["pg"] {
		envFlag(fs, getenv, &c.PGURL, "pg-url", "SECKILL_PG_URL", "postgres://postgres@127.0.0.1:5432/seckill?sslmode=disable", "PostgreSQL URL")
	}
	envFlag(fs, getenv, &c.LogLevel, "log-level", "SECKILL_LOG_LEVEL", "info", "log level: debug, info, warn, error")
}

func (c *common) redisClient() (*redis.Client, error) {
	opt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("parsing redis url: %w", err)
	}
	// Timeouts and retries: internal/redisconf. Retries are safe because
	// every command is idempotent per request (ARCHITECTURE.md "Retry safety").
	return redisconf.New(opt), nil
}

// noRetryRedisClient is a client that never resends a command: for the
// commands a blind retry after a lost reply would spoil (the relay's
// XREADGROUP > and XCLAIM). Their callers recover by reading state.
func noRetryRedisClient(url string, poolSize int) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parsing redis url: %w", err)
	}
	opt.PoolSize = poolSize
	opt.MaxRetries = -1 // redisconf keeps it: the timeouts and command budget still apply
	return redisconf.New(opt), nil
}

// printConfig writes the effective configuration with secrets masked.
func printConfig(w io.Writer, name string, fs *pflag.FlagSet) {
	var lines []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		lines = append(lines, fmt.Sprintf("  %s=%s", f.Name, mask(f.Name, f.Value.String())))
	})
	sort.Strings(lines)
	fmt.Fprintf(w, "%s configuration:\n%s\n", name, strings.Join(lines, "\n"))
}

func mask(name, v string) string {
	if strings.Contains(name, "token") || strings.Contains(name, "password") || strings.Contains(name, "secret") {
		if v == "" {
			return ""
		}
		return "****"
	}
	if u, err := url.Parse(v); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return strings.Replace(u.String(), "xxxxx", "****", 1)
		}
	}
	return v
}

// writeAddrFile writes the address a server listens on, for scripts and
// tests that start it on port 0.
func writeAddrFile(path, addr string) error {
	if path == "" {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// loadLimiter reads token bucket rules from a YAML file and builds the limiter.
func loadLimiter(file string, maxKeys int, sweep time.Duration) (*limit.Limiter, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading limits: %w", err)
	}
	rules, err := limit.ParseRules(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return limit.New(rules, limit.Options{MaxKeysPerRule: maxKeys, IdleAfter: sweep})
}

// splitList splits a comma-separated setting, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
