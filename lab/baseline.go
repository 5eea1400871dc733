package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"seckill/bench"
)

// BaselineConfig says what to measure.
type BaselineConfig struct {
	Duration    time.Duration // of each measure (default 3s)
	Concurrency int           // goroutines of the echo load loop (default 64)
	// Ceilings, when set, measures the servers' raw ceilings
	// (storebench.RunCeilings, wired by cmd/seckill: lab itself links no
	// store client).
	Ceilings func(ctx context.Context, d time.Duration, progress io.Writer) (*bench.Ceilings, error)
	// Report, when set, gives the lab figures shown as ratios.
	Report   *Report
	Progress io.Writer
}

// Baseline is what the machine and the servers can do at all.
type Baseline struct {
	EchoRPS  float64         `json:"echo_rps"`
	Ceilings *bench.Ceilings `json:"ceilings,omitempty"`
	Ratios   []Ratio         `json:"ratios,omitempty"`
}

// Ratio is one lab figure over one ceiling.
type Ratio struct {
	Name    string  `json:"name"`
	Lab     float64 `json:"lab"`
	Ceiling float64 `json:"ceiling"`
	Unit    string  `json:"unit"`
	Ratio   float64 `json:"ratio"`
}

// EchoRPS measures a bare echo handler served in process, loaded by a Go
// loop of concurrency goroutines over keep-alive connections.
func EchoRPS(ctx context.Context, d time.Duration, concurrency int) float64 {
	srv := httptest.NewServer(bench.HelloHandler())
	defer srv.Close()
	hc := newHTTPClient(concurrency, 5*time.Second)
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var n atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/", nil)
				resp, err := hc.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(began).Seconds()
}

// RunBaseline measures the echo baseline and, with the URLs, the ceilings.
func RunBaseline(ctx context.Context, cfg BaselineConfig) (*Baseline, error) {
	if cfg.Duration <= 0 {
		cfg.Duration = 3 * time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	out := &Baseline{}
	fmt.Fprintf(cfg.Progress, "baseline: bare echo handler, %d goroutines, %s\n", cfg.Concurrency, cfg.Duration)
	out.EchoRPS = EchoRPS(ctx, cfg.Duration, cfg.Concurrency)
	if cfg.Ceilings != nil {
		c, err := cfg.Ceilings(ctx, cfg.Duration, cfg.Progress)
		if err != nil {
			return nil, fmt.Errorf("ceilings: %w", err)
		}
		out.Ceilings = c
	}
	if rep := cfg.Report; rep != nil {
		add := func(name string, lab, ceil float64, unit string) {
			if ceil > 0 {
				out.Ratios = append(out.Ratios, Ratio{Name: name, Lab: lab, Ceiling: ceil, Unit: unit, Ratio: lab / ceil})
			}
		}
		add("lab mean req/s / bare echo req/s", rep.MeanRPS, out.EchoRPS, "req/s")
		add("lab peak req/s / bare echo req/s", rep.PeakRPS, out.EchoRPS, "req/s")
		if c := out.Ceilings; c != nil {
			add("purchases accepted/s / redis check-and-DECR ops/s", rep.AcceptedPerSec, c.Redis.Rate, "ops/s")
			add("orders stored/s / rabbitmq quorum confirmed publishes/s", rep.OrdersPerSec, c.AMQPQuorum.Rate, "msg/s")
			best := 0.0
			for _, p := range c.PG {
				best = max(best, p.Rate)
			}
			add("orders stored/s / postgresql batched insert rows/s", rep.OrdersPerSec, best, "rows/s")
		}
	}
	return out, nil
}

// Write prints the baseline and the ratios.
func (b *Baseline) Write(w io.Writer) {
	fmt.Fprintf(w, "bare echo handler (in process, Go load loop): %.0f req/s\n", b.EchoRPS)
	if b.Ceilings != nil {
		bench.PrintCeilings(w, b.Ceilings)
	} else {
		fmt.Fprintln(w, "server ceilings: not measured (give --redis-url, --amqp-url and --pg-url)")
	}
	if len(b.Ratios) == 0 {
		return
	}
	fmt.Fprintln(w, "\nlab figures as a share of the ceilings:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  figure\tlab\tceiling\tratio")
	for _, r := range b.Ratios {
		fmt.Fprintf(tw, "  %s\t%.0f\t%.0f %s\t%.3f\n", r.Name, r.Lab, r.Ceiling, r.Unit, r.Ratio)
	}
	tw.Flush()
}
