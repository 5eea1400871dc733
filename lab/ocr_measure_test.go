package lab

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"seckill/captcha"
)

// ocrSample is one captcha of the measurement set: seed (seed, i).
type ocrSample struct {
	text   string
	answer int
	png    []byte
}

func ocrSamples(t testing.TB, seed uint64, n int) []ocrSample {
	t.Helper()
	out := make([]ocrSample, n)
	for i := range out {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		text, answer := captcha.NewMathExpression(rng)
		b, err := captcha.RenderPNG(text, rng)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = ocrSample{text, answer, b}
	}
	return out
}

type ocrScore struct {
	n, answered, right int
	runs               int
	elapsed            time.Duration
	wrong              []string
	unread             []string // the first reads that fitted no form
}

func measureOCR(t testing.TB, o *OCR, samples []ocrSample, workers int) ocrScore {
	t.Helper()
	var answered, right, runs atomic.Int64
	var mu sync.Mutex
	var wrong, unread []string
	start := time.Now()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(samples) {
					return
				}
				s := samples[i]
				r, err := o.Solve(context.Background(), s.png)
				if err != nil {
					t.Error(err)
					return
				}
				runs.Add(int64(r.Runs))
				if !r.OK {
					mu.Lock()
					if len(unread) < 20 {
						unread = append(unread, s.text+" -> "+strconv.Quote(r.Text))
					}
					mu.Unlock()
				}
				if r.OK {
					answered.Add(1)
					if r.Answer == s.answer {
						right.Add(1)
					} else {
						mu.Lock()
						wrong = append(wrong, s.text+" -> "+strconv.Quote(r.Text))
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	return ocrScore{n: len(samples), answered: int(answered.Load()), right: int(right.Load()), runs: int(runs.Load()), elapsed: time.Since(start), wrong: wrong, unread: unread}
}

// TestOCRMeasure (OCR_N=500 go test ./lab -run OCRMeasure -v) measures
// the OCR bot's reader on N fresh captchas.
func TestOCRMeasure(t *testing.T) {
	nStr := os.Getenv("OCR_N")
	if nStr == "" {
		t.Skip("OCR_N unset: the long measurement runs on demand")
	}
	n, _ := strconv.Atoi(nStr)
	o, err := NewOCR()
	if err != nil {
		t.Skip(err)
	}
	sc := measureOCR(t, o, ocrSamples(t, 1000, n), 2)
	t.Logf("%d captchas: answered %d, right %d (%.1f %%), precision %.1f %%; %d tesseract runs, %s wall (%.0f ms per captcha, 2 workers)",
		sc.n, sc.answered, sc.right, 100*float64(sc.right)/float64(sc.n), 100*float64(sc.right)/float64(max(1, sc.answered)),
		sc.runs, sc.elapsed.Round(time.Millisecond), float64(sc.elapsed.Milliseconds())*2/float64(sc.n))
	for i, w := range sc.wrong {
		if i < 10 {
			t.Log("wrong:", w)
		}
	}
	for _, u := range sc.unread {
		t.Log("not answered:", u)
	}
}
