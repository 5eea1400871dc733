package e2e

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"seckill/edge"
	"seckill/lab"
)

// TestLabOCRCaptcha: configs/lab/ocr-captcha.yaml against the real servers,
// with the lab's OCR as the captcha solver (what `seckill lab run` sets when
// tesseract is installed). Honest lab users give up on the captcha; the OCR
// bots read captchas and answer only reads that fit the captcha's forms.
// Units go only to bots that answered right; every wrong answer is a 400
// challenge_failed; the invariants hold.
func TestLabOCRCaptcha(t *testing.T) {
	t.Parallel()
	o, err := lab.NewOCR()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: CI installs it (scripts/services.sh install)", err)
		}
		t.Skipf("skipping the OCR bot: %v", err)
	}
	env := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 8})
	sc, err := lab.Load("../configs/lab/ocr-captcha.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var counts lab.OCRCounts
	rep, err := lab.Run(ctx, sc, lab.Config{EdgeURL: env.pub.URL, AdminURL: env.adm.URL, AdminToken: env.token, SolveCaptcha: o.Solver(&counts)})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	t.Logf("ocr-captcha:\n%s\nocr: %s", buf.String(), &counts)
	for _, c := range rep.Invariants.Checks {
		if !c.OK {
			t.Errorf("invariant %+v", c)
		}
	}
	honest, ocr := rep.Actor(lab.Honest), rep.Actor(lab.OCRBot)
	if honest.UnitsWon != 0 || rep.HonestOutcomes["captcha_unsolved"] != sc.Honest.Users {
		t.Errorf("honest users: won %d, outcomes %v; want 0 and %d captcha_unsolved", honest.UnitsWon, rep.HonestOutcomes, sc.Honest.Users)
	}
	read, answered := int(counts.Read.Load()), int(counts.Answered.Load())
	if read == 0 {
		t.Fatalf("the OCR bots read no captcha: %v", ocr.Outcomes)
	}
	// Each read is a captcha the edge handed out; each answer one path
	// request at most (the run may end first), refused as
	// challenge_failed when wrong; a unit needs a right answer.
	if n := ocr.ByRoute["challenge"]; n < read {
		t.Errorf("%d challenge requests, %d captchas read", n, read)
	}
	wrong := ocr.Outcomes["400 challenge_failed"]
	if wrong > answered || ocr.UnitsWon > answered-wrong || ocr.UnitsWon > 4 {
		t.Errorf("answered %d, wrong %d, units won %d", answered, wrong, ocr.UnitsWon)
	}
	if rep.Invariants.Accepted != int64(ocr.UnitsWon) {
		t.Errorf("accepted %d, ocr_bot won %d", rep.Invariants.Accepted, ocr.UnitsWon)
	}
}
