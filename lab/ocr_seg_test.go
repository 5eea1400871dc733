package lab

import (
	"bytes"
	"image/png"
	"maps"
	"testing"
)

// TestOCRSegmentation: how often the colour segmentation finds exactly the
// captcha's nine glyphs (seven of the expression, "=" and "?") on the fixed
// captchas of TestOCRAccuracy and more: the attack's cleaning, without
// tesseract. Deterministic: exact counts.
func TestOCRSegmentation(t *testing.T) {
	t.Parallel()
	const n = 200
	hist := map[int]int{}
	for _, s := range ocrSamples(t, 2026, n) {
		img, err := png.Decode(bytes.NewReader(s.png))
		if err != nil {
			t.Fatal(err)
		}
		_, crops := preprocess(img, defaultOCR)
		hist[len(crops)]++
	}
	t.Logf("glyphs found in %d captchas: %v", n, hist)
	// Measured: nine glyphs in 12 of 200; mostly one or two more (a
	// digit cut in two by a noise curve of another colour, a scrap of
	// curve kept).
	want := map[int]int{7: 1, 8: 3, 9: 12, 10: 88, 11: 67, 12: 22, 13: 6, 15: 1}
	if !maps.Equal(hist, want) {
		t.Fatalf("glyph counts %v, measured %v before", hist, want)
	}
}
