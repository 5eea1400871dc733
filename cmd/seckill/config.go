package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"seckill/internal/app"
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

// Every setting is a flag; most also read an environment variable and a
// config file key named like the flag. Precedence: the command line, then
// the environment, then the file, then the built-in default. The env*
// helpers below register a flag and its variable: that is the one place a
// setting is added. Values from the environment and the file are parsed as
// strictly as flags, at start (resolveSettings): a bad value is an error
// that names where it came from, never a silent default.

func envFlag(fs *pflag.FlagSet, _ func(string) string, p *string, name, env, def, usage string) {
	fs.StringVar(p, name, def, usage+" ($"+env+")")
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
}

// aliasFlags keeps old flag names working: given on the command line, an
// old name sets the flag under its current name and marks it as given, so
// neither the environment nor a config file overrides it. (A second flag
// bound to the same variable would not be marked, and $ENV of the current
// name would silently win over the old name on the line.)
func aliasFlags(fs *pflag.FlagSet, old map[string]string) {
	prev := fs.GetNormalizeFunc()
	fs.SetNormalizeFunc(func(f *pflag.FlagSet, name string) pflag.NormalizedName {
		if n, ok := old[name]; ok {
			name = n
		}
		return prev(f, name)
	})
}

func envDuration(fs *pflag.FlagSet, _ func(string) string, p *time.Duration, name, env string, def time.Duration, usage string) {
	fs.DurationVar(p, name, def, usage+" ($"+env+")")
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
}

func envBool(fs *pflag.FlagSet, _ func(string) string, p *bool, name, env string, def bool, usage string) {
	fs.BoolVar(p, name, def, usage+" ($"+env+")")
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
}

func envInt(fs *pflag.FlagSet, _ func(string) string, p *int, name, env string, def int, usage string) {
	fs.IntVar(p, name, def, usage+" ($"+env+")")
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
}

const (
	envAnnotation    = "seckill/env"
	sourceAnnotation = "seckill/source"
)

// withConfigFile adds --config to a command: a YAML file of settings named
// like the flags (listen: 127.0.0.1:8090).
func withConfigFile(cmd *cobra.Command, _ func(string) string) *cobra.Command {
	cmd.Flags().String("config", "", "YAML file of settings named like the flags ($SECKILL_CONFIG)")
	_ = cmd.Flags().SetAnnotation("config", envAnnotation, []string{"SECKILL_CONFIG"})
	return cmd
}

// resolveSettings applies the environment and the config file to the flags
// not given on the command line, and records where each value came from.
// Every bad value is reported, each with its source.
func resolveSettings(fs *pflag.FlagSet, getenv func(string) string) error {
	onLine := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { onLine[f.Name] = true })
	var bad []string
	setSource := func(f *pflag.Flag, src string) { _ = fs.SetAnnotation(f.Name, sourceAnnotation, []string{src}) }
	fs.VisitAll(func(f *pflag.Flag) {
		if onLine[f.Name] {
			setSource(f, "")
			return
		}
		env := f.Annotations[envAnnotation]
		if len(env) != 1 {
			return
		}
		v := getenv(env[0])
		if v == "" {
			return
		}
		if f.Value.Type() == "bool" {
			switch strings.ToLower(v) {
			case "yes", "on":
				v = "true"
			case "no", "off":
				v = "false"
			}
		}
		if err := fs.Set(f.Name, v); err != nil {
			bad = append(bad, fmt.Sprintf("$%s=%s: %s (it sets --%s)", env[0], quoteValue(f.Name, v), expect(f), f.Name))
			return
		}
		setSource(f, "$"+env[0])
	})
	if len(bad) > 0 {
		return settingsError(bad)
	}
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		if err := applyConfigFile(fs, f.Value.String(), getenv); err != nil {
			return err
		}
	}
	if f := fs.Lookup("log-level"); f != nil {
		var l slog.Level
		if l.UnmarshalText([]byte(f.Value.String())) != nil {
			return explain(fs, app.Problems{{Setting: "log-level", Msg: "must be debug, info, warn or error"}})
		}
	}
	return nil
}

// invalidArg is pflag's message for a bad value on the command line.
var invalidArg = regexp.MustCompile(`^invalid argument "(.*)" for "(?:-\w, )?--([\w-]+)" flag: `)

// badFlagValue rewrites pflag's message for a bad command-line value into
// the same words as a bad value from the environment or a file.
func badFlagValue(c *cobra.Command, err error) error {
	m := invalidArg.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	f := c.Flags().Lookup(m[2])
	if f == nil {
		return err
	}
	return fmt.Errorf("bad setting: --%s=%s: %s", m[2], quoteValue(m[2], m[1]), expect(f))
}

func settingsError(bad []string) error {
	if len(bad) == 1 {
		return fmt.Errorf("bad setting: %s", bad[0])
	}
	return fmt.Errorf("%d bad settings:\n  %s", len(bad), strings.Join(bad, "\n  "))
}

// expect says what a flag of this type accepts.
func expect(f *pflag.Flag) string {
	switch f.Value.Type() {
	case "int":
		return "not a whole number"
	case "duration":
		return "not a duration (such as 500ms, 10s, 2m or 1h)"
	case "bool":
		return "not true or false"
	default:
		return "not accepted"
	}
}

func quoteValue(name, v string) string {
	return strconv.Quote(mask(name, v))
}

// applyConfigFile sets the flags named in a YAML file that neither the
// command line nor the environment set.
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
	var bad []string
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" || k == "help" {
			bad = append(bad, fmt.Sprintf("%s: unknown setting %q (settings are named like the flags: see --help)", file, k))
			continue
		}
		if f.Changed {
			continue // the command line or the environment wins
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
			bad = append(bad, fmt.Sprintf("%s: %s: %s: %s", file, k, quoteValue(k, s), expect(f)))
			continue
		}
		_ = fs.SetAnnotation(k, sourceAnnotation, []string{file})
	}
	if len(bad) > 0 {
		return settingsError(bad)
	}
	return nil
}

// sourceOf says where a flag's value came from: "" for the command line,
// "$VAR", a config file, or "default".
func sourceOf(fs *pflag.FlagSet, name string) string {
	f := fs.Lookup(name)
	if f == nil {
		return "default"
	}
	if src, ok := f.Annotations[sourceAnnotation]; ok && len(src) == 1 {
		return src[0]
	}
	if f.Changed {
		return ""
	}
	return "default"
}

// given tells whether a setting was given (command line, environment or file).
func given(fs *pflag.FlagSet, name string) bool { return sourceOf(fs, name) != "default" }

// explain turns the problems of a role's configuration into one error that
// names, for each, the flag, its value and where it came from.
func explain(fs *pflag.FlagSet, err error) error {
	var ps app.Problems
	if !errors.As(err, &ps) {
		return err
	}
	lines := make([]string, len(ps))
	for i, p := range ps {
		f := fs.Lookup(p.Setting)
		if f == nil {
			lines[i] = p.Setting + ": " + p.Msg
			continue
		}
		val := f.Value.String()
		where := ""
		switch src := sourceOf(fs, p.Setting); {
		case src == "":
		case src == "default" && (val == "" || val == "[]"):
			where = " (not set"
			if env := f.Annotations[envAnnotation]; len(env) == 1 {
				where += "; nor $" + env[0]
			}
			where += ")"
		case src == "default":
			where = " (the default)"
		default:
			where = " (from " + src + ")"
		}
		if val == "" || val == "[]" {
			lines[i] = fmt.Sprintf("--%s%s: %s", p.Setting, where, p.Msg)
		} else {
			lines[i] = fmt.Sprintf("--%s=%s%s: %s", p.Setting, mask(p.Setting, val), where, p.Msg)
		}
	}
	return settingsError(lines)
}

// startLog prints the configuration and returns the role's logger: the
// start of every role.
func startLog(stderr io.Writer, name, level string, fs *pflag.FlagSet) *slog.Logger {
	printConfig(stderr, name, fs)
	return newLogger(stderr, level).With("component", name)
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

func (c *common) redisClient() (*redis.Client, error) { return app.RedisClient(c.RedisURL) }

func (c *common) stores() app.Stores {
	return app.Stores{RedisURL: c.RedisURL, RedisPrefix: c.RedisPrefix, AMQPURL: c.AMQPURL, Queue: c.Queue, PGURL: c.PGURL}
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
	return app.MaskURL(v)
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
