package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"
)

// SweepConfig is a sweep of offered load.
type SweepConfig struct {
	Lab       Config
	Rates     []float64     // honest users arriving per second, low to past saturation
	Step      time.Duration // how long each rate is offered (default 5s)
	Challenge string        // pow (default) or none
	XFF       bool
	// Shedding: the modes to measure; true is the default edge (shedding
	// on), false switches shedding off for the step's sale.
	Shedding []bool
	Progress io.Writer
}

// SweepPoint is one offered rate in one mode.
type SweepPoint struct {
	Shedding    bool    `json:"shedding"`
	Offered     float64 `json:"offered_users_per_s"`
	OfferedRPS  float64 `json:"offered_rps"`   // requests/s the lab sent (retries included)
	Goodput     float64 `json:"goodput"`       // purchases accepted per second of the step
	HonestP99Ms float64 `json:"honest_p99_ms"` // all honest requests
	BuyP99Ms    float64 `json:"buy_p99_ms"`    // buy route
	Shed        int     `json:"shed_503"`      // 503 answers
	Limited     int     `json:"limited_429"`   // 429 answers
	Unfinished  int     `json:"unfinished"`    // honest users with no answer by the end
	Verdict     string  `json:"verdict"`
}

// SweepResult is the whole sweep.
type SweepResult struct {
	Step   time.Duration `json:"step_ns"`
	Points []SweepPoint  `json:"points"`
}

// RunSweep offers each rate for Step, in each shedding mode, each on a
// sale of its own with as many units as users (everyone can win: goodput
// is limited by the system, not by the stock).
func RunSweep(ctx context.Context, cfg SweepConfig) (*SweepResult, error) {
	if cfg.Step <= 0 {
		cfg.Step = 5 * time.Second
	}
	if cfg.Challenge == "" {
		cfg.Challenge = "pow"
	}
	if len(cfg.Shedding) == 0 {
		cfg.Shedding = []bool{true, false}
	}
	out := &SweepResult{Step: cfg.Step}
	for _, shed := range cfg.Shedding {
		for _, rate := range cfg.Rates {
			users := max(int(rate*cfg.Step.Seconds()), 1)
			sc := &Scenario{Name: fmt.Sprintf("sweep %.0f/s shedding=%v", rate, shed), Units: users, Challenge: cfg.Challenge,
				StartIn: time.Second, XFF: cfg.XFF, Duration: cfg.Step + 10*time.Second, BotLinger: time.Millisecond,
				Settle: 30 * time.Second, Connections: 2048, Timeout: 10 * time.Second,
				Honest: HonestSpec{Users: users, Arrival: "linear", Over: cfg.Step}}
			if !shed {
				sc.Defences = map[string]bool{"shedding": false}
			}
			sc.defaults()
			if err := sc.Validate(); err != nil {
				return nil, err
			}
			rep, err := Run(ctx, sc, cfg.Lab)
			if err != nil {
				return nil, err
			}
			h := rep.Actor(Honest)
			p := SweepPoint{Shedding: shed, Offered: rate, OfferedRPS: rep.MeanRPS, HonestP99Ms: h.P99Ms,
				Goodput: float64(h.UnitsWon) / max(cfg.Step.Seconds(), rep.HonestDoneAfter), BuyP99Ms: routeOf(rep, "buy").P99Ms,
				Unfinished: rep.HonestOutcomes["stopped"] + rep.HonestOutcomes["not_started"] + rep.HonestOutcomes["gave_up"], Verdict: rep.Verdict}
			for o, n := range h.Outcomes {
				switch o[:3] {
				case "503":
					p.Shed += n
				case "429":
					p.Limited += n
				}
			}
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "sweep: shedding=%v offered %.0f users/s: goodput %.0f/s, honest p99 %.0f ms, 503 %d, %s\n",
					shed, rate, p.Goodput, p.HonestP99Ms, p.Shed, p.Verdict)
			}
			out.Points = append(out.Points, p)
		}
	}
	return out, nil
}

// Write prints the sweep as a table.
func (s *SweepResult) Write(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "shedding\toffered users/s\treq/s\tgoodput/s\thonest p99 ms\tbuy p99 ms\t503\t429\tunfinished\tverdict")
	for _, p := range s.Points {
		fmt.Fprintf(tw, "%v\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%d\t%d\t%s\n", p.Shedding, p.Offered, p.OfferedRPS, p.Goodput, p.HonestP99Ms, p.BuyP99Ms, p.Shed, p.Limited, p.Unfinished, p.Verdict)
	}
	tw.Flush()
}

func (s *SweepResult) charts() (goodput, p99 template.HTML) {
	var gs, ls []series
	for _, shed := range []bool{true, false} {
		var x, g, l []float64
		for _, p := range s.Points {
			if p.Shedding == shed {
				x, g, l = append(x, p.Offered), append(g, p.Goodput), append(l, p.HonestP99Ms)
			}
		}
		if len(x) == 0 {
			continue
		}
		name, color := "shedding on", green
		if !shed {
			name, color = "shedding off", red
		}
		gs = append(gs, series{name, color, x, g})
		ls = append(ls, series{name, color, x, l})
	}
	return lineChart("Goodput vs offered load", "offered honest users/s", "purchases accepted/s", gs),
		lineChart("Honest p99 latency vs offered load", "offered honest users/s", "ms", ls)
}

// WriteFiles writes sweep.json, sweep.svg (goodput and p99 charts) and
// sweep.html into dir.
func (s *SweepResult) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(s, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "sweep.json"), append(raw, '\n'), 0o644); err != nil {
		return err
	}
	g, l := s.charts()
	// One SVG holding both charts, one above the other.
	svg := fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="760" height="560"><g>%s</g><g transform="translate(0 280)">%s</g></svg>`, g, l)
	if err := os.WriteFile(filepath.Join(dir, "sweep.svg"), []byte(svg), 0o644); err != nil {
		return err
	}
	html := fmt.Sprintf("<!doctype html><html><head><meta charset=\"utf-8\"><title>seckill lab sweep</title></head><body style=\"font-family:sans-serif\"><h1>seckill lab sweep</h1><p>Each offered rate ran %s on a sale of its own.</p>%s%s</body></html>", s.Step, g, l)
	return os.WriteFile(filepath.Join(dir, "sweep.html"), []byte(html), 0o644)
}
