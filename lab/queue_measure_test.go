package lab

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

// queueRun is a synthetic waiting room: the sale starts at 60 s, the users
// stop at 330 s, the edge admits perSec users a second from the start and
// the stats are sampled every 250 ms; the lab polls 100 times a second
// (every 100th answered 429) and 1,000 users join every 66 ms.
func queueRun(perSec int64) queueInput {
	in := queueInput{rate: 6000, pollRate: 2000, saleStart: 60 * time.Second, runEnd: 330 * time.Second, load1: 0.5}
	for k := 0; k <= 1400; k++ { // to 350 s: samples go on in the settle wait
		at := time.Duration(k) * 250 * time.Millisecond
		s := Sample{At: at, Waiting: 50000, LoadFactor: 1, Load1: 2,
			CPU: map[string]float64{"edge": 0.5 * at.Seconds(), "redis": 0.25 * at.Seconds()}}
		if at >= in.saleStart {
			s.AdmittedTotal = int64(float64(perSec) * (at - in.saleStart).Seconds())
		}
		in.samples = append(in.samples, s)
	}
	for j := range 27000 {
		in.admits = append(in.admits, in.saleStart+time.Duration(j)*10*time.Millisecond)
	}
	for i := range 33000 {
		r := Record{Actor: Honest, Route: "queue_poll", Status: 200, At: time.Duration(i) * 10 * time.Millisecond}
		if i%100 == 0 {
			r.Status = 429
		}
		in.recs = append(in.recs, r)
	}
	for i := range 1000 {
		in.recs = append(in.recs, Record{Actor: Honest, Route: "queue_join", Status: 200, At: time.Duration(i) * 66 * time.Millisecond})
	}
	return in
}

func TestMeasureQueueAtTheConfiguredRate(t *testing.T) {
	q := measureQueue(queueRun(100))
	if !q.Measured || q.WindowFrom != 65 || q.WindowTo != 329 {
		t.Fatalf("window: measured %v, %v s to %v s; want 65 s to 329 s (5 s after the start to the last sample 1 s before the users stopped)", q.Measured, q.WindowFrom, q.WindowTo)
	}
	if q.AdmittedTotal != 26400 || q.PerMinute != 6000 || q.Error != 0 || !q.WithinTolerance {
		t.Errorf("admitted %d, %v/min, error %v, within %v; want 26400, 6000/min, 0, true", q.AdmittedTotal, q.PerMinute, q.Error, q.WithinTolerance)
	}
	if q.ClientPerMinute != 6000 {
		t.Errorf("as seen by the users: %v/min, want 6000 (26,400 admissions after 65 s and up to 329 s)", q.ClientPerMinute)
	}
	if len(q.Minutes) != 4 || q.Minutes[0] != 6000 || q.Minutes[3] != 6000 {
		t.Errorf("whole minutes %v, want four of 6000", q.Minutes)
	}
	if q.Joined != 1000 || q.JoinedBefore != 910 {
		t.Errorf("joined %d (%d before the start), want 1000 (910: every 66 ms before 60 s)", q.Joined, q.JoinedBefore)
	}
	if q.Polls != 26401 || q.PollsNot200 != 265 || q.PreQueuePollsPS != 100 || q.PollsPeak10s != 100 {
		t.Errorf("polls %d (%d not 200), pre-queue %v/s, peak %v/s; want 26401 (265), 100/s, 100/s", q.Polls, q.PollsNot200, q.PreQueuePollsPS, q.PollsPeak10s)
	}
	if math.Abs(q.PollsPerSec-26401.0/264) > 1e-9 {
		t.Errorf("polls/s %v, want %v", q.PollsPerSec, 26401.0/264)
	}
	if math.Abs(q.CPU["edge"]-0.5) > 1e-9 || math.Abs(q.CPU["redis"]-0.25) > 1e-9 || math.Abs(q.CPUPreQueue["edge"]-0.5) > 1e-9 {
		t.Errorf("CPU %v (pre-queue %v), want edge 0.5 and redis 0.25", q.CPU, q.CPUPreQueue)
	}
	if q.Load1Before != 0.5 || q.Load1Mean != 2 || q.Load1Max != 2 || q.Load1After != 2 || q.MinLoadFactor != 1 {
		t.Errorf("load %v/%v/%v/%v, load factor %v", q.Load1Before, q.Load1Mean, q.Load1Max, q.Load1After, q.MinLoadFactor)
	}
	var out bytes.Buffer
	q.write(&out)
	for _, want := range []string{"6000.0/min by the edge's admitted_total", "+0.00% of the configured rate, within ±5%", "against --queue-poll-rate 2000"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestMeasureQueueOutsideTheTolerance(t *testing.T) {
	q := measureQueue(queueRun(94)) // 5,640/min: -6 %
	if !q.Measured || math.Abs(q.PerMinute-5640) > 1e-9 || q.WithinTolerance || math.Abs(q.Error+0.06) > 1e-9 {
		t.Fatalf("%v/min, error %v, within %v; want 5640/min, -0.06, false", q.PerMinute, q.Error, q.WithinTolerance)
	}
	var out bytes.Buffer
	q.write(&out)
	if !strings.Contains(out.String(), "-6.00% of the configured rate, NOT within ±5%") {
		t.Errorf("summary:\n%s", out.String())
	}
	if q := measureQueue(queueRun(106)); q.WithinTolerance || math.Abs(q.Error-0.06) > 1e-9 {
		t.Errorf("6,360/min: error %v, within %v; want +0.06, false", q.Error, q.WithinTolerance)
	}
	if q := measureQueue(queueRun(104)); !q.WithinTolerance {
		t.Errorf("6,240/min (+4 %%): error %v, not within", q.Error)
	}
}

func TestMeasureQueueWindowEndsWhenTheQueueEmpties(t *testing.T) {
	in := queueRun(100)
	for i := range in.samples {
		if in.samples[i].At > 200*time.Second {
			in.samples[i].Waiting = 0
			in.samples[i].AdmittedTotal = 14000 // everyone admitted at 200 s
		}
	}
	q := measureQueue(in)
	if !q.Measured || q.WindowTo != 200 || q.AdmittedTotal != 13500 || q.PerMinute != 6000 {
		t.Errorf("window to %v s, admitted %d, %v/min; want 200 s, 13500, 6000/min", q.WindowTo, q.AdmittedTotal, q.PerMinute)
	}
	for i := range in.samples {
		in.samples[i].Waiting = 0
	}
	if q := measureQueue(in); q.Measured {
		t.Errorf("nobody ever waited, yet measured: %+v", q)
	}
}

func TestCPUSecondsOfProcStat(t *testing.T) {
	// /proc/PID/stat with a command name holding spaces and a parenthesis.
	stat := "1234 (seckill edge) x) S 1 1234 1234 0 -1 4194560 5000 0 0 0 1250 375 0 0 20 0 12 0 100 0 0"
	if s, ok := cpuSeconds(stat, 100); !ok || s != 16.25 {
		t.Errorf("cpuSeconds = %v, %v; want 16.25 (utime 1250 + stime 375 ticks)", s, ok)
	}
	if _, ok := cpuSeconds("1234 (x) S 1", 100); ok {
		t.Error("a short line was read")
	}
}

func TestParseWatch(t *testing.T) {
	m, err := ParseWatch([]string{"edge=12", "redis=34"})
	if err != nil || len(m) != 2 || m["edge"] != 12 || m["redis"] != 34 {
		t.Fatalf("ParseWatch = %v, %v", m, err)
	}
	for _, bad := range []string{"edge", "=12", "edge=x", "edge=0"} {
		if _, err := ParseWatch([]string{bad}); err == nil {
			t.Errorf("ParseWatch(%q) accepted", bad)
		}
	}
}
