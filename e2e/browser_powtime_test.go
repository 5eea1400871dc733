package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"seckill/web"
)

// BenchmarkBrowserPoWSolve measures how long the storefront's Web Worker
// (web/static/storefront/pow-worker.js, the one the item page and the
// registration form use) takes to solve proofs of work in Debian's headless
// Chromium: one solve per iteration, on a fresh random seed like the edge's
// (16 random bytes, base64url), timed in the page from the worker's start to
// its answer. It reports the median and the 90th percentile in seconds and
// the hashes per second. The difficulties are $SECKILL_POW_DIFFICULTIES
// (default "16,18,20"). Run it with a fixed count of solves:
//
//	go test ./e2e -run '^$' -bench BrowserPoWSolve -benchtime 30x
//
// docs/BENCHMARKS.md ("Registration proof of work in the browser") has the
// figures measured on the project's machine.
func BenchmarkBrowserPoWSolve(b *testing.B) {
	diffs := []int{16, 18, 20}
	if s := os.Getenv("SECKILL_POW_DIFFICULTIES"); s != "" {
		diffs = diffs[:0]
		for _, f := range strings.Split(s, ",") {
			d, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || d < 0 || d > 32 {
				b.Fatalf("SECKILL_POW_DIFFICULTIES=%q: %q is not a difficulty (0 to 32)", s, f)
			}
			diffs = append(diffs, d)
		}
	}
	srv := httptest.NewServer(web.Storefront())
	b.Cleanup(srv.Close)
	br := newBrowser(b)
	// A page that calls no API: only the worker runs.
	br.do(10*time.Second, "the storefront", chromedp.Navigate(srv.URL+"/#/no-such-page"))
	br.waitJS(5*time.Second, "the page", `!!document.querySelector('script[type=module]') && !!document.querySelector('main h1')`)
	worker := strings.TrimSuffix(br.evalString(`document.querySelector('script[type=module]').src`), "app.js") + "pow-worker.js"
	b.Logf("load average before: %s", loadAverage())
	for _, d := range diffs {
		b.Run(fmt.Sprintf("difficulty=%d", d), func(b *testing.B) {
			var secs []float64
			var hashes float64
			b.ResetTimer()
			for range b.N {
				var seed [16]byte
				_, _ = rand.Read(seed[:])
				s := base64.RawURLEncoding.EncodeToString(seed[:])
				js := fmt.Sprintf(`new Promise((resolve, reject) => {
					const w = new Worker(%q);
					const t0 = performance.now();
					w.onmessage = (ev) => { if (ev.data.answer === undefined) return; w.terminate();
						resolve(JSON.stringify({ms: performance.now() - t0, tried: ev.data.tried})); };
					w.onerror = (ev) => { w.terminate(); reject(new Error(ev.message)); };
					w.postMessage({seed: %q, difficulty: %d});
				})`, worker, s, d)
				ctx, cancel := context.WithTimeout(br.ctx, 5*time.Minute)
				out, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
				cancel()
				if err != nil {
					b.Fatalf("solving difficulty %d in the worker: %v", d, err)
				}
				var r struct {
					MS    float64 `json:"ms"`
					Tried float64 `json:"tried"`
				}
				if err := json.Unmarshal([]byte(out), &r); err != nil {
					b.Fatalf("the worker's answer %q: %v", out, err)
				}
				secs = append(secs, r.MS/1000)
				hashes += r.Tried
			}
			b.StopTimer()
			slices.Sort(secs)
			med, p90 := quantile(secs, 0.5), quantile(secs, 0.9)
			var total float64
			for _, s := range secs {
				total += s
			}
			b.ReportMetric(med, "median-s")
			b.ReportMetric(p90, "p90-s")
			b.ReportMetric(hashes/total, "hashes/s")
			b.Logf("difficulty %d: %d solves, median %.3f s, p90 %.3f s, max %.3f s, %.0f hashes/s; load average %s",
				d, len(secs), med, p90, secs[len(secs)-1], hashes/total, loadAverage())
		})
	}
}

// quantile of sorted values (nearest rank).
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
