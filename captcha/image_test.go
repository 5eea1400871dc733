package captcha

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image/png"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/samples/*.png")

func TestNewMathExpression(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		text, answer := NewMathExpression(rng)
		var a, b, c int
		var o1, o2 string
		if n, err := fmt.Sscanf(text, "%d %s %d %s %d = ?", &a, &o1, &b, &o2, &c); n != 5 || err != nil {
			t.Fatalf("expression %q does not have the form a op b op c = ?: %v", text, err)
		}
		if got, ok := evalExpression(text); !ok || got != answer {
			t.Fatalf("%q: answer %d, evaluates to %d, %v", text, answer, got, ok)
		}
	}
}

func TestEvalExpression(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"7 + 3 * 2 = ?", 13, true},
		{"7+3*2", 13, true},
		{"1 - 9 * 9 = ?", -80, true},
		{"2 * 3 - 4 = ?", 2, true},
		{"2 * 3 * 4", 24, true},
		{"9 - 3 - 2", 4, true},
		{"5", 5, true},
		{"", 0, false},
		{"7 + = ?", 0, false},
		{"7 + 3 *", 0, false},
		{"- 3", 0, false},
		{"7 x 3", 0, false},
		{"7 + 3 = 10", 0, false},
	} {
		got, ok := evalExpression(tc.in)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("evalExpression(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRenderPNG(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	text, _ := NewMathExpression(rng)
	b, err := RenderPNG(text, rng)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds().Size(); got.X != ImageWidth || got.Y != ImageHeight {
		t.Fatalf("image is %v, want %dx%d", got, ImageWidth, ImageHeight)
	}
	// Deterministic for a given generator state.
	b2, err := RenderPNG(text, rand.New(rand.NewPCG(3, 4)))
	if err != nil {
		t.Fatal(err)
	}
	b3, _ := RenderPNG(text, rand.New(rand.NewPCG(3, 4)))
	if !bytes.Equal(b2, b3) {
		t.Fatal("two renders with the same seed differ")
	}
}

// TestWriteSamples keeps three sample images in testdata/samples for people
// to look at; `go test -run TestWriteSamples -update` rewrites them.
func TestWriteSamples(t *testing.T) {
	dir := filepath.Join("testdata", "samples")
	for i := range 3 {
		rng := rand.New(rand.NewPCG(2024, uint64(i)))
		text, answer := NewMathExpression(rng)
		name := filepath.Join(dir, fmt.Sprintf("sample%d.png", i+1))
		if !*update {
			b, err := os.ReadFile(name)
			if err != nil {
				t.Fatalf("%v (run `go test -run TestWriteSamples -update`)", err)
			}
			if _, err := png.Decode(bytes.NewReader(b)); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			continue
		}
		b, err := RenderPNG(text, rng)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s (answer %d)", name, text, answer)
	}
}

// ocrAttack is what a bot does with OCR output: common misreadings of the
// operators fixed, then the expression evaluated.
var ocrAttack = strings.NewReplacer("x", "*", "X", "*", "×", "*", "—", "-", "–", "-", "÷", "", "¥", "*", "O", "0", "o", "0", "l", "1", "I", "1", "|", "1")

// TestTesseractReadsCaptchas measures how many captchas Tesseract reads. The
// numbers are a measurement, not a pass criterion. A control run on
// undistorted renderings of the same expressions shows the OCR works here.
func TestTesseractReadsCaptchas(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("tesseract")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tesseract is not installed (apt-get install tesseract-ocr, or scripts/services.sh install)")
		}
		t.Skip("tesseract is not installed: skipping the OCR measurement (apt-get install tesseract-ocr)")
	}
	const n = 200
	exact, right, ran := ocrMeasure(t, bin, distorted, n)
	t.Logf("tesseract read %d/%d expressions exactly, %d/%d answers right", exact, n, right, n)
	if ran != n {
		t.Fatalf("tesseract ran on %d images, want %d", ran, n)
	}
	const nc = 50
	exact, right, _ = ocrMeasure(t, bin, plain, nc)
	t.Logf("control, undistorted: tesseract read %d/%d expressions exactly, %d/%d answers right", exact, nc, right, nc)
}

// ocrMeasure renders n captchas (fixed seeds) in style st, runs tesseract on
// each, a few at a time, and counts exact reads and right answers.
func ocrMeasure(t *testing.T, bin string, st style, n int) (exact, right, ran int64) {
	t.Helper()
	dir := t.TempDir()
	type job struct {
		text   string
		answer int
		file   string
	}
	jobs := make([]job, n)
	for i := range jobs {
		rng := rand.New(rand.NewPCG(42, uint64(i)))
		text, answer := NewMathExpression(rng)
		img, err := render(text, rng, st)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, fmt.Sprintf("%03d.png", i))
		if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		jobs[i] = job{text, answer, file}
	}
	var nExact, nRight, nRan atomic.Int64
	sem := make(chan struct{}, max(1, runtime.NumCPU()))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var examples []string
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, j.file, "stdout", "--psm", "7")
			cmd.Env = append(os.Environ(), "OMP_THREAD_LIMIT=1")
			out, err := cmd.Output()
			if err != nil {
				t.Errorf("tesseract %s: %v", j.file, err)
				return
			}
			nRan.Add(1)
			got := normaliseExpression(string(out))
			if got == normaliseExpression(j.text) {
				nExact.Add(1)
			}
			if v, ok := evalExpression(ocrAttack.Replace(got)); ok && v == j.answer {
				nRight.Add(1)
			}
			mu.Lock()
			if len(examples) < 6 {
				examples = append(examples, fmt.Sprintf("%q -> %q", j.text, got))
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("examples: %s", strings.Join(examples, "; "))
	return nExact.Load(), nRight.Load(), nRan.Load()
}

func BenchmarkRenderPNG(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	text, _ := NewMathExpression(rng)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := RenderPNG(text, rng); err != nil {
			b.Fatal(err)
		}
	}
}
