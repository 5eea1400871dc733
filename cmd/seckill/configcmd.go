package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"seckill/dynconfig"
	"seckill/internal/zkconn"
	"seckill/limit"
)

// Exit statuses of `seckill config`.
const (
	exitInvalid  = 2 // the configuration has problems
	exitConflict = 3 // somebody else pushed first
)

type configOpts struct {
	ZK      string
	Root    string
	Timeout time.Duration
	// ZooKeeper digest credentials (user:password): the pusher's own, and
	// the backends' and edges' (comma lists) whose rights the pusher's
	// ACLs grant (only their digests reach ZooKeeper).
	ZKAuth, BackendAuth, EdgeAuth string
	SigningKey                    string // file of the Ed25519 private key
	PublicKeys                    string // other trusted public keys (rollback to an old key's version)
}

// roles returns the deployment's identities (nil without --zk-auth).
func (o *configOpts) roles() (*zkconn.Roles, error) {
	if o.ZKAuth == "" {
		return nil, nil
	}
	p, err := zkconn.ParseCredential(o.ZKAuth)
	if err != nil {
		return nil, fmt.Errorf("--zk-auth ($SECKILL_ZK_PUSHER): %w", err)
	}
	r := &zkconn.Roles{Pusher: p}
	if r.Backends, err = zkconn.ParseCredentials(o.BackendAuth); err != nil {
		return nil, fmt.Errorf("--zk-backend-auth ($SECKILL_ZK_BACKEND): %w", err)
	}
	if r.Edges, err = zkconn.ParseCredentials(o.EdgeAuth); err != nil {
		return nil, fmt.Errorf("--zk-edge-auth ($SECKILL_ZK_EDGE): %w", err)
	}
	return r, nil
}

func (o *configOpts) store(ctx context.Context) (*dynconfig.Store, func(), error) {
	if err := zkReachable(ctx, o.ZK); err != nil {
		return nil, nil, err
	}
	roles, err := o.roles()
	if err != nil {
		return nil, nil, err
	}
	var signer ed25519.PrivateKey
	if o.SigningKey != "" {
		raw, err := os.ReadFile(o.SigningKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--signing-key ($SECKILL_CONFIG_SIGNING_KEY): %w", err)
		}
		if signer, err = dynconfig.ParsePrivateKey(string(raw)); err != nil {
			return nil, nil, fmt.Errorf("--signing-key %s: %w", o.SigningKey, err)
		}
	}
	var cred *zkconn.Credential
	if roles != nil {
		cred = &roles.Pusher
	}
	cctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	conn, _, err := dynconfig.DialAs(cctx, o.ZK, 10*time.Second, cred)
	if err != nil {
		return nil, nil, err
	}
	st := dynconfig.NewStore(conn, o.Root)
	st.Roles, st.Signer = roles, signer
	if st.Trusted, err = dynconfig.ParsePublicKeys(o.PublicKeys); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("--config-public-keys ($SECKILL_CONFIG_PUBLIC_KEYS): %w", err)
	}
	return st, conn.Close, nil
}

// zkReachable fails at once when no ZooKeeper address accepts a TCP
// connection (nothing listens: a stack that is down, a stale
// .seckill/env), instead of waiting out --zk-timeout for a session.
func zkReachable(ctx context.Context, addrs string) error {
	var errs []error
	for _, a := range splitList(addrs) {
		if !strings.Contains(a, ":") {
			a += ":2181"
		}
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err := d.DialContext(ctx, "tcp", a)
		if err == nil {
			c.Close()
			return nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return errors.New("--zk (SECKILL_ZK) is empty: name the ZooKeeper servers, e.g. 127.0.0.1:2181")
	}
	return fmt.Errorf("no ZooKeeper answers at %s (--zk, SECKILL_ZK): %w; is it running? (after `make down`, `make up` starts the stack again)", addrs, errors.Join(errs...))
}

func configCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	o := &configOpts{}
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Validate, push and inspect the edges' limiter configuration in ZooKeeper",
		Long: `The edges' protective settings (token-bucket rules, proof-of-work
difficulty, the bound on backend calls in flight, the circuit breaker and
the trusted proxies) live in ZooKeeper, in the node ROOT/config/limits, as
JSON {version, pushed_at, pushed_by, config, key_id, signature}. Files are
YAML (see configs/edge-dynamic.yaml).

Every edge watches the node: it validates each new version, checks its
Ed25519 signature (--signing-key here, --config-public-keys on the edges:
seckill config keygen), swaps it in, keeps a last good copy on disk and
reports the version in force in its ephemeral node ROOT/edges/<id>. An
invalid, unsigned, badly signed or not newer version is refused by the
edges, which keep the previous one. With --zk-auth (and the backends' and
edges' credentials) every push also sets the tree's ACLs (seckill config
init; docs/security-zookeeper.md).

push is a compare-and-set: it writes version N+1 only if N is still the
version in force, so two operators cannot overwrite each other silently.
The last 20 pushes are kept in ROOT/config/history for rollback.

Exit status: 0 success, 1 failure (ZooKeeper unreachable...), 2 invalid
configuration, 3 conflict (somebody else pushed first).`,
		Example: `  seckill config validate configs/edge-dynamic.yaml
  seckill config keygen --out limits
  seckill config push --signing-key limits.key configs/edge-dynamic.yaml
  seckill config push configs/edge-dynamic.yaml --expect-version 7
  seckill config show
  seckill config history
  seckill config rollback 6
  SECKILL_ZK=zk1:2181,zk2:2181 seckill config show --zk-root /seckill-staging`,
	}
	fs := cmd.PersistentFlags()
	envFlag(fs, getenv, &o.ZK, "zk", "SECKILL_ZK", "127.0.0.1:2181", "ZooKeeper addresses, comma-separated")
	envFlag(fs, getenv, &o.Root, "zk-root", "SECKILL_ZK_ROOT", dynconfig.DefaultRoot, "root path in ZooKeeper")
	envDuration(fs, getenv, &o.Timeout, "zk-timeout", "SECKILL_ZK_TIMEOUT", 10*time.Second, "how long to wait for ZooKeeper")
	envFlag(fs, getenv, &o.ZKAuth, "zk-auth", "SECKILL_ZK_PUSHER", "", "the pusher's ZooKeeper digest credential, user:password; with it every push also sets the tree's ACLs (docs/security-zookeeper.md)")
	envFlag(fs, getenv, &o.BackendAuth, "zk-backend-auth", "SECKILL_ZK_BACKEND", "", "the backends' ZooKeeper credential(s), user:password[,...]: the ACLs let them register")
	envFlag(fs, getenv, &o.EdgeAuth, "zk-edge-auth", "SECKILL_ZK_EDGE", "", "the edges' ZooKeeper credential(s), user:password[,...]: the ACLs let them write their status")
	envFlag(fs, getenv, &o.PublicKeys, "config-public-keys", "SECKILL_CONFIG_PUBLIC_KEYS", "", "public keys (base64, comma-separated) whose versions rollback may push again, besides the signing key's own (the old key during a rotation)")
	envFlag(fs, getenv, &o.SigningKey, "signing-key", "SECKILL_CONFIG_SIGNING_KEY", "", "file of the Ed25519 private key that signs pushes and rollbacks (seckill config keygen)")

	cmd.AddCommand(
		configValidateCmd(stdout, stderr),
		configPushCmd(o, stdout, stderr),
		configShowCmd(o, stdout),
		configHistoryCmd(o, stdout),
		configRollbackCmd(o, stdout, stderr),
		configInitCmd(o, stdout),
		configKeygenCmd(stdout),
	)
	return cmd
}

// readConfigFile parses and validates FILE, printing every problem.
func readConfigFile(file string, stderr io.Writer) (dynconfig.Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return dynconfig.Config{}, err
	}
	return parseConfig(file, data, stderr)
}

// parseConfig parses and validates data read from file, printing every
// problem.
func parseConfig(file string, data []byte, stderr io.Writer) (dynconfig.Config, error) {
	cfg, err := dynconfig.Parse(data)
	if err != nil {
		ps := dynconfig.ProblemsOf(err)
		fmt.Fprintf(stderr, "%s: %d problem(s):\n", file, len(ps))
		for _, p := range ps {
			fmt.Fprintf(stderr, "%s:%s\n", file, formatProblem(p))
		}
		return cfg, exitCode(exitInvalid)
	}
	return cfg, nil
}

func formatProblem(p dynconfig.Problem) string {
	line := ""
	if p.Line > 0 {
		line = strconv.Itoa(p.Line) + ":"
	}
	place := ""
	if p.Place != "" {
		place = " " + p.Place + ":"
	}
	return line + place + " " + p.Msg
}

// limitsOnlyDefaults completes a limits file (only "rules", as
// configs/limits.yaml and the edge's --limits) into a whole configuration
// so its rules are checked exactly as a pushed version's. Appended at the
// end, it leaves the file's line numbers as they are.
const limitsOnlyDefaults = "\ndifficulty: 16\nmax_in_flight: 512\nbreaker: {consecutive_failures: 5, open_for: 1s, half_open_probes: 3}\n"

// isLimitsFile says whether data is a mapping whose keys are "rules" and
// optionally "registration" (a limits file).
func isLimitsFile(data []byte) bool {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return false
	}
	m := doc.Content[0]
	rules := false
	for i := 0; i+1 < len(m.Content); i += 2 {
		switch m.Content[i].Value {
		case "rules":
			rules = true
		case "registration":
		default:
			return false
		}
	}
	return rules
}

func configValidateCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a configuration file; print every problem with its place (exit 2 on problems)",
		Long: `Check a configuration file for "config push" (configs/edge-dynamic.yaml), or a
limits file holding only "rules" and "registration" (configs/limits.yaml, the
edge's --limits),
and print every problem with its line, not only the first. Exit status 2 when
there is any.`,
		Example: `  seckill config validate configs/edge-dynamic.yaml
  seckill config validate configs/limits.yaml`,
		Args: exactArgs("FILE"),
		RunE: func(c *cobra.Command, args []string) error {
			if data, err := os.ReadFile(args[0]); err == nil && isLimitsFile(data) {
				cfg, err := parseConfig(args[0], append(data, limitsOnlyDefaults...), stderr)
				if err != nil {
					return err
				}
				if _, err := limit.ParseRules(data); err != nil {
					fmt.Fprintf(stderr, "%s: %v\n", args[0], err)
					return exitCode(exitInvalid)
				}
				fmt.Fprintf(stdout, "%s: valid limits file (%d rules; for the edge's --limits, or the rules of a config push)\n", args[0], len(cfg.Rules))
				return nil
			}
			cfg, err := readConfigFile(args[0], stderr)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: valid (%d rules, difficulty %d+%d, max_in_flight %d, %d trusted proxies)\n",
				args[0], len(cfg.Rules), cfg.Difficulty, cfg.DifficultyUnderLoad, cfg.MaxInFlight, len(cfg.TrustedProxies))
			return nil
		},
	}
}

func reportConflict(stderr io.Writer, err error) error {
	var ce *dynconfig.ConflictError
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "conflict: you expected version %d, but version %d is in force", ce.Expected, ce.Current)
		if ce.PushedBy != "" {
			fmt.Fprintf(stderr, " (pushed by %s at %s)", ce.PushedBy, ce.PushedAt.Local().Format(time.RFC3339))
		}
		fmt.Fprintln(stderr, ": nothing was written. Look at it (seckill config show) and push again.")
		return exitCode(exitConflict)
	}
	return err
}

func configPushCmd(o *configOpts, stdout, stderr io.Writer) *cobra.Command {
	expect := -1
	by := ""
	cmd := &cobra.Command{
		Use:   "push FILE",
		Short: "Validate FILE and write it as the next version (compare-and-set)",
		Long: `push validates FILE, then writes it as version N+1 only if version N is
still in force. N is --expect-version when given (the version you looked
at); otherwise push reads it first, and a push by somebody else between
that read and the write is still detected. On a conflict nothing is
written, push says who won and exits with status 3.`,
		Example: `  seckill config push configs/edge-dynamic.yaml
  seckill config push new.yaml --expect-version 7 --by alice`,
		Args: exactArgs("FILE"),
		RunE: func(c *cobra.Command, args []string) error {
			cfg, err := readConfigFile(args[0], stderr)
			if err != nil {
				return err
			}
			st, done, err := o.store(c.Context())
			if err != nil {
				return err
			}
			defer done()
			if by != "" {
				st.By = by
			}
			ctx, cancel := context.WithTimeout(c.Context(), o.Timeout)
			defer cancel()
			exp := int32(expect)
			if expect < 0 {
				if exp, err = st.Current(ctx); err != nil {
					return err
				}
			}
			v, err := st.Push(ctx, cfg, exp)
			if err != nil {
				return reportConflict(stderr, err)
			}
			fmt.Fprintf(stdout, "pushed version %d (was %d); edges follow within a second: seckill config show\n", v, exp)
			return nil
		},
	}
	cmd.Flags().IntVar(&expect, "expect-version", -1, "the version you expect in force (0: none yet); default: the one read just before the write")
	cmd.Flags().StringVar(&by, "by", "", "who pushes (default user@host)")
	return cmd
}

func configShowCmd(o *configOpts, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:     "show",
		Short:   "Show the live configuration and which edge runs which version",
		Example: `  seckill config show --zk zk1:2181`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			st, done, err := o.store(c.Context())
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(c.Context(), o.Timeout)
			defer cancel()
			rec, cfg, err := st.Get(ctx)
			switch {
			case errors.Is(err, zk.ErrNoNode):
				fmt.Fprintf(stdout, "no configuration pushed under %s: the edges use their static configuration\n", st.LimitsPath())
			case err != nil && rec.Version == 0:
				return err
			case err != nil:
				fmt.Fprintf(stdout, "version %d is INVALID (the edges keep their previous version):\n%v\n", rec.Version, err)
			default:
				printConfigRecord(stdout, rec, cfg)
			}
			edges, err := st.Edges(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "\nedges (%d):\n", len(edges))
			if len(edges) > 0 {
				tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "  EDGE\tVERSION\tSOURCE\tLAST RELOAD\tLAST ERROR")
				for _, e := range edges {
					last := "-"
					if !e.LastReload.IsZero() {
						last = e.LastReload.Local().Format(time.RFC3339)
					}
					mark := ""
					if e.Version != rec.Version {
						mark = " (behind)"
					}
					fmt.Fprintf(tw, "  %s\t%d%s\t%s\t%s\t%s\n", e.Edge, e.Version, mark, e.Source, last, e.LastError)
				}
				_ = tw.Flush()
			}
			return nil
		},
	}
}

func printConfigRecord(w io.Writer, rec dynconfig.Record, cfg dynconfig.Config) {
	fmt.Fprintf(w, "version %d, pushed at %s by %s", rec.Version, rec.PushedAt.Local().Format(time.RFC3339), rec.PushedBy)
	if rec.RollbackOf != 0 {
		fmt.Fprintf(w, " (rollback to version %d)", rec.RollbackOf)
	}
	if rec.Signature == "" {
		fmt.Fprint(w, ", UNSIGNED (the edges refuse it)")
	} else {
		fmt.Fprintf(w, ", signed by key %s", rec.KeyID)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "difficulty %d (+%d under load), max_in_flight %d, breaker %d failures / open %v / %d probes\n",
		cfg.Difficulty, cfg.DifficultyUnderLoad, cfg.MaxInFlight, cfg.Breaker.ConsecutiveFailures, cfg.Breaker.OpenFor, cfg.Breaker.HalfOpenProbes)
	fmt.Fprintf(w, "trusted proxies: %v\n\n", cfg.TrustedProxies)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  RULE\tCLASS\tKEY\tRATE/S\tBURST\tMODE")
	for _, r := range cfg.Rules {
		mode := "enforced"
		if r.Shadow {
			mode = "shadow"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%g\t%d\t%s\n", r.Name, r.Class, r.Key, r.Rate, r.Burst, mode)
	}
	_ = tw.Flush()
}

func configHistoryCmd(o *configOpts, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:     "history",
		Short:   "List the pushes kept (the last 20)",
		Example: `  seckill config history`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			st, done, err := o.store(c.Context())
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(c.Context(), o.Timeout)
			defer cancel()
			recs, err := st.History(ctx)
			if err != nil {
				return err
			}
			cur, _ := st.Current(ctx)
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tPUSHED AT\tBY\tNOTE")
			for _, r := range recs {
				note := ""
				if r.RollbackOf != 0 {
					note = fmt.Sprintf("rollback to %d", r.RollbackOf)
				}
				if r.Version == cur {
					note += " (in force)"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", r.Version, r.PushedAt.Local().Format(time.RFC3339), r.PushedBy, note)
			}
			return tw.Flush()
		},
	}
}

func configRollbackCmd(o *configOpts, stdout, stderr io.Writer) *cobra.Command {
	expect := -1
	cmd := &cobra.Command{
		Use:   "rollback VERSION",
		Short: "Push an old version (from the history) again, as a new version",
		Example: `  seckill config rollback 6
  seckill config rollback 6 --expect-version 9`,
		Args: exactArgs("VERSION"),
		RunE: func(c *cobra.Command, args []string) error {
			v, err := strconv.ParseInt(args[0], 10, 32)
			if err != nil || v < 1 {
				return fmt.Errorf("VERSION %q must be a positive number", args[0])
			}
			st, done, err := o.store(c.Context())
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(c.Context(), o.Timeout)
			defer cancel()
			exp := int32(expect)
			if expect < 0 {
				if exp, err = st.Current(ctx); err != nil {
					return err
				}
			}
			nv, err := st.Rollback(ctx, int32(v), exp)
			if err != nil {
				return reportConflict(stderr, err)
			}
			fmt.Fprintf(stdout, "pushed version %d: the configuration of version %d\n", nv, v)
			return nil
		},
	}
	cmd.Flags().IntVar(&expect, "expect-version", -1, "the version you expect in force; default: the one read just before the write")
	return cmd
}

func configInitCmd(o *configOpts, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Lay out the ZooKeeper tree with its ACLs (every push does it too)",
		Long: `init creates ROOT, ROOT/config, ROOT/config/history, ROOT/backends and
ROOT/edges when missing and sets their ACLs: the pusher (--zk-auth) may do
everything, the backends (--zk-backend-auth) may create and delete
registrations, the edges (--zk-edge-auth) their status nodes, anyone may
read. It also sets the ACL of the limits and history nodes, and deletes
the registrations and status nodes anyone may write (from an open tree, or
planted): real backends and edges register again at once. Run it before
starting backends and edges with credentials; it is idempotent.`,
		Example: `  SECKILL_ZK_PUSHER=pusher:$(cat pusher.pw) SECKILL_ZK_BACKEND=backend:$(cat backend.pw) \
  SECKILL_ZK_EDGE=edge:$(cat edge.pw) seckill config init`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.ZKAuth == "" {
				return errors.New("init needs the pusher's credential: --zk-auth or $SECKILL_ZK_PUSHER (user:password)")
			}
			st, done, err := o.store(c.Context())
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(c.Context(), o.Timeout)
			defer cancel()
			rep, err := st.Init(ctx)
			for _, p := range rep.Created {
				fmt.Fprintf(stdout, "created %s\n", p)
			}
			for _, p := range rep.Secured {
				fmt.Fprintf(stdout, "set the ACL of %s\n", p)
			}
			for _, p := range rep.Removed {
				fmt.Fprintf(stdout, "deleted world-writable %s\n", p)
			}
			for _, p := range rep.Skipped {
				fmt.Fprintf(stdout, "left %s alone: no credential for its role (--zk-backend-auth / --zk-edge-auth)\n", p)
			}
			return err
		},
	}
}

func configKeygenCmd(stdout io.Writer) *cobra.Command {
	out := "seckill-limits"
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Make an Ed25519 key pair for signing configuration versions",
		Long: `keygen writes OUT.key (the private key, mode 0600: only the pusher keeps
it, passed as --signing-key) and OUT.pub (the public key: every edge gets
it in --config-public-keys). It never overwrites a file.

Rotation: make a new pair; add the new public key to every edge's
--config-public-keys (a comma list: old,new) and restart them; push with
the new private key; then remove the old public key from the edges.`,
		Example: `  seckill config keygen --out /etc/seckill/limits
  seckill edge --zk zk1:2181 --config-public-keys "$(cat /etc/seckill/limits.pub)"`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			pub, priv, err := dynconfig.GenerateKey()
			if err != nil {
				return err
			}
			if err := writeNew(out+".key", priv+"\n", 0o600); err != nil {
				return err
			}
			if err := writeNew(out+".pub", pub+"\n", 0o644); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "private key: %s.key (the pusher's --signing-key)\npublic key:  %s.pub (the edges' --config-public-keys): %s\n", out, out, pub)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", out, "path prefix of the two files (OUT.key, OUT.pub)")
	return cmd
}

// writeNew writes a file that must not exist yet.
func writeNew(path, content string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("writing the key: %w", err)
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
