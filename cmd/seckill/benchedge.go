package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"seckill/bench"
	"seckill/httpapi"
	"seckill/internal/app"
)

// benchEdgeCmds are the subcommands of `seckill bench` that measure the
// edge: hello (the baseline handler), edge (wrk on each protective path)
// and chain (latency the protection chain adds to a purchase).
func benchEdgeCmds(getenv func(string) string, stdout, stderr io.Writer) []*cobra.Command {
	return []*cobra.Command{benchHelloCmd(stderr), benchEdgeCmd(getenv, stdout, stderr), benchChainCmd(getenv, stdout, stderr),
		benchLoginFloodCmd(getenv, stdout, stderr)}
}

func benchHelloCmd(stderr io.Writer) *cobra.Command {
	var listen, addrFile string
	cmd := &cobra.Command{
		Use:   "hello",
		Short: "Serve a bare echo handler answering \"hello\" on GET / (the baseline of bench edge)",
		Long: `Serve a bare echo v4 handler that answers "hello" on GET /, with the same
http.Server timeouts as the edge's public listener and nothing else, until
SIGTERM or Ctrl-C. It is the baseline that bench edge compares the edge to,
measured in the same run on the same machine.`,
		Example: `  seckill bench hello --listen 127.0.0.1:0 --addr-file /tmp/hello.addr`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listening on %s: %w", listen, err)
			}
			if err := app.WriteAddrFile(addrFile, ln.Addr().String()); err != nil {
				ln.Close()
				return err
			}
			fmt.Fprintf(stderr, "bench hello: listening on http://%s/\n", ln.Addr())
			srv := httpapi.NewServer(bench.HelloHandler())
			srv.ReadTimeout = 30 * time.Second
			errs := make(chan error, 1)
			go func() { errs <- srv.Serve(ln) }()
			select {
			case err := <-errs:
				return err
			case <-cmd.Context().Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&listen, "listen", "127.0.0.1:0", "address to listen on")
	fs.StringVar(&addrFile, "addr-file", "", "write the address actually listened on to this file (for port 0)")
	return cmd
}

func benchEdgeCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var cfg bench.EdgeConfig
	cmd := benchCommand("edge", "wrk on the edge's rejection paths and cached reads, against a bare echo handler in the same run",
		`Measure the edge's cheap paths with wrk (--latency), each as a ratio to the
bare echo handler of 'seckill bench hello' measured in the same run.

Setup, through the admin API: a live item with 5,000,000 units and a sold-out
item of 1 unit (bought through the public flow), a repeat buyer (bought one
unit of the live item), --users sessions for the buy scenarios, and a user
hammered until its buy bucket refuses. Then, one wrk run each:

  hello                    GET / on the bare handler (and again at the end)
  hello, Lua request()     the same, with the rotating-session wrk script
  cached catalogue read    GET /api/items/{live}                      200
  unknown item             GET /api/items/{unknown}                   404
  unknown item, buy        POST /api/items/{unknown}/buy/{path}       404
  sold out                 POST /api/items/{sold}/buy/{path}          410
  rate limited             POST /api/items/{live}/buy/{path}, hammered user  429
  repeat buyer             POST /api/items/{live}/challenge            409

A probe checks each scenario answers the expected status before its run,
and the edge's /metrics tell the status of every answer during it. The
buy scenarios rotate through --users sessions (a Lua request() picking
preformatted requests), so the per-user buy bucket of the limits does not
refuse them; run the edge with generous per-ip and global limits
(configs/bench-limits.yaml), or loopback wrk measures 429s instead.`,
		`  seckill bench edge --public http://127.0.0.1:8080 --admin http://127.0.0.1:8081 \
    --admin-token "$SECKILL_ADMIN_TOKEN" --hello http://127.0.0.1:18000 --json edge.json`,
		func(cmd *cobra.Command) error {
			if err := needAll("--public, --admin, --hello and --admin-token are required", cfg.Public, cfg.Admin, cfg.Hello, cfg.AdminToken); err != nil {
				return err
			}
			cfg.Progress = stderr
			r, err := bench.RunEdge(cmd.Context(), cfg)
			return report(cmd, stdout, r, err, func(r *bench.EdgeResult) { r.Command = commandLine(cmd) }, bench.PrintEdge)
		})
	fs := cmd.Flags()
	edgeFlags(fs, getenv, &cfg.Public, &cfg.Admin, &cfg.AdminToken)
	fs.StringVar(&cfg.Hello, "hello", "", "base URL of the bare handler of seckill bench hello (the baseline)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "wrk -d of each scenario")
	fs.IntVar(&cfg.Connections, "connections", 64, "wrk -c")
	fs.IntVar(&cfg.Threads, "threads", 2, "wrk -t")
	fs.IntVar(&cfg.Users, "users", 10000, "sessions the buy scenarios rotate through")
	fs.Int64Var(&cfg.UnknownID, "unknown-id", 999999, "an item id that does not exist")
	fs.DurationVar(&cfg.Pause, "pause", 2*time.Second, "pause between two wrk runs")
	fs.StringVar(&cfg.Wrk, "wrk", "wrk", "wrk binary")
	fs.StringVar(&cfg.Challenge, "challenge", "none", "challenge of the items created (none, pow); none falls back to pow if the edge refuses it")
	return cmd
}

func benchChainCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var cfg bench.ChainConfig
	cmd := benchCommand("chain", "Latency the edge's full protection chain adds to a purchase, at the median",
		`Time purchases through the edge against reservations sent straight to the
backend, one request at a time over one keep-alive client.

For -n users, challenge -> solve -> path are prepared untimed (in batches of
--batch, as a path lives 60 s), then POST /api/items/{id}/buy/{path} is
timed through the edge; for -n other users (ids from POST /v1/admin/users)
POST /v1/reservations {item_id, user_id, request_id} is timed on the
backend. The two alternate. Reports medians, p90 and p99 of both and the
difference of the medians: what the chain adds.`,
		`  seckill bench chain --public http://127.0.0.1:8080 --admin http://127.0.0.1:8081 \
    --admin-token "$SECKILL_ADMIN_TOKEN" --backend http://127.0.0.1:8090 -n 2000`,
		func(cmd *cobra.Command) error {
			if err := needAll("--public, --admin, --backend and --admin-token are required", cfg.Public, cfg.Admin, cfg.Backend, cfg.AdminToken); err != nil {
				return err
			}
			cfg.Progress = stderr
			r, err := bench.RunChain(cmd.Context(), cfg)
			return report(cmd, stdout, r, err, func(r *bench.ChainResult) { r.Command = commandLine(cmd) }, bench.PrintChain)
		})
	fs := cmd.Flags()
	edgeFlags(fs, getenv, &cfg.Public, &cfg.Admin, &cfg.AdminToken)
	envFlag(fs, getenv, &cfg.Backend, "backend", "SECKILL_BACKEND_URL", "", "base URL of the backend API")
	envFlag(fs, getenv, &cfg.BackendToken, "backend-token", "SECKILL_BACKEND_TOKEN", "", "Bearer token of the backend's /v1/admin/*")
	fs.IntVarP(&cfg.N, "n", "n", 2000, "timed purchases on each side")
	fs.IntVar(&cfg.Batch, "batch", 250, "paths prepared before each run of timed buys")
	fs.IntVar(&cfg.Warmup, "warmup", 100, "untimed purchases on each side first (negative: none)")
	fs.StringVar(&cfg.Challenge, "challenge", "none", "challenge of the item created (none, pow); none falls back to pow if the edge refuses it")
	return cmd
}

func benchLoginFloodCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var cfg bench.LoginFloodConfig
	cmd := benchCommand("loginflood", "Purchase latency during a login flood against the same purchases without it (issue 13 M5)",
		`Buy at a fixed rate through the edge (challenge and path untimed, the buy
timed) for --duration/2 without logins, for --duration with --logins-per-sec
logins (POST /api/login, right passwords, cycling through --accounts
accounts registered on the backend: each login costs the backend a
bcrypt), then --duration/2 without logins again. Reports every answer, the
load average around each run, and the buys' p99 with the flood against the
p99 of both quiet runs together (target: within 2x, and no purchase 503).
Run it against an edge with generous login limits (configs/bench-limits.yaml);
scripts/bench-loginflood.sh starts everything in separate processes.`,
		`  seckill bench loginflood --public http://127.0.0.1:8080 --admin http://127.0.0.1:8081 \
    --admin-token "$SECKILL_ADMIN_TOKEN" --backend http://127.0.0.1:8090 --duration 20s`,
		func(cmd *cobra.Command) error {
			if err := needAll("--public, --admin, --backend and --admin-token are required", cfg.Public, cfg.Admin, cfg.Backend, cfg.AdminToken); err != nil {
				return err
			}
			cfg.Progress = stderr
			r, err := bench.RunLoginFlood(cmd.Context(), cfg)
			return report(cmd, stdout, r, err, func(r *bench.LoginFloodResult) { r.Command = commandLine(cmd) }, bench.PrintLoginFlood)
		})
	fs := cmd.Flags()
	edgeFlags(fs, getenv, &cfg.Public, &cfg.Admin, &cfg.AdminToken)
	envFlag(fs, getenv, &cfg.Backend, "backend", "SECKILL_BACKEND_URL", "", "base URL of the backend API")
	envFlag(fs, getenv, &cfg.BackendToken, "backend-token", "SECKILL_BACKEND_TOKEN", "", "Bearer token of the backend API")
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "length of the flood (each quiet run lasts half of it)")
	fs.IntVar(&cfg.BuysPerSec, "buys-per-sec", 50, "purchases started per second in every run")
	fs.IntVar(&cfg.LoginsPerSec, "logins-per-sec", 200, "logins per second during the flood")
	fs.IntVar(&cfg.Accounts, "accounts", 20, "accounts the logins cycle through")
	fs.BoolVar(&cfg.Control, "control", false, "then the same flood of logins refused before any hash, and a quiet run: the flood's cost without bcrypt")
	return cmd
}

// report finishes a bench subcommand: on success it stamps the result
// (setCommand), prints it after a blank line and writes the --json file.
func report[R any](cmd *cobra.Command, stdout io.Writer, r R, err error, setCommand func(R), print func(io.Writer, R)) error {
	if err != nil {
		return err
	}
	setCommand(r)
	fmt.Fprintln(stdout)
	print(stdout, r)
	return writeJSON(cmd, r)
}

// benchCommand is a bench subcommand without arguments running run.
func benchCommand(use, short, long, example string, run func(cmd *cobra.Command) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Long: long, Example: example, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd) }}
}

// needAll is errors.New(msg) when any of vals is empty.
func needAll(msg string, vals ...string) error {
	for _, v := range vals {
		if v == "" {
			return errors.New(msg)
		}
	}
	return nil
}

// edgeFlags adds the flags naming the edge under test: --public, --admin
// and --admin-token ($SECKILL_ADMIN_TOKEN).
func edgeFlags(fs *pflag.FlagSet, getenv func(string) string, public, admin, adminToken *string) {
	fs.StringVar(public, "public", "", "base URL of the edge's public API")
	fs.StringVar(admin, "admin", "", "base URL of the edge's admin API")
	envFlag(fs, getenv, adminToken, "admin-token", "SECKILL_ADMIN_TOKEN", "", "Bearer token of the admin API")
}

// writeJSON writes v to the file of the inherited --json flag, if set.
func writeJSON(cmd *cobra.Command, v any) error {
	f := cmd.Flags().Lookup("json")
	if f == nil || f.Value.String() == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(f.Value.String(), append(b, '\n'), 0o644)
}
