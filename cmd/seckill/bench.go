package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"seckill/bench"
	"seckill/bench/storebench"
)

func benchCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c          common
		cfg        storebench.Config
		pgConns    []int
		jsonFile   string
		cpuProfile string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the purchase pipeline and the ceilings of Redis, RabbitMQ and PostgreSQL",
		Long: `Measure the purchase pipeline end to end, and the raw ceilings of the servers it
runs on, in the same run, so each pipeline figure reads as a fraction of what
the servers can do at all.

  pipeline  sells --units units to as many users by calling the backend's
            Reserve directly from --concurrency goroutines, with --relays
            relays and --workers workers in process, waits until PostgreSQL
            holds every order, and checks the exact counts (FAIL, exit 1,
            otherwise).
  ceilings  Redis check-and-DECR script (50 goroutines), RabbitMQ persistent
            confirmed publishes (512 outstanding) to a quorum and a classic
            queue, PostgreSQL batched unnest inserts of 500 rows.
  all       ceilings, then pipeline, then a Markdown table of the figures and
            their ratios to the ceilings.

Every run uses a fresh PostgreSQL database created next to --pg-url (an admin
URL; dropped at the end unless --keep), its own Redis key prefix and its own
RabbitMQ queues, and removes them at the end.`,
		Example: `  seckill bench pipeline --units 100000 --concurrency 128
  seckill bench ceilings --duration 3s
  seckill bench all --units 100000 --json bench.json --cpuprofile cpu.pprof`,
	}
	setup := func(cmd *cobra.Command) {
		cfg.RedisURL, cfg.AMQPURL, cfg.PGURL = c.RedisURL, c.AMQPURL, c.PGURL
		cfg.PGConns = pgConns
		cfg.Logger = newLogger(stderr, c.LogLevel).With("component", "bench")
		cfg.Progress = stderr
	}
	pf := cmd.PersistentFlags()
	c.register(pf, getenv, "redis", "amqp", "pg")
	// Each run makes its own prefix and queue.
	_ = pf.MarkHidden("queue")
	_ = pf.MarkHidden("redis-prefix")
	pf.Lookup("pg-url").Usage = "PostgreSQL URL used as admin connection: each run creates (and drops) a database of its own next to it ($SECKILL_PG_URL)"
	if getenv("SECKILL_LOG_LEVEL") == "" {
		f := pf.Lookup("log-level")
		_ = f.Value.Set("warn")
		f.DefValue = "warn"
	}
	pf.BoolVar(&cfg.Keep, "keep", false, "keep the PostgreSQL database of the run")
	pf.StringVar(&jsonFile, "json", "", "also write the figures as JSON to this file")

	pipelineFlags := func(fs *pflag.FlagSet) {
		fs.IntVar(&cfg.Units, "units", 100000, "units of the item, sold one per user")
		fs.IntVar(&cfg.Concurrency, "concurrency", 128, "goroutines calling Reserve")
		fs.IntVar(&cfg.Relays, "relays", 1, "outbox relays running in process")
		fs.IntVar(&cfg.Workers, "workers", 1, "consumers+workers running in process")
		fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "longest wait for PostgreSQL to hold every order")
		fs.IntVar(&cfg.RelayBatch, "relay-batch", 0, "relay claim batch (0: the relay's default)")
		fs.IntVar(&cfg.RelayMaxInFlight, "relay-inflight", 0, "relay unconfirmed publishes at most (0: the relay's default)")
		fs.IntVar(&cfg.Prefetch, "prefetch", 0, "consumer prefetch (0: the consumer's default)")
		fs.IntVar(&cfg.WorkerBatch, "batch", 0, "worker insert batch (0: the consumer's default)")
		fs.DurationVar(&cfg.WorkerFlush, "flush", 0, "worker longest wait to fill a batch (0: the consumer's default)")
		fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the pipeline run (reservations and drain) to this file")
	}
	ceilingFlags := func(fs *pflag.FlagSet) {
		fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "how long each ceiling runs")
		fs.IntVar(&cfg.Count, "count", 0, "run each ceiling for this many operations instead of --duration")
		fs.IntVar(&cfg.RedisGoroutines, "redis-goroutines", 50, "goroutines running the Redis script")
		fs.IntVar(&cfg.AMQPWindow, "amqp-window", 512, "RabbitMQ publisher confirms outstanding")
		fs.IntVar(&cfg.PGBatch, "pg-batch", 500, "rows per PostgreSQL insert")
		fs.IntSliceVar(&pgConns, "pg-conns", []int{1, 4}, "PostgreSQL connections inserting in parallel, one ceiling each")
	}

	runPipeline := func(cmd *cobra.Command, rep *storebench.Report) error {
		var prof io.Writer
		if cpuProfile != "" {
			f, err := os.Create(cpuProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			prof = f
		}
		p, err := storebench.Pipeline(cmd.Context(), cfg, prof)
		if err != nil {
			return err
		}
		rep.Pipeline = p
		storebench.PrintPipeline(stdout, p)
		return nil
	}
	finish := func(rep *storebench.Report) error {
		if jsonFile != "" {
			b, err := json.MarshalIndent(rep, "", "  ")
			if err != nil {
				return err
			}
			if err := os.WriteFile(jsonFile, append(b, '\n'), 0o644); err != nil {
				return err
			}
		}
		if rep.Pipeline != nil && !rep.Pipeline.OK() {
			return exitCode(1)
		}
		return nil
	}
	newReport := func(cmd *cobra.Command) *storebench.Report {
		return &storebench.Report{Command: commandLine(cmd), Started: time.Now(), Target: storebench.DefaultTarget}
	}

	pipeline := &cobra.Command{
		Use: "pipeline",
		Example: `  seckill bench pipeline --units 100000 --concurrency 128
  seckill bench pipeline --units 20000 --relays 2 --workers 2 --cpuprofile cpu.pprof`,
		Short: "Sell --units units through Reserve, relay, RabbitMQ and worker; report rates and check counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			setup(cmd)
			rep := newReport(cmd)
			fmt.Fprintf(stdout, "command: %s\n", rep.Command)
			if err := runPipeline(cmd, rep); err != nil {
				return err
			}
			return finish(rep)
		},
	}
	pipelineFlags(pipeline.Flags())

	ceilings := &cobra.Command{
		Use: "ceilings",
		Example: `  seckill bench ceilings --duration 3s
  seckill bench ceilings --count 100000 --pg-conns 1,4,8`,
		Short: "Measure the raw ceilings of Redis, RabbitMQ and PostgreSQL",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			setup(cmd)
			rep := newReport(cmd)
			fmt.Fprintf(stdout, "command: %s\n", rep.Command)
			cl, err := storebench.RunCeilings(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			rep.Ceilings = cl
			bench.PrintCeilings(stdout, cl)
			return finish(rep)
		},
	}
	ceilingFlags(ceilings.Flags())

	all := &cobra.Command{
		Use: "all",
		Example: `  seckill bench all --units 100000 --json bench.json
  source .seckill/env && seckill bench all --units 20000   # against make up's servers`,
		Short: "Ceilings, then pipeline, then a Markdown table of figures and ratios",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			setup(cmd)
			rep := newReport(cmd)
			fmt.Fprintf(stdout, "command: %s\n", rep.Command)
			cl, err := storebench.RunCeilings(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			rep.Ceilings = cl
			bench.PrintCeilings(stdout, cl)
			if err := runPipeline(cmd, rep); err != nil {
				return err
			}
			fmt.Fprintln(stdout)
			storebench.PrintMarkdown(stdout, rep)
			return finish(rep)
		},
	}
	pipelineFlags(all.Flags())
	ceilingFlags(all.Flags())

	cmd.AddCommand(append([]*cobra.Command{pipeline, ceilings, all}, benchEdgeCmds(getenv, stdout, stderr)...)...)
	return cmd
}

// commandLine is the command as run: its path and every flag set on the
// command line (URLs with their passwords masked).
func commandLine(cmd *cobra.Command) string {
	parts := []string{cmd.CommandPath()}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		parts = append(parts, "--"+f.Name+"="+shellQuote(mask(f.Name, f.Value.String())))
	})
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`!*?&;|<>()[]{}#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
