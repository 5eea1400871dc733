package lab

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"seckill/captcha/pow"
)

// OCRBot reads captchas with tesseract (lab/ocr.go) and buys with what it
// read; on a pow sale it pays the work like any client.
const OCRBot = "ocr_bot"

// ocrStats counts what one OCR bot did with the captchas it fetched.
type ocrStats struct {
	captchas int // images fetched (challenge 200s)
	unread   int // not answered: the read fitted no captcha form, or the run ended
	answered int
	right    int // answers that got a path (path 200s)
	wrong    int // answers refused (challenge_failed)
	solved   int // reads finished
	solving  time.Duration
}

func (s ocrStats) String() string {
	per := time.Duration(0)
	if s.solved > 0 {
		per = s.solving / time.Duration(s.solved)
	}
	return fmt.Sprintf("%d captchas fetched (%s a read), %d answered, %d right, %d wrong, %d not answered (the read fitted no captcha form)",
		s.captchas, per.Round(time.Millisecond), s.answered, s.right, s.wrong, s.unread)
}

// playOCR runs one OCR bot until it bought, the sale sold out or ctx ended:
// challenge, read the image, answer only a read that fits the captcha's
// forms (a wrong answer burns the captcha; an unread one is simply
// replaced), then path and buy, each request at the bot's rate.
func (r *runner) playOCR(ctx context.Context, b *bot) {
	me := b.accounts[0]
	o, err := NewOCR()
	if err != nil {
		r.note("ocr_bot: %v: the bot did not play", err)
		return
	}
	var st ocrStats
	defer func() {
		if st.captchas > 0 {
			r.note("ocr_bot %d: %s", b.index, st)
		}
	}()
	for ctx.Err() == nil && !r.soldOut.Load() {
		if !b.wait(ctx) {
			return
		}
		ch := r.c.do(ctx, me, "challenge", "POST", r.itemURL+"/challenge", nil)
		switch {
		case ch.status == 200:
		case ch.code() == "already_bought" || ch.code() == "sold_out":
			return
		case ch.status == 429 || ch.status == 503:
			sleep(ctx, ch.retryAfter())
			continue
		default:
			continue
		}
		ans := "0"
		switch ch.str("kind") {
		case "captcha":
			img, err := decodeDataURL(ch.str("image"))
			if err != nil {
				r.note("ocr_bot: %v", err)
				return
			}
			st.captchas++
			start := time.Now()
			read, err := o.Solve(ctx, img)
			if err != nil {
				st.unread++
				if ctx.Err() == nil {
					r.note("ocr_bot: %v", err)
				}
				return
			}
			st.solved++
			st.solving += time.Since(start)
			if !read.OK {
				st.unread++
				continue
			}
			st.answered++
			ans = strconv.Itoa(read.Answer)
		case "pow":
			ans = pow.Solve(ch.str("seed"), int(ch.num("difficulty")))
		}
		if !b.wait(ctx) {
			if ch.str("kind") == "captcha" {
				st.answered--
				st.unread++
			}
			return
		}
		p := r.c.do(ctx, me, "path", "POST", r.itemURL+"/path", map[string]any{"challenge_id": ch.str("challenge_id"), "answer": ans})
		if p.status != 200 {
			if p.code() == "challenge_failed" {
				st.wrong++
			}
			continue
		}
		if ch.str("kind") == "captcha" {
			st.right++
		}
		if !b.wait(ctx) {
			return
		}
		rep := r.buy(ctx, me, me.ip, p.str("path"))
		if rep.status == 202 || rep.code() == "already_bought" || rep.code() == "sold_out" {
			return
		}
	}
}

// decodeDataURL returns the bytes of a data:image/png;base64 URL.
func decodeDataURL(u string) ([]byte, error) {
	const prefix = "data:image/png;base64,"
	if !strings.HasPrefix(u, prefix) {
		return nil, errors.New("captcha image is not a data:image/png;base64 URL")
	}
	b, err := base64.StdEncoding.DecodeString(u[len(prefix):])
	if err != nil {
		return nil, fmt.Errorf("decoding captcha image: %w", err)
	}
	return b, nil
}
