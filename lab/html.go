package lab

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// series is one line of a chart.
type series struct {
	Name  string
	Color string
	X, Y  []float64
}

// lineChart draws series as an inline SVG (no external assets).
func lineChart(title, xLabel, yLabel string, ss []series) template.HTML {
	const w, h, l, r, t, b = 760.0, 280.0, 60.0, 150.0, 30.0, 40.0
	var maxX, maxY float64
	for _, s := range ss {
		for i := range s.X {
			maxX = math.Max(maxX, s.X[i])
			maxY = math.Max(maxY, s.Y[i])
		}
	}
	if maxX == 0 {
		maxX = 1
	}
	maxY = niceCeil(maxY)
	px := func(x float64) float64 { return l + x/maxX*(w-l-r) }
	py := func(y float64) float64 { return h - b - y/maxY*(h-t-b) }
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`, w, h, w, h)
	fmt.Fprintf(&sb, `<text x="%.0f" y="18" font-size="14" font-weight="bold">%s</text>`, l, template.HTMLEscapeString(title))
	for i := 0; i <= 4; i++ {
		y := maxY * float64(i) / 4
		fmt.Fprintf(&sb, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="end">%s</text>`,
			l, w-r, py(y), py(y), l-4, py(y)+4, fmtNum(y))
		x := maxX * float64(i) / 4
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, px(x), h-b+14, fmtNum(x))
	}
	fmt.Fprintf(&sb, `<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="#333"/><line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="#333"/>`,
		l, w-r, h-b, h-b, l, l, t, h-b)
	fmt.Fprintf(&sb, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`, (l+w-r)/2, h-6, template.HTMLEscapeString(xLabel))
	fmt.Fprintf(&sb, `<text transform="translate(14 %.0f) rotate(-90)" text-anchor="middle">%s</text>`, (t+h-b)/2, template.HTMLEscapeString(yLabel))
	for i, s := range ss {
		var pts []string
		for j := range s.X {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.X[j]), py(s.Y[j])))
		}
		if len(pts) == 1 {
			fmt.Fprintf(&sb, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, px(s.X[0]), py(s.Y[0]), s.Color)
		}
		fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`, s.Color, strings.Join(pts, " "))
		ly := t + 10 + float64(i)*16
		fmt.Fprintf(&sb, `<rect x="%.0f" y="%.0f" width="12" height="3" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`,
			w-r+10, ly-3, s.Color, w-r+26, ly+2, template.HTMLEscapeString(s.Name))
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}

// barChart draws horizontal bars, one per label.
func barChart(title string, labels []string, values []float64, unit string, colors []string) template.HTML {
	const w, l, rowH = 760.0, 150.0, 22.0
	h := 40 + rowH*float64(len(labels))
	maxV := 0.0
	for _, v := range values {
		maxV = math.Max(maxV, v)
	}
	if maxV == 0 {
		maxV = 1
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`, w, h, w, h)
	fmt.Fprintf(&sb, `<text x="%.0f" y="18" font-size="14" font-weight="bold">%s</text>`, l, template.HTMLEscapeString(title))
	for i, lab := range labels {
		y := 30 + rowH*float64(i)
		bw := values[i] / maxV * (w - l - 120)
		fmt.Fprintf(&sb, `<text x="%.0f" y="%.0f" text-anchor="end">%s</text><rect x="%.0f" y="%.0f" width="%.1f" height="%.0f" fill="%s"/><text x="%.1f" y="%.0f">%s%s</text>`,
			l-6, y+13, template.HTMLEscapeString(lab), l, y+2, bw, rowH-6, colors[i], l+bw+4, y+13, fmtNum(values[i]), unit)
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e7:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2g", v)
	}
}

const (
	green, red, orange, purple, grey, blue = "#2a9d4b", "#d1495b", "#edae49", "#7b4fa0", "#777777", "#00798c"
)

// charts returns the report's charts.
func (rep *Report) charts() []template.HTML {
	var x []float64
	col := func(f func(SecondBucket) float64) []float64 {
		out := make([]float64, len(rep.Series))
		for i, b := range rep.Series {
			out[i] = f(b)
		}
		return out
	}
	for _, b := range rep.Series {
		x = append(x, float64(b.Second))
	}
	out := []template.HTML{
		lineChart("Requests per second by outcome", "seconds since the sale started", "requests/s", []series{
			{"2xx", green, x, col(func(b SecondBucket) float64 { return float64(b.OK) })},
			{"4xx rejected", red, x, col(func(b SecondBucket) float64 { return float64(b.Rejected) })},
			{"429 limited", orange, x, col(func(b SecondBucket) float64 { return float64(b.Limited) })},
			{"5xx", purple, x, col(func(b SecondBucket) float64 { return float64(b.Unavailable) })},
			{"transport errors", grey, x, col(func(b SecondBucket) float64 { return float64(b.Errors) })},
		}),
		lineChart("Latency percentiles (all requests)", "seconds since the sale started", "ms", []series{
			{"p50", blue, x, col(func(b SecondBucket) float64 { return b.P50Ms })},
			{"p99", red, x, col(func(b SecondBucket) float64 { return b.P99Ms })},
		}),
		lineChart("Successful requests: honest vs bots", "seconds since the sale started", "2xx/s", []series{
			{"honest 2xx", green, x, col(func(b SecondBucket) float64 { return float64(b.HonestOK) })},
			{"bot 2xx", red, x, col(func(b SecondBucket) float64 { return float64(b.BotOK) })},
		}),
	}
	var labels, colors []string
	var won, succ []float64
	for _, a := range rep.Actors {
		labels = append(labels, a.Kind)
		won = append(won, float64(a.UnitsWon))
		succ = append(succ, math.Round(a.SuccessRate*1000)/10)
		if a.Kind == Honest {
			colors = append(colors, green)
		} else {
			colors = append(colors, red)
		}
	}
	out = append(out, barChart("Units won by actor kind", labels, won, "", colors),
		barChart("Share of 2xx answers by actor kind", labels, succ, " %", colors))
	var sx, left, res, ord []float64
	for _, s := range rep.Stock {
		sx = append(sx, s.At.Seconds())
		left = append(left, float64(s.StockLeft))
		res = append(res, float64(s.Reserved))
		ord = append(ord, float64(s.Orders))
	}
	out = append(out, lineChart("Stock over time (stats polled every 250 ms)", "seconds since the sale started", "units", []series{
		{"stock_left", blue, sx, left}, {"reserved", orange, sx, res}, {"orders", green, sx, ord},
	}))
	return out
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"outcomes": topOutcomes,
	"ms":       func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"pct":      func(f float64) string { return fmt.Sprintf("%.1f%%", f*100) },
	"time":     func(t time.Time) string { return t.Format(time.RFC3339) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seckill lab: {{.R.Scenario}}</title>
<style>
body{font-family:sans-serif;margin:2em;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px;vertical-align:top}
.PASS{color:#2a9d4b}.FAIL,.BOTS_WON{color:#d1495b}.ATTACK_WON,.ATTACK_LOST{color:#b36b00}svg{display:block;margin:1em 0}
</style></head><body>
<h1>seckill lab: {{.R.Scenario}} — <span class="{{.R.Verdict}}">{{.R.Verdict}}</span></h1>
<p class="{{.R.Verdict}}"><b>{{.R.Headline}}</b></p>
<p>{{.R.Description}}</p>
<p>Item {{.R.Item}}, {{.R.Units}} units, challenge {{.R.Challenge}}, defences off: {{if .R.DefencesOff}}{{.R.DefencesOff}}{{else}}none{{end}},
X-Forwarded-For {{if .R.XFF}}sent{{else}}not sent{{end}}. Started {{time .R.StartedAt}}, played {{printf "%.1f" .R.Played}} s
(honest users done after {{printf "%.1f" .R.HonestDoneAfter}} s), {{.R.Requests}} requests.</p>
<h2>Actors</h2>
<table><tr><th>actor</th><th>n</th><th>requests</th><th>units won</th><th>2xx share</th><th>p50 ms</th><th>p99 ms</th><th>outcomes</th></tr>
{{range .R.Actors}}<tr><td>{{.Kind}}</td><td>{{.Actors}}</td><td>{{.Requests}}</td><td>{{.UnitsWon}}</td><td>{{pct .SuccessRate}}</td><td>{{ms .P50Ms}}</td><td>{{ms .P99Ms}}</td><td>{{outcomes .Outcomes}}{{if .Limits}}<br>429 by rule: {{outcomes .Limits}}{{end}}</td></tr>
{{end}}</table>
<p>Honest users: {{outcomes .R.HonestOutcomes}}</p>
{{with .R.Population}}<p>Honest accounts refused: {{.HonestRefusedBudget}} at registration ({{.HonestRegistered}} registered through the route), {{.HonestNotEligible}} not eligible, of {{.HonestUsers}} ({{pct .HonestRefusedShare}}).
{{if .FarmRegistration}}Farm registrations: {{outcomes .FarmRegistration}}; {{.FarmNotEligible}} farm accounts refused as not eligible.{{end}}</p>{{end}}
<h2>Share of units vs share of accounts</h2>
<p>One-sided binomial test per actor kind, alpha 0.01, over {{len .R.Seeds}} seed(s) pooled: under a fair sale each unit goes to a kind with probability equal to its share of the accounts.</p>
<table><tr><th>kind</th><th>accounts</th><th>population share</th><th>units</th><th>unit share</th><th>p-value</th><th>beat its share</th></tr>
{{range .R.Shares}}<tr><td>{{.Kind}}</td><td>{{.Accounts}}</td><td>{{pct .PopulationShare}}</td><td>{{.Units}}/{{.UnitsSold}}</td><td>{{pct .UnitShare}}</td><td>{{printf "%.3g" .PValue}}</td><td class="{{if .Beat}}FAIL{{else}}PASS{{end}}">{{if .Beat}}YES{{else}}no{{end}}</td></tr>{{end}}</table>
<h2>What stopped each bot kind</h2>
<table><tr><th>bot kind</th><th>units won</th><th>rejections</th></tr>
{{range .R.Defences}}<tr><td>{{.Kind}}</td><td>{{.UnitsWon}}</td><td>{{.}}</td></tr>{{end}}</table>
<h2>Invariants</h2>
<table>{{range .R.Invariants.Checks}}<tr><td class="{{if .OK}}PASS{{else}}FAIL{{end}}">{{if .OK}}ok{{else}}FAIL{{end}}</td><td>{{.Name}}</td><td>{{.Detail}}</td></tr>{{end}}
{{with .R.Reconcile}}<tr><td class="{{if eq .ExitCode 0}}PASS{{else}}FAIL{{end}}">exit {{.ExitCode}}</td><td>reconcile</td><td><code>{{.Command}}</code><pre>{{.Output}}</pre></td></tr>{{end}}</table>
{{range .R.Notes}}<p>Note: {{.}}</p>{{end}}
<h2>Charts</h2>
{{range .Charts}}{{.}}{{end}}
<h2>Latency by route</h2>
<table><tr><th>route</th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>max (ms)</th></tr>
{{range .R.Routes}}<tr><td>{{.Route}}</td><td>{{.N}}</td><td>{{ms .P50Ms}}</td><td>{{ms .P90Ms}}</td><td>{{ms .P99Ms}}</td><td>{{ms .MaxMs}}</td></tr>{{end}}</table>
</body></html>
`))

// WriteHTML writes the self-contained report page.
func (rep *Report) WriteHTML(w io.Writer) error {
	return page.Execute(w, struct {
		R      *Report
		Charts []template.HTML
	}{rep, rep.charts()})
}
