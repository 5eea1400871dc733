package lab

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// OCRCounts counts what an OCR solver read; safe for concurrent use.
type OCRCounts struct {
	Read     atomic.Int64 // captchas read
	Answered atomic.Int64 // reads that fitted a captcha form (guesses included)
	Guessed  atomic.Int64 // answered reads that had lost both operators
	Nanos    atomic.Int64 // time spent reading
}

func (c *OCRCounts) String() string {
	n := c.Read.Load()
	per := time.Duration(0)
	if n > 0 {
		per = time.Duration(c.Nanos.Load() / n)
	}
	return fmt.Sprintf("%d captchas read (%s a read), %d answered (%d of them guesses), %d not answered (the read fitted no captcha form)",
		n, per.Round(time.Millisecond), c.Answered.Load(), c.Guessed.Load(), n-c.Answered.Load())
}

// Solver is the OCR as the lab's captcha solver (Config.SolveCaptcha, used
// by the ocr_bot kind): it answers only reads that fit a captcha form, so
// the bot fetches a new captcha instead of burning one on a read that
// cannot be right. counts, when not nil, counts the reads.
func (o *OCR) Solver(counts *OCRCounts) CaptchaSolver {
	return func(ctx context.Context, png []byte) (string, bool, error) {
		start := time.Now()
		r, err := o.Solve(ctx, png)
		if err != nil {
			if ctx.Err() != nil {
				return "", false, nil // the run ended: not a failure of the OCR
			}
			return "", false, err
		}
		if counts != nil {
			counts.Read.Add(1)
			counts.Nanos.Add(int64(time.Since(start)))
			if r.OK {
				counts.Answered.Add(1)
			}
			if r.Guess {
				counts.Guessed.Add(1)
			}
		}
		if !r.OK {
			return "", false, nil
		}
		return strconv.Itoa(r.Answer), true, nil
	}
}

// HasBot reports whether the scenario has bots of the kind.
func (s *Scenario) HasBot(kind string) bool {
	for _, b := range s.Bots {
		if b.Kind == kind && b.Count > 0 {
			return true
		}
	}
	return false
}
