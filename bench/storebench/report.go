package storebench

import (
	"fmt"
	"io"
	"strings"
	"time"

	"seckill/bench"
)

// Report is what `seckill bench all` measures.
type Report struct {
	Command  string          `json:"command"`
	Started  time.Time       `json:"started"`
	Ceilings *bench.Ceilings `json:"ceilings,omitempty"`
	Pipeline *PipelineResult `json:"pipeline,omitempty"`
	Target   Target          `json:"target"`
}

// Target is the goal of a 100,000-unit sale.
type Target struct {
	EndToEndRate float64       `json:"end_to_end_rate"` // orders/s, at least
	Drain        time.Duration `json:"drain_ns"`        // at most
}

// DefaultTarget: at least 15,000 orders/s end to end, and the last order
// stored within 2 s of the last acceptance.
var DefaultTarget = Target{EndToEndRate: 15000, Drain: 2 * time.Second}

// Met reports whether the pipeline run met the target.
func (t Target) Met(p *PipelineResult) bool {
	return p != nil && p.OK() && p.EndToEndRate >= t.EndToEndRate && p.Drain <= t.Drain
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// PrintMarkdown writes the figures of r as a Markdown table.
func PrintMarkdown(w io.Writer, r *Report) {
	p, c := r.Pipeline, r.Ceilings
	fmt.Fprintf(w, "Command: `%s`\n\n", r.Command)
	if p != nil {
		fmt.Fprintf(w, "Pipeline: %d units, concurrency %d, %d relay(s), %d worker(s); checks: %s\n\n",
			p.Units, p.Concurrency, p.Relays, p.Workers, map[bool]string{true: "PASS", false: "FAIL " + strings.Join(p.Failures, "; ")}[p.OK()])
	}
	fmt.Fprintln(w, "| figure | value | ceiling | ceiling value | ratio |")
	fmt.Fprintln(w, "|---|---:|---|---:|---:|")
	row := func(name, value, ceilName, ceilValue, r string) {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", name, value, ceilName, ceilValue, r)
	}
	if c != nil {
		all := append([]bench.Ceiling{c.Redis, c.AMQPQuorum, c.AMQPClassic}, c.PG...)
		for _, x := range all {
			row("ceiling: "+x.Name, bench.Human(x.Rate)+" "+x.Unit, "", "", "")
		}
	}
	if p != nil {
		var redis, quorum, classic, pg1, pgN bench.Ceiling
		if c != nil {
			redis, quorum, classic = c.Redis, c.AMQPQuorum, c.AMQPClassic
			pg1, pgN = c.PGFor(1), c.PGFor(p.Workers)
		}
		cv := func(x bench.Ceiling) string {
			if x.Unit == "" {
				return "-"
			}
			return bench.Human(x.Rate) + " " + x.Unit
		}
		row("accepted orders/s (units / acceptance window)", bench.Human(p.AcceptRate), redis.Name, cv(redis), ratio(p.AcceptRate, redis.Rate))
		row("end-to-end orders/s (first accepted -> last stored)", bench.Human(p.EndToEndRate), quorum.Name, cv(quorum), ratio(p.EndToEndRate, quorum.Rate))
		row("end-to-end orders/s", bench.Human(p.EndToEndRate), classic.Name, cv(classic), ratio(p.EndToEndRate, classic.Rate))
		row("end-to-end orders/s", bench.Human(p.EndToEndRate), pg1.Name, cv(pg1), ratio(p.EndToEndRate, pg1.Rate))
		if pgN.Name != pg1.Name {
			row("end-to-end orders/s", bench.Human(p.EndToEndRate), pgN.Name, cv(pgN), ratio(p.EndToEndRate, pgN.Rate))
		}
		row("end-to-end orders/s vs target", bench.Human(p.EndToEndRate), "target", bench.Human(r.Target.EndToEndRate), ratio(p.EndToEndRate, r.Target.EndToEndRate))
		row("drain (last accepted -> last stored)", p.Drain.Round(time.Millisecond).String(), "target", r.Target.Drain.String(),
			ratio(p.Drain.Seconds(), r.Target.Drain.Seconds()))
		row("Reserve latency p50", p.ReserveP50.Round(time.Microsecond).String(), "", "", "")
		row("Reserve latency p99", p.ReserveP99.Round(time.Microsecond).String(), "", "", "")
		row("max outbox backlog (accepted, not confirmed)", fmt.Sprint(p.MaxOutboxBacklog), "", "", "")
		row("max queue backlog (confirmed, not stored)", fmt.Sprint(p.MaxQueueBacklog), "", "", "")
		met := "NOT MET"
		if r.Target.Met(p) {
			met = "met"
		}
		fmt.Fprintf(w, "\nTarget (>= %s orders/s end to end, drain <= %v): %s\n", bench.Human(r.Target.EndToEndRate), r.Target.Drain, met)
	}
}
