package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ErrNoTesseract: the tesseract binary is not installed.
var ErrNoTesseract = errors.New("tesseract is not installed (apt-get install tesseract-ocr, or scripts/services.sh install)")

// OCR reads the edge's math captchas the way an attacker would with free
// tools: it cleans the image in Go (colour segmentation, specks and noise
// curves dropped, digits turned upright, glyphs spaced apart, 4x upscale,
// threshold), runs tesseract on it (one text line, a whitelist of digits
// and operators) and fits the read to the captcha's known forms
// ("XXXX + a * b", "XXXX - a * b", "a * b + XXXX"; a lost "*" restored, a
// form guessed when both operators are lost). A read that fits none is not
// answered: the bot fetches a new captcha instead. Measured in
// docs/BENCHMARKS.md ("Captchas against OCR"): 0 of 500 right.
type OCR struct {
	bin      string
	variants []ocrParams
}

// NewOCR finds tesseract on the PATH.
func NewOCR() (*OCR, error) {
	bin, err := exec.LookPath("tesseract")
	if err != nil {
		return nil, ErrNoTesseract
	}
	return &OCR{bin: bin, variants: []ocrParams{defaultOCR}}, nil
}

// OCRRead is the outcome of one captcha.
type OCRRead struct {
	Text   string // what tesseract read (the last variant tried)
	Answer int
	OK     bool // the read fitted a captcha form; Answer is its value
	Guess  bool // the read lost both operators: Answer is one of its readings
	Runs   int  // tesseract runs
}

// Solve reads one captcha PNG.
func (o *OCR) Solve(ctx context.Context, pngData []byte) (OCRRead, error) {
	img, err := png.Decode(bytes.NewReader(pngData))
	if err != nil {
		return OCRRead{}, fmt.Errorf("decoding captcha: %w", err)
	}
	var r OCRRead
	for _, p := range o.variants {
		line, _ := preprocess(img, p)
		text, err := tesseract(ctx, o.bin, line, 7, "0123456789+-*=?")
		if err != nil {
			return r, err
		}
		r.Runs++
		r.Text = text
		if v, ok, guess := fitCaptcha(text); ok {
			r.Answer, r.OK, r.Guess = v, true, guess
			return r, nil
		}
	}
	return r, nil
}

var (
	// The forms, with the "*" optional: tesseract rarely reads Go's
	// small, raised asterisk, and its place is known anyway.
	formXab = regexp.MustCompile(`^([1-9][0-9]{3})([+-])([2-9])\*?([2-9])$`)
	formAbX = regexp.MustCompile(`^([2-9])\*?([2-9])\+([1-9][0-9]{3})$`)
	// Both operators lost: six digits, "XXXXab" or "abXXXX".
	formDigits = regexp.MustCompile(`^[0-9]{6}$`)
	ocrFix     = strings.NewReplacer("x", "*", "X", "*", "×", "*", "—", "-", "–", "-", " ", "", "\n", "")
)

// fitCaptcha fits an OCR read to the captcha forms and returns its value;
// guess says the read lost both operators and the value is the likeliest
// of its readings (a wrong answer only burns a captcha the bot would
// replace anyway, so an attacker answers).
func fitCaptcha(text string) (answer int, ok, guess bool) {
	s := ocrFix.Replace(text)
	if i := strings.IndexByte(s, '='); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimRight(s, "?")
	atoi := func(v string) int { n, _ := strconv.Atoi(v); return n }
	if m := formXab.FindStringSubmatch(s); m != nil {
		x, a, b := atoi(m[1]), atoi(m[3]), atoi(m[4])
		if m[2] == "-" {
			return x - a*b, true, false
		}
		return x + a*b, true, false
	}
	if m := formAbX.FindStringSubmatch(s); m != nil {
		return atoi(m[1])*atoi(m[2]) + atoi(m[3]), true, false
	}
	if formDigits.MatchString(s) {
		// "XXXX + ab", "XXXX - ab" and "ab + XXXX" are equally likely;
		// a leading digit of 0 or 1 rules "ab" out, a 0 or 1 among the
		// last two rules "XXXX ? ab" out.
		x, a, b := atoi(s[:4]), atoi(s[4:5]), atoi(s[5:6])
		if s[0] >= '2' && s[1] >= '2' && s[2] != '0' && (a < 2 || b < 2) {
			return atoi(s[0:1])*atoi(s[1:2]) + atoi(s[2:]), true, true
		}
		if s[0] != '0' && a >= 2 && b >= 2 {
			return x + a*b, true, true
		}
	}
	return 0, false, false
}

// tesseract runs the binary on img (PNG on stdin) and returns its text.
func tesseract(ctx context.Context, bin string, img image.Image, psm int, whitelist string) (string, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return "", fmt.Errorf("encoding png: %w", err)
	}
	args := []string{"stdin", "stdout", "--psm", fmt.Sprint(psm)}
	if whitelist != "" {
		args = append(args, "-c", "tessedit_char_whitelist="+whitelist)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cmd.Environ(), "OMP_THREAD_LIMIT=1")
	cmd.Stdin = &buf
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("running tesseract: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// ocrParams are the knobs of the preprocessing.
type ocrParams struct {
	scale        int     // upscale factor
	coreMax      float64 // pure ink: darkest channel below this (glyph colours have one below 40, specks none below 60)
	colourDist   float64 // L1 RGB distance within one ink colour
	aMin         float64 // ink: coverage of its colour at least this
	resMax       float64 // ink: L1 residual of that fit at most this
	minPix       int     // segments smaller than this are dropped
	longW        int     // segments wider than this are curves
	thinCol      float64 // columns of a curve with at most this much ink are dropped
	minDensity   float64 // short segments with less ink per column are curve pieces
	mergeOverlap float64 // pieces overlapping this fraction of the narrower are one glyph
	spread       int     // pixels added between glyphs
	minMass      float64 // glyphs with less ink (pixels of full coverage) are dropped
	thicken      bool    // grow strokes by a pixel (mends breaks)
	deskew       bool    // turn each glyph upright
	centre       bool    // centre each glyph vertically
	pad          int
}

var defaultOCR = ocrParams{scale: 4, coreMax: 60, colourDist: 45, aMin: 0.2, resMax: 40, minPix: 8, longW: 26,
	thinCol: 2.5, minDensity: 1.5, mergeOverlap: 0.5, spread: 6, minMass: 20, deskew: true, centre: true, pad: 20}

// preprocess turns a captcha into black glyphs on white, spaced apart.
//
// Each glyph is drawn in one colour, so the attack segments by colour:
// core pixels (nearly full coverage) joined to neighbours of the same
// colour, then grown into the antialiased and thin parts whose colour is
// that segment's colour blended with the background (a horizontal
// gradient: the median of each column). Segments too small are specks;
// segments wider than a glyph are noise curves, of which only the thick
// columns (a glyph of the same colour) are kept; short thin pieces are
// curve pieces. The rest, grouped into glyphs by column, are laid out a
// few pixels apart, upscaled and thresholded.
func preprocess(src image.Image, p ocrParams) (line *image.Gray, crops []*image.Gray) {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	px := make([][3]float64, w*h)
	for y := range h {
		for x := range w {
			r, g, bl, _ := src.At(b.Min.X+x, b.Min.Y+y).RGBA()
			px[y*w+x] = [3]float64{float64(r >> 8), float64(g >> 8), float64(bl >> 8)}
		}
	}
	bg := make([][3]float64, w)
	col := make([]float64, h)
	for x := range w {
		for c := range 3 {
			for y := range h {
				col[y] = px[y*w+x][c]
			}
			slices.Sort(col)
			bg[x][c] = col[h/2]
		}
	}
	l1 := func(a, b [3]float64) float64 { return abs(a[0]-b[0]) + abs(a[1]-b[1]) + abs(a[2]-b[2]) }

	// Ink colours: leader clustering of the nearly pure ink pixels.
	type cluster struct {
		sum [3]float64
		n   int
	}
	mean := func(c cluster) [3]float64 {
		return [3]float64{c.sum[0] / float64(c.n), c.sum[1] / float64(c.n), c.sum[2] / float64(c.n)}
	}
	var cls []cluster
	for i := range px {
		if min(px[i][0], px[i][1], px[i][2]) >= p.coreMax {
			continue
		}
		best, bd := -1, p.colourDist
		for k, c := range cls {
			if d := l1(mean(c), px[i]); d < bd {
				best, bd = k, d
			}
		}
		if best < 0 {
			cls = append(cls, cluster{})
			best = len(cls) - 1
		}
		for ch := range 3 {
			cls[best].sum[ch] += px[i][ch]
		}
		cls[best].n++
	}
	var colours [][3]float64
	for _, c := range cls {
		if c.n >= p.minPix {
			colours = append(colours, mean(c))
		}
	}
	// Every pixel that is one of those colours at some coverage over the
	// background gets its label and coverage.
	label := make([]int, w*h)
	alpha := make([]float64, w*h)
	for i := range px {
		label[i] = -1
		x := i % w
		bestRes := p.resMax
		for k, c := range colours {
			var d, e [3]float64
			num, den := 0.0, 0.0
			for ch := range 3 {
				d[ch] = bg[x][ch] - px[i][ch]
				e[ch] = bg[x][ch] - c[ch]
				num += d[ch] * e[ch]
				den += e[ch] * e[ch]
			}
			if den == 0 {
				continue
			}
			a := num / den
			if a < p.aMin {
				continue
			}
			res := 0.0
			for ch := range 3 {
				res += abs(d[ch] - min(a, 1)*e[ch])
			}
			if res <= bestRes {
				label[i], alpha[i], bestRes = k, min(a, 1), res
			}
		}
	}
	type piece struct {
		pix        []int
		minX, maxX int
	}
	// Segments: 8-connected pixels of one label.
	var all []piece
	seen := make([]bool, w*h)
	for i := range label {
		if label[i] < 0 || seen[i] {
			continue
		}
		pc := piece{minX: w, maxX: -1}
		stack := []int{i}
		seen[i] = true
		for len(stack) > 0 {
			j := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			pc.pix = append(pc.pix, j)
			x, y := j%w, j/w
			pc.minX, pc.maxX = min(pc.minX, x), max(pc.maxX, x)
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					xx, yy := x+dx, y+dy
					if xx < 0 || yy < 0 || xx >= w || yy >= h {
						continue
					}
					if k := yy*w + xx; !seen[k] && label[k] == label[i] {
						seen[k] = true
						stack = append(stack, k)
					}
				}
			}
		}
		all = append(all, pc)
	}
	var pieces []piece
	for _, s := range all {
		if len(s.pix) < p.minPix {
			continue // a speck
		}
		sw := s.maxX - s.minX + 1
		inkCol := make([]float64, sw)
		total := 0.0
		for _, j := range s.pix {
			inkCol[j%w-s.minX] += alpha[j]
			total += alpha[j]
		}
		pc := piece{minX: w, maxX: -1}
		if sw > p.longW {
			// A curve, maybe with a glyph of its colour: keep the
			// thick columns.
			for _, j := range s.pix {
				if inkCol[j%w-s.minX] > p.thinCol {
					pc.pix = append(pc.pix, j)
				}
			}
		} else {
			if total/float64(sw) < p.minDensity {
				continue // a short piece of a curve
			}
			pc.pix = s.pix
		}
		if len(pc.pix) < p.minPix {
			continue
		}
		for _, j := range pc.pix {
			pc.minX, pc.maxX = min(pc.minX, j%w), max(pc.maxX, j%w)
		}
		pieces = append(pieces, pc)
	}
	// Glyphs: pieces whose column ranges overlap mostly, left to right.
	slices.SortFunc(pieces, func(a, b piece) int { return (a.minX + a.maxX) - (b.minX + b.maxX) })
	var glyphs []piece
	for _, pc := range pieces {
		if n := len(glyphs); n > 0 {
			g := &glyphs[n-1]
			ov := min(g.maxX, pc.maxX) - max(g.minX, pc.minX) + 1
			if float64(ov) >= p.mergeOverlap*float64(min(g.maxX-g.minX, pc.maxX-pc.minX)+1) {
				g.pix = append(g.pix, pc.pix...)
				g.minX, g.maxX = min(g.minX, pc.minX), max(g.maxX, pc.maxX)
				continue
			}
		}
		glyphs = append(glyphs, piece{pix: slices.Clone(pc.pix), minX: pc.minX, maxX: pc.maxX})
	}
	// Each glyph: upright (the turn, within the captcha's 17 degrees,
	// that makes it narrowest) and vertically centred, then laid out
	// left to right, spread apart.
	const cell = 48
	var cells [][]float64
	for _, g := range glyphs {
		var cx, cy, m float64
		for _, j := range g.pix {
			m += alpha[j]
		}
		if m < p.minMass {
			continue // a speck or a scrap of a curve
		}
		m = 0
		for _, j := range g.pix {
			cx += float64(j%w) * alpha[j]
			cy += float64(j/w) * alpha[j]
			m += alpha[j]
		}
		cx, cy = cx/m, cy/m
		src := make([]float64, cell*cell)
		for _, j := range g.pix {
			x, y := j%w-int(cx)+cell/2, j/w-int(cy)+cell/2
			if x >= 0 && y >= 0 && x < cell && y < cell {
				src[y*cell+x] = alpha[j]
			}
		}
		best, bestW := src, width(src, cell)
		top, bot := h, -1
		for _, j := range g.pix {
			top, bot = min(top, j/w), max(bot, j/w)
		}
		// Only tall glyphs (digits) are turned: an operator's
		// narrowest turn is not upright.
		if p.deskew && float64(bot-top+1) > 1.3*float64(g.maxX-g.minX+1) {
			for a := -0.35; a <= 0.351; a += 0.05 {
				r := rotate(src, cell, a)
				if wd := width(r, cell); wd < bestW-0.5 {
					best, bestW = r, wd
				}
			}
		}
		c := centre(best, cell, p.centre)
		if p.thicken {
			c = thicken(c, cell)
		}
		cells = append(cells, c)
	}
	// Trim each cell to its columns with ink.
	type span struct{ lo, hi int }
	spans := make([]span, len(cells))
	cw := p.spread
	for i, c := range cells {
		lo, hi := cell, -1
		for y := range cell {
			for x := range cell {
				if c[y*cell+x] > 0.2 {
					lo, hi = min(lo, x), max(hi, x)
				}
			}
		}
		if hi < 0 {
			lo, hi = 0, -1
		}
		spans[i] = span{lo, hi}
		cw += hi - lo + 1 + p.spread
	}
	ink := make([]float64, cw*cell) // 0 white .. 1 black
	x0 := p.spread
	for i, c := range cells {
		sp := spans[i]
		for y := range cell {
			for x := sp.lo; x <= sp.hi; x++ {
				ink[y*cw+x0+x-sp.lo] = c[y*cell+x]
			}
		}
		gw := sp.hi - sp.lo + 1
		gink := make([]float64, max(gw, 1)*cell)
		for y := range cell {
			for x := sp.lo; x <= sp.hi; x++ {
				gink[y*gw+x-sp.lo] = c[y*cell+x]
			}
		}
		crops = append(crops, upscale(gink, max(gw, 1), cell, p.scale, p.pad))
		x0 += gw + p.spread
	}
	return upscale(ink, cw, cell, p.scale, p.pad), crops
}

// width is the spread of a cell's ink columns: from the 5th to the 95th
// percentile of its column mass.
func width(c []float64, n int) float64 {
	colm := make([]float64, n)
	total := 0.0
	for y := range n {
		for x := range n {
			colm[x] += c[y*n+x]
			total += c[y*n+x]
		}
	}
	if total == 0 {
		return 0
	}
	acc, lo, hi := 0.0, -1, -1
	for x := range n {
		acc += colm[x]
		if lo < 0 && acc >= 0.05*total {
			lo = x
		}
		if hi < 0 && acc >= 0.95*total {
			hi = x
		}
	}
	return float64(hi - lo)
}

// rotate turns an n x n cell by a radians about its centre (bilinear).
func rotate(c []float64, n int, a float64) []float64 {
	out := make([]float64, n*n)
	cs, sn := math.Cos(a), math.Sin(a)
	h := float64(n) / 2
	for y := range n {
		for x := range n {
			dx, dy := float64(x)-h, float64(y)-h
			sx, sy := cs*dx+sn*dy+h, -sn*dx+cs*dy+h
			x0, y0 := int(math.Floor(sx)), int(math.Floor(sy))
			if x0 < 0 || y0 < 0 || x0+1 >= n || y0+1 >= n {
				continue
			}
			fx, fy := sx-float64(x0), sy-float64(y0)
			out[y*n+x] = (c[y0*n+x0]*(1-fx)+c[y0*n+x0+1]*fx)*(1-fy) + (c[(y0+1)*n+x0]*(1-fx)+c[(y0+1)*n+x0+1]*fx)*fy
		}
	}
	return out
}

// thicken sets each pixel of an n x n cell to the maximum of its 3x3
// neighbourhood.
func thicken(c []float64, n int) []float64 {
	out := make([]float64, n*n)
	for y := range n {
		for x := range n {
			v := 0.0
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					if xx, yy := x+dx, y+dy; xx >= 0 && yy >= 0 && xx < n && yy < n {
						v = max(v, c[yy*n+xx])
					}
				}
			}
			out[y*n+x] = v
		}
	}
	return out
}

// centre moves a cell's ink vertically so its bounding box is centred
// (on), or leaves it (off).
func centre(c []float64, n int, on bool) []float64 {
	if !on {
		return c
	}
	top, bot := n, -1
	for y := range n {
		for x := range n {
			if c[y*n+x] > 0.2 {
				top, bot = min(top, y), max(bot, y)
				break
			}
		}
	}
	if bot < 0 {
		return c
	}
	d := n/2 - (top+bot)/2
	out := make([]float64, n*n)
	for y := range n {
		if yy := y + d; yy >= 0 && yy < n {
			copy(out[yy*n:(yy+1)*n], c[y*n:(y+1)*n])
		}
	}
	return out
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// upscale draws the ink map s times larger, bilinearly, thresholded at
// half, black on white with a margin.
func upscale(ink []float64, w, h, s, pad int) *image.Gray {
	W, H := w*s, h*s
	out := image.NewGray(image.Rect(0, 0, W+2*pad, H+2*pad))
	draw.Draw(out, out.Bounds(), image.White, image.Point{}, draw.Src)
	for Y := range H {
		for X := range W {
			fx := (float64(X)+0.5)/float64(s) - 0.5
			fy := (float64(Y)+0.5)/float64(s) - 0.5
			fx = min(max(fx, 0), float64(w-1))
			fy = min(max(fy, 0), float64(h-1))
			x0, y0 := int(fx), int(fy)
			x1, y1 := min(x0+1, w-1), min(y0+1, h-1)
			ax, ay := fx-float64(x0), fy-float64(y0)
			v := (ink[y0*w+x0]*(1-ax)+ink[y0*w+x1]*ax)*(1-ay) + (ink[y1*w+x0]*(1-ax)+ink[y1*w+x1]*ax)*ay
			if v >= 0.5 {
				out.SetGray(X+pad, Y+pad, color.Gray{0})
			}
		}
	}
	return out
}
