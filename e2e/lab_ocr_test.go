package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"seckill/edge"
	"seckill/lab"
)

// TestLabOCRCaptcha: configs/lab/ocr-captcha.yaml against the real servers.
// Honest lab users give up on the captcha; the OCR bots read captchas with
// tesseract and answer only reads that fit the captcha's forms. The test
// checks the bookkeeping exactly: every captcha the bots answered right
// (a path) is counted on the path route's 200s, every wrong one is a 400
// challenge_failed, units go only to the bots, the invariants hold.
func TestLabOCRCaptcha(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("tesseract"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tesseract is not installed (CI installs it: scripts/services.sh install)")
		}
		t.Skip("tesseract is not installed: skipping the OCR bot (apt-get install tesseract-ocr)")
	}
	env := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 8})
	sc, err := lab.Load("../configs/lab/ocr-captcha.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sc.Duration, sc.BotLinger = 8*time.Second, 8*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := lab.Run(ctx, sc, lab.Config{EdgeURL: env.pub.URL, AdminURL: env.adm.URL, AdminToken: env.token})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	t.Logf("ocr-captcha:\n%s", buf.String())
	for _, c := range rep.Invariants.Checks {
		if !c.OK {
			t.Errorf("invariant %+v", c)
		}
	}
	honest, ocr := rep.Actor(lab.Honest), rep.Actor(lab.OCRBot)
	if honest.UnitsWon != 0 || rep.HonestOutcomes["captcha_unsolved"] != sc.Honest.Users {
		t.Errorf("honest users: won %d, outcomes %v; want 0 and %d captcha_unsolved", honest.UnitsWon, rep.HonestOutcomes, sc.Honest.Users)
	}
	// The bots' own counts, from the report's notes.
	re := regexp.MustCompile(`^ocr_bot \d+: (\d+) captchas fetched \(.*\), (\d+) answered, (\d+) right, (\d+) wrong, (\d+) not answered`)
	var read, answered, right, wrong, unread, bots int
	for _, n := range rep.Notes {
		m := re.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		bots++
		v := func(i int) int { x, _ := strconv.Atoi(m[i]); return x }
		read, answered, right, wrong, unread = read+v(1), answered+v(2), right+v(3), wrong+v(4), unread+v(5)
	}
	t.Logf("OCR bots: %d captchas fetched, %d answered, %d right, %d wrong, %d not answered", read, answered, right, wrong, unread)
	if bots == 0 || read == 0 {
		t.Fatalf("no OCR bot read a captcha: notes %q", rep.Notes)
	}
	if answered+unread != read || right+wrong > answered {
		t.Errorf("read %d = answered %d + not answered %d; right %d + wrong %d <= answered", read, answered, unread, right, wrong)
	}
	// 200s: the challenges that brought a captcha, and the paths.
	if got := ocr.Outcomes["200"]; got != read+right {
		t.Errorf("200s %d, want %d captchas + %d paths: %v", got, read, right, ocr.Outcomes)
	}
	if got := ocr.Outcomes["400 challenge_failed"]; got != wrong {
		t.Errorf("400 challenge_failed %d, want the %d wrong answers: %v", got, wrong, ocr.Outcomes)
	}
	if ocr.UnitsWon > right || ocr.UnitsWon > 4 || rep.Invariants.Accepted != int64(ocr.UnitsWon) {
		t.Errorf("ocr_bot won %d units with %d right answers; accepted %d", ocr.UnitsWon, right, rep.Invariants.Accepted)
	}
}
