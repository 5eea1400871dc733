// Command chaos runs the fault matrix (`make chaos`): it starts the real
// servers with scripts/services.sh, then for each row and run a fresh
// stack (bin/seckill backend, worker, edge, and relay when the binary has
// it) as separate processes, drives a sale through the public API, injects
// one fault mid-sale, recovers, and judges what buyers were told against
// what PostgreSQL stored. It exits 1 on any violation. See
// docs/RELIABILITY.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"seckill/chaos"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		bin, services, toxiBin, dir, rows, out string
		runs, units, buyers, conc              int
		rate, faultAt                          float64
		settle, maxFlow, timeout, deadline     time.Duration
		keep, list, strict                     bool
	)
	flag.StringVar(&bin, "bin", "bin/seckill", "the seckill binary under test")
	flag.StringVar(&services, "services", "scripts/services.sh", "the script that starts the servers")
	flag.StringVar(&toxiBin, "toxiproxy", "bin/toxiproxy-server", "toxiproxy server binary (rows that need it are skipped without it)")
	flag.StringVar(&dir, "dir", "", "work folder (default: a new temp folder)")
	flag.StringVar(&rows, "rows", "", "comma-separated row names (default: all)")
	flag.StringVar(&out, "json", "", "also write the results as JSON lines here")
	flag.IntVar(&runs, "runs", 3, "runs of each row")
	flag.IntVar(&units, "units", 1000, "units on sale per run")
	flag.IntVar(&buyers, "buyers", 1500, "buyers per run (one attempt each)")
	flag.IntVar(&conc, "concurrency", 64, "buyers in flight at once")
	flag.Float64Var(&rate, "rate", 150, "buyers arriving per second")
	flag.Float64Var(&faultAt, "fault-at", 0.3, "inject when this share of the units is sold")
	flag.DurationVar(&settle, "settle", 45*time.Second, "longest wait for told orders to be stored after the sale")
	flag.DurationVar(&maxFlow, "max-flow", 9*time.Second, "purchases flowing again later than this after recovery is a violation (3 s goal, 3x slack)")
	flag.DurationVar(&timeout, "timeout", 10*time.Second, "client timeout of one request")
	flag.DurationVar(&deadline, "deadline", 60*time.Second, "a buyer gives up after this long")
	flag.BoolVar(&keep, "keep", false, "keep the work folder (logs of every part)")
	flag.BoolVar(&list, "list", false, "list the rows and exit")
	flag.BoolVar(&strict, "strict", false, "a skipped row (a feature missing from the binary, no toxiproxy) is a failure too (CI)")
	flag.Parse()

	all := chaos.Rows()
	if list {
		for _, r := range all {
			fmt.Printf("%-28s %s\n", r.Name, r.What)
		}
		return nil
	}
	var sel []chaos.Row
	if rows == "" {
		sel = all
	} else {
		byName := map[string]chaos.Row{}
		for _, r := range all {
			byName[r.Name] = r
		}
		for _, n := range strings.Split(rows, ",") {
			r, ok := byName[strings.TrimSpace(n)]
			if !ok {
				return fmt.Errorf("unknown row %q (see -list)", n)
			}
			sel = append(sel, r)
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if services, err = filepath.Abs(services); err != nil {
		return err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "seckill-chaos-"); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_ = os.Chmod(dir, 0o755)
	feat := chaos.DetectFeatures(bin)
	log.Info("binary", "path", bin, "relay_cmd", feat.RelayCmd, "relay_redis_url", feat.RelayRedisURL, "clock_offset", feat.ClockOffset)

	srv, err := chaos.StartServers(ctx, services, filepath.Join(dir, "servers"))
	if err != nil {
		return err
	}
	defer func() {
		if err := srv.Stop(); err != nil {
			log.Error("stopping the servers", "err", err)
		}
		if !keep {
			_ = os.RemoveAll(dir)
		} else {
			log.Info("work folder kept", "dir", dir)
		}
	}()
	var toxi *chaos.Toxiproxy
	if _, err := exec.LookPath(toxiBin); err == nil {
		if toxi, err = chaos.StartToxiproxy(ctx, toxiBin, filepath.Join(dir, "toxiproxy.log")); err != nil {
			return err
		}
		defer toxi.Stop()
	} else {
		log.Warn("no toxiproxy server: rows that need it are skipped", "looked_for", toxiBin)
	}

	cfg := chaos.Config{Bin: bin, Dir: dir, Units: units, FaultAt: faultAt, Settle: settle, MaxFlow: maxFlow, Features: feat, Log: log,
		Load: chaos.LoadConfig{Buyers: buyers, Concurrency: conc, Rate: rate, Timeout: timeout, Deadline: deadline}}
	var results []chaos.Result
	startedAt := time.Now()
	for _, row := range sel {
		for i := 1; i <= runs; i++ {
			if ctx.Err() != nil {
				break
			}
			r := row
			if toxi == nil && needsToxi(r, feat) {
				results = append(results, chaos.Result{Row: r.Name, Run: i, Skipped: "no toxiproxy server (" + toxiBin + ")"})
				continue
			}
			res := chaos.RunRow(ctx, cfg, srv, toxi, r, i)
			results = append(results, res)
			if !res.OK() && res.Skipped == "" {
				if err := srv.Heal(ctx); err != nil {
					log.Error("bringing the servers back", "err", err)
				}
			}
			log.Info("row done", "row", r.Name, "run", i, "ok", res.OK(), "skipped", res.Skipped, "error", res.Error,
				"violations", strings.Join(res.Violations, "; "), "told", res.Told, "stored", res.Stored,
				"flow", res.Flow, "freeze", res.Freeze)
			if res.Skipped != "" {
				break // the same reason holds for every run
			}
		}
	}
	fmt.Printf("\nseckill chaos: %d units, %d buyers at %.0f/s, concurrency %d; %s; %s\n\n", units, buyers, rate, conc,
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), time.Since(startedAt).Round(time.Second))
	chaos.Table(os.Stdout, results)
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		if err := chaos.WriteJSON(f, results); err != nil {
			return err
		}
		f.Close()
	}
	failed := 0
	for _, r := range results {
		if !r.OK() || (strict && r.Skipped != "") {
			failed++
		}
	}
	if failed > 0 {
		return errors.New(fmt.Sprint(failed, " run(s) violated an invariant or failed"))
	}
	return ctx.Err()
}

func needsToxi(r chaos.Row, f chaos.Features) bool {
	opt, skip := r.Options(f)
	return skip == "" && (opt.RelayRedisToxi || opt.RelayAMQPToxi)
}
