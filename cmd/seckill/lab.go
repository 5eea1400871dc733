package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"seckill/bench"
	"seckill/bench/storebench"
	"seckill/lab"
)

func labCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Play a flash sale with honest users and bots against a running edge, and report",
		Long: `The load and bot lab. "lab run" creates a sale through the admin API, gets
sessions for its honest users and bot accounts, plays the scenario (honest
users doing what the storefront does, bots of several kinds), checks the
invariants through GET /admin/items/{id}/stats (and --reconcile-cmd), and
writes a report (terminal table, report.json, report.html).

The edge must believe the lab's X-Forwarded-For to tell its users apart:
run it with --trusted-proxies 127.0.0.1/32 (seckill edge or seckill dev).
The lab plays pow and none items; for captcha items its honest users give up.`,
		Example: `  seckill dev --no-demo --trusted-proxies 127.0.0.1/32 --admin-token s3cret &
  seckill lab run configs/lab/small.yaml --admin-token s3cret --report /tmp/lab-small
  seckill lab run configs/lab/path-sharing.yaml --admin-token s3cret --defence-off path_binding --report /tmp/ps-off
  seckill lab compare /tmp/ps-on/report.json /tmp/ps-off/report.json`,
	}
	cmd.AddCommand(labRunCmd(getenv, stdout, stderr), labCompareCmd(stdout), labBaselineCmd(getenv, stdout, stderr), labSweepCmd(getenv, stdout, stderr))
	return cmd
}

func labRunCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		cfg        lab.Config
		reportDir  string
		defenceOff []string
		watchPIDs  []string
		quiet      bool
		seeds      int
	)
	cmd := &cobra.Command{
		Use:   "run SCENARIO.yaml",
		Short: "Play one scenario against a running edge",
		Long: `Play one scenario (configs/lab/*.yaml) against a running edge, one sale per
seed (--seeds N, or the scenario's seeds list), and print the verdict,
pooled over the seeds (docs/LAB.md, "The verdict"):

  FAIL         an invariant broke: accepted (202s seen) != reserved != orders,
               stock_left != units - orders, oversold, an account won twice,
               or the --reconcile-cmd exited non-zero (exit status 1)
  BOTS_WON     every invariant held, but a bot kind won significantly more
               than its share of the accounts (one-sided binomial test,
               alpha 0.01); the headline names each one (exit status 2)
  ATTACK_WON   a defence was switched off: "attack expected to win", and it
               did (exit status 0)
  ATTACK_LOST  a defence was switched off, and no bot kind beat its share
  PASS         every invariant held and no bot kind beat its share

The report (report.html with charts, report.json for "lab compare") goes to
--report, by default a new folder lab-reports/<scenario>-<UTC time> under
the current directory; the last line printed names it.

Before anything else the lab checks that the edge believes its
X-Forwarded-For (two fresh addresses must get two fresh per-IP buckets) and
stops, naming the fix, when it does not: "make up LAB=1", or
--trusted-proxies 127.0.0.1/32 on seckill edge and seckill dev.`,
		Example: `  seckill lab run configs/lab/small.yaml --edge http://127.0.0.1:8080 --admin http://127.0.0.1:8081 --admin-token s3cret
  seckill lab run configs/lab/flash-100k.yaml --admin-token s3cret --report out/flash --reconcile-cmd 'seckill reconcile --items {id}'
  make up LAB=1 && source .seckill/env && seckill lab run configs/lab/small.yaml`,
		Args: exactArgs("SCENARIO.yaml"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := lab.Load(args[0])
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if err := sc.SwitchOff(defenceOff...); err != nil {
				return err
			}
			if seeds > 0 {
				if err := sc.SetSeeds(seeds); err != nil {
					return err
				}
			}
			if cfg.AdminToken == "" {
				return fmt.Errorf("--admin-token (or SECKILL_ADMIN_TOKEN) is required")
			}
			if cfg.WatchPIDs, err = lab.ParseWatch(watchPIDs); err != nil {
				return err
			}
			if !quiet {
				cfg.Log = stderr
				if f, ok := stderr.(*os.File); ok {
					if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
						cfg.Progress = stderr
					}
				}
			}
			// Captchas are read by the lab's OCR (tesseract) when it is
			// installed; a scenario with ocr_bot needs it.
			var ocrCounts lab.OCRCounts
			if o, err := lab.NewOCR(); err == nil {
				cfg.SolveCaptcha = o.Solver(&ocrCounts)
			} else if sc.HasBot(lab.OCRBot) {
				return fmt.Errorf("%s has ocr_bot: %w", args[0], err)
			}
			rep, err := lab.Run(cmd.Context(), sc, cfg)
			if err != nil {
				return err
			}
			rep.WriteTable(stdout)
			if ocrCounts.Read.Load() > 0 {
				fmt.Fprintf(stdout, "ocr: %s\n", &ocrCounts)
			}
			if reportDir == "" {
				reportDir = defaultReportDir(args[0], time.Now())
			}
			if reportDir != "none" {
				if err := rep.WriteFiles(reportDir); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "report: %s (report.html, report.json)\n", reportDir)
			}
			switch rep.Verdict {
			case lab.VerdictFail:
				return exitCode(1)
			case lab.VerdictBotsWon:
				return exitCode(2)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&seeds, "seeds", 0, "play seeds 1..N, one sale each, pooled in the verdict (default: the scenario's seeds list, or one seed)")
	envFlag(fs, getenv, &cfg.EdgeURL, "edge", "SECKILL_LAB_EDGE", "http://127.0.0.1:8080", "URL of the edge's public API")
	envFlag(fs, getenv, &cfg.AdminURL, "admin", "SECKILL_LAB_ADMIN", "http://127.0.0.1:8081", "URL of the edge's admin API")
	envFlag(fs, getenv, &cfg.AdminToken, "admin-token", "SECKILL_ADMIN_TOKEN", "", "admin API token")
	envFlag(fs, getenv, &reportDir, "report", "SECKILL_LAB_REPORT", "", "write report.json and report.html into this folder (default lab-reports/<scenario>-<UTC time>; none: no files)")
	envFlag(fs, getenv, &cfg.ReconcileCmd, "reconcile-cmd", "SECKILL_LAB_RECONCILE_CMD", "", "run this through sh -c at the end ({id}: the item id); its exit status is part of the verdict")
	fs.StringSliceVar(&defenceOff, "defence-off", nil, "switch this defence off for the sale, overriding the scenario (repeatable: challenge, path_binding, single_use, bloom, buckets, breaker, shedding)")
	fs.BoolVar(&quiet, "quiet", false, "no setup messages and no progress line on stderr")
	fs.StringSliceVar(&watchPIDs, "watch-pid", nil, "name=pid: sample this process's CPU (Linux /proc) with the stock; a waiting-room report gives its cores (repeatable, e.g. edge=1234)")
	return cmd
}

// defaultReportDir is lab-reports/<scenario name>-<UTC time>, e.g.
// lab-reports/small-20261130T161502Z.
func defaultReportDir(scenario string, now time.Time) string {
	name := strings.TrimSuffix(filepath.Base(scenario), filepath.Ext(scenario))
	return filepath.Join("lab-reports", name+"-"+now.UTC().Format("20060102T150405Z"))
}

func labCompareCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "compare A B [C...]",
		Short: "Print lab reports side by side (verdict, shares of units, refusals, latency)",
		Long: `Print two or more lab reports side by side, one column each: the verdict and
the bot kinds that beat their share, each actor kind's share of the units
against its share of the accounts (with the p-value), the honest accounts
refused, throughput and latency. A, B, C...: report folders (as written by
"lab run --report") or their report.json files.`,
		Example: `  seckill lab compare /tmp/ps-on /tmp/ps-off
  seckill lab compare lab-reports/scalpers-race lab-reports/scalpers-race-age lab-reports/scalpers-queue`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return exactArgs("A", "B")(cmd, args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var reps []*lab.Report
			for _, a := range args {
				f := a
				if st, err := os.Stat(a); err == nil && st.IsDir() {
					f = filepath.Join(a, "report.json")
				}
				r, err := lab.ReadReport(f)
				if err != nil {
					return err
				}
				reps = append(reps, r)
			}
			lab.Compare(stdout, reps, args)
			return nil
		},
	}
}

func labBaselineCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		cfg                      lab.BaselineConfig
		reportFile               string
		redisURL, amqpURL, pgURL string
	)
	cmd := &cobra.Command{
		Use:   "baseline",
		Short: "Measure what the machine and servers can do at all, and a lab report as a share of it",
		Long: `Measure a bare echo handler served in process and loaded by a Go loop (the
most an HTTP service can do here), and, with --redis-url, --amqp-url and
--pg-url, the raw ceilings of package bench/storebench (Redis check-and-DECR script,
RabbitMQ confirmed publishes, PostgreSQL batched inserts). With --report,
each figure of that lab run is printed as a ratio of its ceiling.`,
		Example: `  seckill lab baseline --report /tmp/lab-small/report.json
  seckill lab baseline --report out/flash/report.json --redis-url redis://127.0.0.1:6379/0 --amqp-url amqp://guest:guest@127.0.0.1:5672/ --pg-url 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if reportFile != "" {
				rep, err := lab.ReadReport(reportFile)
				if err != nil {
					return err
				}
				cfg.Report = rep
			}
			cfg.Progress = stderr
			if redisURL != "" && amqpURL != "" && pgURL != "" {
				cfg.Ceilings = func(ctx context.Context, d time.Duration, progress io.Writer) (*bench.Ceilings, error) {
					return storebench.RunCeilings(ctx, storebench.Config{RedisURL: redisURL, AMQPURL: amqpURL, PGURL: pgURL, Duration: d, Progress: progress})
				}
			}
			b, err := lab.RunBaseline(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			b.Write(stdout)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "length of each measure")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "goroutines of the echo load loop")
	fs.StringVar(&reportFile, "report", "", "a lab report.json whose figures are shown as ratios")
	envFlag(fs, getenv, &redisURL, "redis-url", "SECKILL_REDIS_URL", "", "Redis for the script ceiling")
	envFlag(fs, getenv, &amqpURL, "amqp-url", "SECKILL_AMQP_URL", "", "RabbitMQ for the publish ceiling")
	envFlag(fs, getenv, &pgURL, "pg-url", "SECKILL_PG_URL", "", "PostgreSQL admin URL for the insert ceiling (a database is created and dropped)")
	return cmd
}

func labSweepCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		cfg       lab.SweepConfig
		rates     string
		shedding  string
		reportDir string
		noXFF     bool
	)
	cmd := &cobra.Command{
		Use:   "sweep",
		Short: "Offer load from low to past saturation, with shedding on and off; goodput and p99 vs offered load",
		Long: `Offer honest users at each --rates value for --step, each step on a sale of its
own with as many units as users, with the edge's load shedding on and then
switched off (PUT /admin/items/{id}/defences), and chart goodput (purchases
accepted per second) and honest p99 latency against the offered load
(sweep.json, sweep.svg, sweep.html in --report).`,
		Example: `  seckill lab sweep --admin-token s3cret --rates 50,100,200,400,800 --step 5s --report /tmp/sweep`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range strings.Split(rates, ",") {
				f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
				if err != nil || f <= 0 {
					return fmt.Errorf("--rates: bad rate %q", s)
				}
				cfg.Rates = append(cfg.Rates, f)
			}
			switch shedding {
			case "both":
				cfg.Shedding = []bool{true, false}
			case "on":
				cfg.Shedding = []bool{true}
			case "off":
				cfg.Shedding = []bool{false}
			default:
				return fmt.Errorf("--shedding: want both, on or off")
			}
			if cfg.Lab.AdminToken == "" {
				return fmt.Errorf("--admin-token (or SECKILL_ADMIN_TOKEN) is required")
			}
			cfg.XFF = !noXFF
			cfg.Progress = stderr
			res, err := lab.RunSweep(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			res.Write(stdout)
			if reportDir != "" {
				if err := res.WriteFiles(reportDir); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "sweep: %s/sweep.svg, %s/sweep.html, %s/sweep.json\n", reportDir, reportDir, reportDir)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	envFlag(fs, getenv, &cfg.Lab.EdgeURL, "edge", "SECKILL_LAB_EDGE", "http://127.0.0.1:8080", "URL of the edge's public API")
	envFlag(fs, getenv, &cfg.Lab.AdminURL, "admin", "SECKILL_LAB_ADMIN", "http://127.0.0.1:8081", "URL of the edge's admin API")
	envFlag(fs, getenv, &cfg.Lab.AdminToken, "admin-token", "SECKILL_ADMIN_TOKEN", "", "admin API token")
	fs.StringVar(&rates, "rates", "50,100,200,400,800", "offered honest users per second, comma-separated, low to high")
	fs.DurationVar(&cfg.Step, "step", 5*time.Second, "how long each rate is offered")
	fs.StringVar(&cfg.Challenge, "challenge", "pow", "challenge of the sweep's sales: pow, or none (nothing for the lab to solve)")
	fs.StringVar(&shedding, "shedding", "both", "shedding modes to measure: both, on or off")
	fs.StringVar(&reportDir, "report", "", "write sweep.json, sweep.svg and sweep.html into this folder")
	fs.BoolVar(&noXFF, "no-xff", false, "do not send X-Forwarded-For (the edge does not trust the lab)")
	return cmd
}
