package captcha

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"strings"
	"sync"

	"golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/font/sfnt"
	"golang.org/x/image/math/f64"
	"golang.org/x/image/math/fixed"
)

// Size of a captcha image.
const (
	ImageWidth  = 240
	ImageHeight = 60
)

// fontSize is the nominal glyph size in pixels, varied per glyph.
const fontSize = 28.0

// style is a set of distortion settings.
type style struct {
	maxRotation  float64 // radians, per glyph
	maxYJitter   float64 // pixels, per glyph
	glyphOverlap float64 // fraction of an advance glyphs may overlap
	tracking     float64 // pixels added between glyphs
	noiseLines   int     // curves across the text, in glyph-like colours
	lineRadius   float64 // their half width is lineRadius..2*lineRadius
	noiseDots    int     // specks
	warpAmpX     float64 // sine warp amplitudes, pixels
	warpAmpY     float64
	plain        bool // black glyphs on white, no grain (a control for OCR tests)
}

// distorted is the style of RenderPNG.
//
// Bounded for legibility (a four-digit number must stay readable): glyphs
// barely touch, turn at most 17 degrees and the warp moves a pixel at most
// 2 to 2.5 pixels. testdata/samples holds renderings for people to judge.
var distorted = style{
	maxRotation:  0.3,
	maxYJitter:   4,
	glyphOverlap: 0.04,
	tracking:     2.5,
	noiseLines:   3,
	lineRadius:   0.3,
	noiseDots:    100,
	warpAmpX:     2,
	warpAmpY:     2.5,
}

// plain is undistorted text, the control of the OCR measurement.
var plain = style{plain: true}

var (
	fontsOnce sync.Once
	fonts     []*sfnt.Font
	fontsErr  error
)

func loadFonts() ([]*sfnt.Font, error) {
	fontsOnce.Do(func() {
		for _, ttf := range [][]byte{goregular.TTF, gomono.TTF} {
			f, err := opentype.Parse(ttf)
			if err != nil {
				fontsErr = fmt.Errorf("captcha: parsing font: %w", err)
				return
			}
			fonts = append(fonts, f)
		}
	})
	return fonts, fontsErr
}

// RenderPNG draws text (spaces are only gaps) on a 160x50 PNG, distorted
// against OCR while staying readable: each glyph has its own font (Go
// Regular or Go Mono), size, colour, rotation and vertical offset, glyphs
// overlap a little, curves in glyph-like colours cross the text, specks are
// sprinkled over it and the whole image is warped by two sine waves.
func RenderPNG(text string, rng *rand.Rand) ([]byte, error) {
	img, err := render(text, rng, distorted)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("captcha: encoding png: %w", err)
	}
	return buf.Bytes(), nil
}

type glyph struct {
	mask    *image.Alpha
	advance float64
	col     color.RGBA
}

func render(text string, rng *rand.Rand, st style) (*image.RGBA, error) {
	fs, err := loadFonts()
	if err != nil {
		return nil, err
	}
	// Faces are not safe for concurrent use: make them per image.
	faces := make([]font.Face, len(fs))
	for i, f := range fs {
		faces[i], err = opentype.NewFace(f, &opentype.FaceOptions{Size: fontSize, DPI: 72, Hinting: font.HintingNone})
		if err != nil {
			return nil, fmt.Errorf("captcha: making font face: %w", err)
		}
		defer faces[i].Close()
	}

	// Glyphs, each rotated in its own mask.
	var gs []glyph
	gap := 0.0
	for _, r := range text {
		if r == ' ' {
			gap += 2
			continue
		}
		face := faces[rng.IntN(len(faces))]
		scale := 1.0 + 0.15*rng.Float64()
		rot := (2*rng.Float64() - 1) * st.maxRotation
		digit := r >= '0' && r <= '9'
		if !digit {
			// Operators are small, thin glyphs and a turned minus looks
			// like noise: make them bigger, bolder and straighter.
			scale *= 1.15
			rot /= 3
		}
		col := darkColour(rng)
		if st.plain {
			face, scale, col = faces[0], 1, color.RGBA{0, 0, 0, 255}
		}
		m, adv := glyphMask(face, r, scale, rot)
		if !digit && !st.plain {
			m = dilate(m)
		}
		if len(gs) > 0 {
			gs[len(gs)-1].advance += gap
		}
		gap = 0
		gs = append(gs, glyph{mask: m, advance: adv * scale, col: col})
	}
	total := 0.0
	for i, g := range gs {
		if i < len(gs)-1 {
			total += g.advance*(1-st.glyphOverlap/2) + st.tracking
		} else {
			total += g.advance
		}
	}
	// Squeeze the text if it would not fit.
	squeeze := 1.0
	if avail := float64(ImageWidth - 8); total > avail {
		squeeze = avail / total
		total = avail
	}

	img := image.NewRGBA(image.Rect(0, 0, ImageWidth, ImageHeight))
	if st.plain {
		draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	} else {
		background(img, rng)
	}
	x := (float64(ImageWidth)-total)/2 + (2*rng.Float64()-1)*2
	for _, g := range gs {
		b := g.mask.Bounds()
		cx := x + g.advance*squeeze/2
		cy := float64(ImageHeight)/2 + (2*rng.Float64()-1)*st.maxYJitter
		at := image.Pt(int(math.Round(cx))-b.Dx()/2, int(math.Round(cy))-b.Dy()/2)
		draw.DrawMask(img, image.Rectangle{at, at.Add(b.Size())}, image.NewUniform(g.col), image.Point{}, g.mask, b.Min, draw.Over)
		x += (g.advance*(1-st.glyphOverlap*rng.Float64()) + st.tracking) * squeeze
	}
	for range st.noiseLines {
		curve(img, rng, glyphLikeColour(rng, gs), st.lineRadius*(1+rng.Float64()))
	}
	for range st.noiseDots {
		c := randomColour(rng, 60, 230)
		stamp(img, rng.Float64()*ImageWidth, rng.Float64()*ImageHeight, 0.5+rng.Float64()*0.7, c)
	}
	if st.warpAmpX == 0 && st.warpAmpY == 0 {
		return img, nil
	}
	return warp(img, rng, st), nil
}

// glyphMask draws r with face into an alpha mask, scaled and rotated about
// its centre. It returns the mask and the unscaled advance in pixels.
func glyphMask(face font.Face, r rune, scale, angle float64) (*image.Alpha, float64) {
	const size = 48
	src := image.NewAlpha(image.Rect(0, 0, size, size))
	adv, _ := face.GlyphAdvance(r)
	a := float64(adv) / 64
	m := face.Metrics()
	asc, desc := float64(m.Ascent)/64, float64(m.Descent)/64
	d := font.Drawer{Dst: src, Src: image.Opaque, Face: face}
	// Centre the glyph cell: x advance, y between descent and cap height.
	d.Dot = fixed.Point26_6{
		X: fixed.Int26_6((size/2 - a/2) * 64),
		Y: fixed.Int26_6((size/2 + (asc*0.7-desc)/2) * 64),
	}
	d.DrawString(string(r))
	dst := image.NewAlpha(src.Bounds())
	c, s := math.Cos(angle)*scale, math.Sin(angle)*scale
	h := size / 2.0
	// Source to destination: translate centre to origin, rotate and scale, move back.
	s2d := f64.Aff3{c, -s, h - c*h + s*h, s, c, h - s*h - c*h}
	draw.BiLinear.Transform(dst, s2d, src, src.Bounds(), draw.Src, nil)
	return dst, a
}

// dilate returns m with every pixel the maximum of its 3x3 neighbourhood,
// which thickens strokes by about one pixel.
func dilate(m *image.Alpha) *image.Alpha {
	b := m.Bounds()
	out := image.NewAlpha(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			var v uint8
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					if p := (image.Point{x + dx, y + dy}); p.In(b) {
						v = max(v, m.AlphaAt(p.X, p.Y).A)
					}
				}
			}
			out.SetAlpha(x, y, color.Alpha{v})
		}
	}
	return out
}

func randomColour(rng *rand.Rand, lo, hi int) color.RGBA {
	ch := func() uint8 { return uint8(lo + rng.IntN(hi-lo+1)) }
	return color.RGBA{ch(), ch(), ch(), 255}
}

// darkColour returns a saturated dark colour for a glyph.
func darkColour(rng *rand.Rand) color.RGBA {
	c := [3]uint8{uint8(rng.IntN(40)), uint8(rng.IntN(80)), uint8(40 + rng.IntN(90))}
	rng.Shuffle(3, func(i, j int) { c[i], c[j] = c[j], c[i] })
	return color.RGBA{c[0], c[1], c[2], 255}
}

// glyphLikeColour returns the colour of a random glyph, a little changed,
// so that colour alone does not tell noise from text.
func glyphLikeColour(rng *rand.Rand, gs []glyph) color.RGBA {
	if len(gs) == 0 {
		return darkColour(rng)
	}
	c := gs[rng.IntN(len(gs))].col
	j := func(v uint8) uint8 { return uint8(min(255, max(0, int(v)+rng.IntN(41)-20))) }
	return color.RGBA{j(c.R), j(c.G), j(c.B), 255}
}

// background fills img with a light gradient and faint grain.
func background(img *image.RGBA, rng *rand.Rand) {
	a, b := randomColour(rng, 215, 255), randomColour(rng, 215, 255)
	w := float64(img.Bounds().Dx() - 1)
	for y := 0; y < img.Bounds().Dy(); y++ {
		for x := 0; x < img.Bounds().Dx(); x++ {
			t := float64(x) / w
			n := rng.IntN(17) - 8
			mix := func(p, q uint8) uint8 {
				return uint8(min(255, max(0, int(float64(p)*(1-t)+float64(q)*t)+n)))
			}
			img.SetRGBA(x, y, color.RGBA{mix(a.R, b.R), mix(a.G, b.G), mix(a.B, b.B), 255})
		}
	}
}

// curve draws a random sine-like stroke across most of the image.
func curve(img *image.RGBA, rng *rand.Rand, c color.RGBA, width float64) {
	x0 := rng.Float64() * ImageWidth * 0.3
	x1 := ImageWidth * (0.7 + 0.3*rng.Float64())
	y0 := ImageHeight * (0.25 + 0.5*rng.Float64())
	slope := (2*rng.Float64() - 1) * 0.25
	amp := 3 + rng.Float64()*9
	period := 40 + rng.Float64()*80
	phase := rng.Float64() * 2 * math.Pi
	for x := x0; x <= x1; x += 0.4 {
		y := y0 + slope*(x-x0) + amp*math.Sin(2*math.Pi*x/period+phase)
		stamp(img, x, y, width, c)
	}
}

// stamp blends a soft disc of radius r at (cx, cy).
func stamp(img *image.RGBA, cx, cy, r float64, c color.RGBA) {
	b := img.Bounds()
	for y := int(cy - r - 1); y <= int(cy+r+1); y++ {
		for x := int(cx - r - 1); x <= int(cx+r+1); x++ {
			if !(image.Point{x, y}).In(b) {
				continue
			}
			d := math.Hypot(float64(x)+0.5-cx, float64(y)+0.5-cy)
			a := min(1, max(0, r+0.5-d))
			if a <= 0 {
				continue
			}
			o := img.RGBAAt(x, y)
			bl := func(p, q uint8) uint8 { return uint8(float64(p)*(1-a) + float64(q)*a) }
			img.SetRGBA(x, y, color.RGBA{bl(o.R, c.R), bl(o.G, c.G), bl(o.B, c.B), 255})
		}
	}
}

// warp moves every pixel by two sine waves (x by y, y by x), sampling
// bilinearly.
func warp(src *image.RGBA, rng *rand.Rand, st style) *image.RGBA {
	b := src.Bounds()
	dst := image.NewRGBA(b)
	px, py := 25+rng.Float64()*20, 50+rng.Float64()*60
	phx, phy := rng.Float64()*2*math.Pi, rng.Float64()*2*math.Pi
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			sx := float64(x) + st.warpAmpX*math.Sin(2*math.Pi*float64(y)/px+phx)
			sy := float64(y) + st.warpAmpY*math.Sin(2*math.Pi*float64(x)/py+phy)
			dst.SetRGBA(x, y, bilinear(src, sx, sy))
		}
	}
	return dst
}

func bilinear(img *image.RGBA, x, y float64) color.RGBA {
	b := img.Bounds()
	x = min(max(x, 0), float64(b.Dx()-1))
	y = min(max(y, 0), float64(b.Dy()-1))
	x0, y0 := int(x), int(y)
	x1, y1 := min(x0+1, b.Dx()-1), min(y0+1, b.Dy()-1)
	fx, fy := x-float64(x0), y-float64(y0)
	p00, p10, p01, p11 := img.RGBAAt(x0, y0), img.RGBAAt(x1, y0), img.RGBAAt(x0, y1), img.RGBAAt(x1, y1)
	l := func(a, b, c, d uint8) uint8 {
		top := float64(a)*(1-fx) + float64(b)*fx
		bot := float64(c)*(1-fx) + float64(d)*fx
		return uint8(top*(1-fy) + bot*fy + 0.5)
	}
	return color.RGBA{l(p00.R, p10.R, p01.R, p11.R), l(p00.G, p10.G, p01.G, p11.G), l(p00.B, p10.B, p01.B, p11.B), 255}
}

// normaliseExpression removes all white space from s.
func normaliseExpression(s string) string { return strings.Join(strings.Fields(s), "") }
