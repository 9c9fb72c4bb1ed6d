package audit

import (
	"math"
	"strconv"
)

// Charts are laid out once, in abstract units, and drawn by both renderers:
// as inline SVG in the HTML and with fpdf's vector primitives in the PDF.
// Coordinates grow right and down, like SVG's.

type chartRect struct {
	X, Y, W, H float64
	// Class is one of the fixed palette names below, never data.
	Class string
}

type chartLine struct {
	X1, Y1, X2, Y2 float64
	Class          string
}

type chartText struct {
	X, Y float64
	// Anchor is "start", "middle" or "end".
	Anchor string
	Text   string
	Class  string
}

type chart struct {
	Title         string
	Width, Height float64
	Rects         []chartRect
	// Grid is drawn first, under the bars.
	Grid  []chartLine
	Lines []chartLine
	Texts []chartText
	// Legend pairs a palette class with its meaning.
	Legend []legendItem
}

type legendItem struct{ Class, Label string }

// The palette: class → RGB. The HTML's CSS and the PDF use the same colours.
var palette = map[string][3]int{
	"primary":  {0x4c, 0x72, 0xb0},
	"primary2": {0x8f, 0xa9, 0xd3},
	"primary3": {0xc9, 0xd6, 0xeb},
	"shadow":   {0xdd, 0x84, 0x52},
	"shadow2":  {0xeb, 0xb3, 0x93},
	"shadow3":  {0xf6, 0xdb, 0xcb},
	"agree":    {0x55, 0xa8, 0x68},
	"weak":     {0xc4, 0x4e, 0x52},
	"psi":      {0x81, 0x72, 0xb3},
	"axis":     {0x99, 0x99, 0x99},
	"grid":     {0xe3, 0xe3, 0xe3},
	"whisker":  {0x22, 0x22, 0x22},
	"label":    {0x22, 0x22, 0x22},
	"subtle":   {0x66, 0x66, 0x66},
	"bg":       {0xf6, 0xf6, 0xf6},
	"deny":     {0xc4, 0x4e, 0x52},
	"allow":    {0x55, 0xa8, 0x68},
	"warn":     {0xcc, 0x99, 0x33},
	"headerbg": {0x23, 0x3b, 0x5d},
}

const (
	chartWidth  = 720.0
	labelWidth  = 150.0
	valueWidth  = 210.0
	rowHeight   = 22.0
	chartTop    = 26.0
	chartBottom = 24.0
)

func fmtCoord(v float64) string { return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) }

func clampName(s string) string {
	r := []rune(s)
	if len(r) > 24 {
		return string(r[:23]) + "…"
	}
	return s
}

func evidenceSegments(e Evidence) []Segment {
	return append([]Segment{withName(e.Overall, OverallSegment)}, sortedSegments(e.Segments)...)
}

// axis draws ticks for [lo, hi] across the plot area.
func (c *chart) axis(x0, x1, y float64, lo, hi float64, ticks int, format func(float64) string) {
	c.Lines = append(c.Lines, chartLine{x0, y, x1, y, "axis"})
	for i := 0; i <= ticks; i++ {
		v := lo + (hi-lo)*float64(i)/float64(ticks)
		x := x0 + (x1-x0)*float64(i)/float64(ticks)
		c.Grid = append(c.Grid, chartLine{x, chartTop - 4, x, y, "grid"})
		c.Texts = append(c.Texts, chartText{x, y + 14, "middle", format(v), "subtle"})
	}
}

func scale(v, lo, hi, x0, x1 float64) float64 {
	if hi <= lo || math.IsNaN(v) {
		return x0
	}
	v = math.Max(lo, math.Min(hi, v))
	return x0 + (v-lo)/(hi-lo)*(x1-x0)
}

// agreementChart: each segment's agreement rate as a dot with its 95 %
// interval as a whisker. The axis starts at a round value below the lowest
// bound so that differences near 1 stay visible; the axis labels say so.
func agreementChart(e Evidence) chart {
	segs := evidenceSegments(e)
	lo := 1.0
	for _, s := range segs {
		if s.N > 0 {
			lo = math.Min(lo, s.Agreement.Lower)
		}
	}
	lo = math.Floor(lo*10) / 10
	if lo > 0.9 {
		lo = 0.9
	}
	if lo < 0 || math.IsNaN(lo) {
		lo = 0
	}
	c := chart{Title: "Agreement with 95 % interval (axis from " + num(lo) + ")", Width: chartWidth}
	x0, x1 := labelWidth, chartWidth-valueWidth
	y := chartTop
	for _, s := range segs {
		c.Texts = append(c.Texts, chartText{x0 - 6, y + 14, "end", clampName(s.Name), "label"})
		if s.N == 0 {
			c.Texts = append(c.Texts, chartText{x0 + 4, y + 14, "start", "no compared pairs", "subtle"})
		} else {
			cls := "agree"
			if !s.Sufficient {
				cls = "weak"
			}
			xl, xu, xr := scale(s.Agreement.Lower, lo, 1, x0, x1), scale(s.Agreement.Upper, lo, 1, x0, x1), scale(s.Agreement.Rate, lo, 1, x0, x1)
			c.Rects = append(c.Rects, chartRect{x0, y + 6, xr - x0, 10, cls})
			c.Lines = append(c.Lines, chartLine{xl, y + 11, xu, y + 11, "whisker"},
				chartLine{xl, y + 6, xl, y + 16, "whisker"}, chartLine{xu, y + 6, xu, y + 16, "whisker"})
		}
		label := num(s.Agreement.Rate) + " [" + num(s.Agreement.Lower) + ", " + num(s.Agreement.Upper) + "] n=" + count(s.N)
		c.Texts = append(c.Texts, chartText{x1 + 6, y + 14, "start", label, "subtle"})
		y += rowHeight
	}
	c.axis(x0, x1, y+2, lo, 1, 5, num)
	c.Height = y + chartBottom
	c.Legend = []legendItem{{"agree", "sufficient sample"}, {"weak", "insufficient sample"}, {"whisker", "Wilson 95 % interval"}}
	return c
}

// latencyChart: p50, p95 and p99 of both sides per segment, grouped.
func latencyChart(e Evidence) chart {
	segs := evidenceSegments(e)
	hi := 0.0
	for _, s := range segs {
		hi = math.Max(hi, math.Max(s.Latency.Primary.P99, s.Latency.Shadow.P99))
		hi = math.Max(hi, math.Max(s.Latency.Primary.P95, s.Latency.Shadow.P95))
	}
	if hi <= 0 || math.IsNaN(hi) || math.IsInf(hi, 0) {
		hi = 1
	}
	hi = niceCeil(hi)
	c := chart{Title: "Latency p50 / p95 / p99 (ms), production vs candidate", Width: chartWidth}
	x0, x1 := labelWidth, chartWidth-valueWidth
	y := chartTop
	for _, s := range segs {
		c.Texts = append(c.Texts, chartText{x0 - 6, y + 14, "end", clampName(s.Name), "label"})
		for i, side := range []struct {
			q   Quantiles
			cls string
			tag string
		}{{s.Latency.Primary, "primary", "prod"}, {s.Latency.Shadow, "shadow", "cand"}} {
			yy := y + 4 + float64(i)*20
			// Drawn longest first so the shorter quantiles sit on top:
			// p99 lightest, p50 full colour.
			for j, v := range []float64{side.q.P99, side.q.P95, side.q.P50} {
				cls := side.cls + []string{"3", "2", ""}[j]
				c.Rects = append(c.Rects, chartRect{x0, yy, scale(v, 0, hi, x0, x1) - x0, 16, cls})
			}
			c.Texts = append(c.Texts, chartText{x1 + 6, yy + 12, "start",
				side.tag + " " + num(side.q.P50) + " / " + num(side.q.P95) + " / " + num(side.q.P99), "subtle"})
		}
		y += 2*20 + 8
	}
	c.axis(x0, x1, y+2, 0, hi, 4, num)
	c.Height = y + chartBottom
	c.Legend = []legendItem{{"primary", "production p50"}, {"primary2", "p95"}, {"primary3", "p99"},
		{"shadow", "candidate p50"}, {"shadow2", "p95"}, {"shadow3", "p99"}}
	return c
}

// psiChart: the population stability index per segment.
func psiChart(e Evidence) chart {
	segs := evidenceSegments(e)
	hi := 0.0
	for _, s := range segs {
		hi = math.Max(hi, s.PSI)
	}
	if hi <= 0 || math.IsNaN(hi) || math.IsInf(hi, 0) {
		hi = 0.01
	}
	hi = niceCeil(hi)
	c := chart{Title: "Output drift (PSI, candidate vs production)", Width: chartWidth}
	x0, x1 := labelWidth, chartWidth-valueWidth
	y := chartTop
	for _, s := range segs {
		c.Texts = append(c.Texts, chartText{x0 - 6, y + 14, "end", clampName(s.Name), "label"})
		c.Rects = append(c.Rects, chartRect{x0, y + 5, scale(s.PSI, 0, hi, x0, x1) - x0, 12, "psi"})
		c.Texts = append(c.Texts, chartText{x1 + 6, y + 14, "start", num(s.PSI), "subtle"})
		y += rowHeight
	}
	c.axis(x0, x1, y+2, 0, hi, 4, num)
	c.Height = y + chartBottom
	return c
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func rgb(class string) string {
	c, ok := palette[class]
	if !ok {
		c = palette["label"]
	}
	const hex = "0123456789abcdef"
	b := []byte{'#', 0, 0, 0, 0, 0, 0}
	for i, v := range c {
		b[1+2*i], b[2+2*i] = hex[v>>4], hex[v&15]
	}
	return string(b)
}
