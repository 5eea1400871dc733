package lab

import (
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The waiting room measured from the lab's side (issue 16: admission
// accuracy within ±5 % of new_users_per_minute, and what polling costs):
// the admissions the edge counted (admitted_total of the item's stats,
// sampled every second) and the admissions the lab's users saw (the first
// answer of state admitted), over the window of sustained admission; the
// polls the edge was sent in that window against its --queue-poll-rate;
// the CPU of watched processes and the load average.

// AdmissionTolerance is the bound on the admission rate's error.
const AdmissionTolerance = 0.05

// queueWarmup: the window of sustained admission begins this long after
// the sale's start (the first polls after the start, the first buys).
const queueWarmup = 5 * time.Second

// QueueReport is the waiting room of a queue sale as the lab measured it
// (the first seed's sale). Times are seconds since the waiting room opened
// (the lab's start).
type QueueReport struct {
	NewUsersPerMinute int64 `json:"new_users_per_minute"` // configured
	// PollRate is the edge's --queue-poll-rate the run was played against
	// (the scenario's queue.poll_rate; the edge's default when unset).
	PollRate      int     `json:"poll_rate"`
	SaleStartsAt  float64 `json:"sale_starts_at_s"`
	Joined        int     `json:"joined"`           // joins answered 200 (tickets)
	JoinedBefore  int     `json:"joined_pre_queue"` // of them before the sale started
	MaxWaiting    int64   `json:"max_waiting"`
	Measured      bool    `json:"measured"` // a window of at least 10 s was found
	WindowFrom    float64 `json:"window_from_s"`
	WindowTo      float64 `json:"window_to_s"`
	AdmittedTotal int64   `json:"admitted_in_window"` // by the edge's admitted_total
	// PerMinute: admissions a minute in the window by the edge's count,
	// and as first seen by the lab's users; Error = PerMinute / configured - 1.
	PerMinute       float64 `json:"admitted_per_min"`
	ClientPerMinute float64 `json:"client_admitted_per_min"`
	Error           float64 `json:"error"`
	WithinTolerance bool    `json:"within_tolerance"`
	// Minutes: admissions in each whole minute of the window (edge's count).
	Minutes []int64 `json:"minutes,omitempty"`
	// MinLoadFactor: the lowest load factor the edge reported in the
	// window (1 calm; 0.5 halves the rate: backend busy).
	MinLoadFactor float64 `json:"min_load_factor"`
	// Polls the lab sent (GET .../queue) in the window, a second; the
	// busiest 10 s of the run; polls not answered 200 in the window.
	Polls           int     `json:"polls"`
	PollsPerSec     float64 `json:"polls_per_s"`
	PollsPeak10s    float64 `json:"polls_peak_10s_per_s"`
	PollsNot200     int     `json:"polls_not_200"`
	PreQueuePollsPS float64 `json:"pre_queue_polls_per_s"`
	// CPU (cores) of each watched process in the window and in the
	// pre-queue (from the first sample to the sale's start).
	CPU         map[string]float64 `json:"cpu_cores,omitempty"`
	CPUPreQueue map[string]float64 `json:"cpu_cores_pre_queue,omitempty"`
	// Load average (1 min): when the run began, mean and highest in the
	// window, at the last sample (after the settle wait).
	Load1Before float64 `json:"load1_before"`
	Load1Mean   float64 `json:"load1_mean"`
	Load1Max    float64 `json:"load1_max"`
	Load1After  float64 `json:"load1_after"`
}

// queueInput is what measureQueue reads.
type queueInput struct {
	rate      int64
	pollRate  int
	saleStart time.Duration // since the lab's start
	runEnd    time.Duration // the users stopped (since the lab's start)
	samples   []Sample
	admits    []time.Duration
	recs      []Record
	load1     float64 // when the run began
}

// measureQueue finds the window of sustained admission, from queueWarmup
// after the sale's start to the last sample, at least a second before the
// users stopped, with users still waiting; and measures in it.
func measureQueue(in queueInput) *QueueReport {
	q := &QueueReport{NewUsersPerMinute: in.rate, PollRate: in.pollRate, SaleStartsAt: in.saleStart.Seconds(), Load1Before: in.load1}
	for _, x := range in.recs {
		if x.Route == "queue_join" && x.Status == 200 {
			q.Joined++
			if x.At < in.saleStart {
				q.JoinedBefore++
			}
		}
	}
	from, to := -1, -1
	for i, s := range in.samples {
		q.MaxWaiting = max(q.MaxWaiting, s.Waiting)
		if from < 0 && s.At >= in.saleStart+queueWarmup {
			from = i
		}
		if from >= 0 && s.At <= in.runEnd-time.Second && s.Waiting > 0 {
			to = i
		}
	}
	if n := len(in.samples); n > 0 {
		q.Load1After = in.samples[n-1].Load1
		first := in.samples[0]
		if d := in.saleStart - first.At; d > time.Second {
			pre := -1
			for i, s := range in.samples {
				if s.At <= in.saleStart {
					pre = i
				}
			}
			q.CPUPreQueue = cpuBetween(first, in.samples[pre])
		}
	}
	var preFirst time.Duration = -1
	prePolls := 0
	per10 := map[int]int{}
	for _, x := range in.recs {
		if x.Route != "queue_poll" {
			continue
		}
		per10[int(x.At/(10*time.Second))]++
		if x.At < in.saleStart {
			prePolls++
			if preFirst < 0 || x.At < preFirst {
				preFirst = x.At
			}
		}
	}
	for _, n := range per10 {
		q.PollsPeak10s = max(q.PollsPeak10s, float64(n)/10)
	}
	if preFirst >= 0 && in.saleStart-preFirst > time.Second {
		q.PreQueuePollsPS = float64(prePolls) / (in.saleStart - preFirst).Seconds()
	}
	if from < 0 || to < 0 || in.samples[to].At-in.samples[from].At < 10*time.Second {
		return q
	}
	a, b := in.samples[from], in.samples[to]
	d := b.At - a.At
	q.Measured = true
	q.WindowFrom, q.WindowTo = a.At.Seconds(), b.At.Seconds()
	q.AdmittedTotal = b.AdmittedTotal - a.AdmittedTotal
	q.PerMinute = float64(q.AdmittedTotal) * 60 / d.Seconds()
	if in.rate > 0 {
		q.Error = q.PerMinute/float64(in.rate) - 1
		q.WithinTolerance = math.Abs(q.Error) <= AdmissionTolerance
	}
	seen := 0
	for _, t := range in.admits {
		if t > a.At && t <= b.At {
			seen++
		}
	}
	q.ClientPerMinute = float64(seen) * 60 / d.Seconds()
	// Whole minutes: the last sample at or before each minute's end.
	at := func(t time.Duration) Sample {
		j := from
		for k := from; k <= to && in.samples[k].At <= t; k++ {
			j = k
		}
		return in.samples[j]
	}
	for m := 1; a.At+time.Duration(m)*time.Minute <= b.At; m++ {
		x, y := at(a.At+time.Duration(m-1)*time.Minute), at(a.At+time.Duration(m)*time.Minute)
		q.Minutes = append(q.Minutes, y.AdmittedTotal-x.AdmittedTotal)
	}
	q.MinLoadFactor = 1
	var loads []float64
	for _, s := range in.samples[from : to+1] {
		if s.LoadFactor > 0 || s.Waiting > 0 {
			q.MinLoadFactor = min(q.MinLoadFactor, s.LoadFactor)
		}
		if s.Load1 > 0 {
			loads = append(loads, s.Load1)
		}
	}
	if len(loads) > 0 {
		sum := 0.0
		for _, l := range loads {
			sum += l
		}
		q.Load1Mean, q.Load1Max = sum/float64(len(loads)), slices.Max(loads)
	}
	for _, x := range in.recs {
		if x.Route == "queue_poll" && x.At >= a.At && x.At <= b.At {
			q.Polls++
			if x.Status != 200 {
				q.PollsNot200++
			}
		}
	}
	q.PollsPerSec = float64(q.Polls) / d.Seconds()
	q.CPU = cpuBetween(a, b)
	return q
}

// cpuBetween is each watched process's CPU (cores) between two samples.
func cpuBetween(a, b Sample) map[string]float64 {
	d := (b.At - a.At).Seconds()
	if d <= 0 || len(b.CPU) == 0 {
		return nil
	}
	out := map[string]float64{}
	for k, v := range b.CPU {
		if u, ok := a.CPU[k]; ok {
			out[k] = (v - u) / d
		}
	}
	return out
}

// write prints the waiting room's measure.
func (q *QueueReport) write(w io.Writer) {
	fmt.Fprintf(w, "\nwaiting room: %d tickets (%d joined before the sale started at %.0fs), at most %d waiting; configured %d new users/min\n",
		q.Joined, q.JoinedBefore, q.SaleStartsAt, q.MaxWaiting, q.NewUsersPerMinute)
	if !q.Measured {
		fmt.Fprintln(w, "  admission: not measured (no window of 10 s or more with users waiting after the start)")
	} else {
		within := "within"
		if !q.WithinTolerance {
			within = "NOT within"
		}
		fmt.Fprintf(w, "  admission rate: %.1f/min by the edge's admitted_total (%d in %.1fs, %.0fs to %.0fs), %+.2f%% of the configured rate, %s ±%.0f%%; %.1f/min as first seen by the lab's users\n",
			q.PerMinute, q.AdmittedTotal, q.WindowTo-q.WindowFrom, q.WindowFrom, q.WindowTo, 100*q.Error, within, 100*AdmissionTolerance, q.ClientPerMinute)
		if len(q.Minutes) > 0 {
			fmt.Fprintf(w, "  admitted per whole minute: %s; lowest load factor %.2f\n", joinInts(q.Minutes), q.MinLoadFactor)
		}
		fmt.Fprintf(w, "  polls: %.0f/s sent to the edge in that window (%d, %d not 200) against --queue-poll-rate %d (%.2f×); busiest 10 s %.0f/s; %.0f/s in the pre-queue\n",
			q.PollsPerSec, q.Polls, q.PollsNot200, q.PollRate, q.PollsPerSec/float64(max(q.PollRate, 1)), q.PollsPeak10s, q.PreQueuePollsPS)
	}
	if len(q.CPU) > 0 || len(q.CPUPreQueue) > 0 {
		fmt.Fprintf(w, "  CPU (cores): %s in the window; %s in the pre-queue\n", cpuText(q.CPU), cpuText(q.CPUPreQueue))
	}
	if q.Load1Before > 0 || q.Load1Mean > 0 {
		fmt.Fprintf(w, "  load average (1 min): %.2f before, %.2f mean and %.2f highest in the window, %.2f after\n", q.Load1Before, q.Load1Mean, q.Load1Max, q.Load1After)
	}
}

func joinInts(v []int64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatInt(x, 10)
	}
	return strings.Join(s, ", ")
}

func cpuText(m map[string]float64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// procWatch reads the load average and processes' CPU from /proc (Linux);
// elsewhere it reads zeros.
type procWatch struct {
	pids map[string]int
	tick float64 // clock ticks a second (USER_HZ)
}

// newProcWatch watches pids and the lab's own process ("lab").
func newProcWatch(pids map[string]int) *procWatch {
	all := map[string]int{"lab": os.Getpid()}
	maps.Copy(all, pids)
	return &procWatch{pids: all, tick: 100} // USER_HZ is 100 on Linux
}

// read returns the 1-minute load average and each watched process's CPU
// seconds (user + system) so far; a process that is gone is left out.
func (w *procWatch) read() (float64, map[string]float64) {
	if w == nil {
		return 0, nil
	}
	var load float64
	if raw, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(raw)); len(f) > 0 {
			load, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if len(w.pids) == 0 {
		return load, nil
	}
	out := map[string]float64{}
	for name, pid := range w.pids {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		if s, ok := cpuSeconds(string(raw), w.tick); ok {
			out[name] = s
		}
	}
	return load, out
}

// cpuSeconds reads utime + stime (fields 14 and 15) of /proc/PID/stat.
// The command name (field 2) may hold spaces: fields are counted after
// its closing parenthesis.
func cpuSeconds(stat string, tick float64) (float64, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return (ut + st) / tick, true
}

// ParseWatch reads "name=pid" (the lab's --watch-pid).
func ParseWatch(specs []string) (map[string]int, error) {
	out := map[string]int{}
	for _, s := range specs {
		name, pid, ok := strings.Cut(s, "=")
		n, err := strconv.Atoi(pid)
		if !ok || name == "" || err != nil || n <= 0 {
			return nil, fmt.Errorf("--watch-pid %q: want name=pid, e.g. edge=1234", s)
		}
		out[name] = n
	}
	return out, nil
}
