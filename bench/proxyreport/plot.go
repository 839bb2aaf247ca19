package main

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/blitzscale/router/internal/loadgen"
)

const plotFile = "proxy-latency.png"

// One colour per target, the same in every panel.
var targetColors = []color.Color{
	color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff}, // direct: grey, the baseline
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // sidecar: blue
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // nginx: green
}

// nines maps a percentile to the classic HDR x axis, -log10(1 − p/100), so
// that 90, 99, 99.9 and 99.99 are evenly spaced and the tail is readable.
func nines(p float64) float64 { return -math.Log10(1 - p/100) }

var ninesTicks = plot.ConstantTicks{
	{Value: nines(0)}, {Value: nines(50), Label: "50"}, {Value: nines(90), Label: "90"},
	{Value: nines(99), Label: "99"}, {Value: nines(99.9), Label: "99.9"}, {Value: nines(99.99), Label: "99.99"},
}

// plotLatency draws three panels into one PNG: latency percentiles at the
// fixed rate, TTFT percentiles at the concurrent streams, and throughput.
func plotLatency(d *data, path string) error {
	lat, err := percentilePlot(d, "latency", "Latency at a fixed rate (non-streaming)",
		func(r *loadgen.Result) *loadgen.Summary { return &r.Latency })
	if err != nil {
		return err
	}
	ttft, err := percentilePlot(d, "ttft", "Time to first token, concurrent streams",
		func(r *loadgen.Result) *loadgen.Summary { return r.TTFT })
	if err != nil {
		return err
	}
	tp, err := throughputPlot(d)
	if err != nil {
		return err
	}
	const w, h = 15 * vg.Inch, 5 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 3, PadX: vg.Inch / 4, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8,
		PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	plots := [][]*plot.Plot{{lat, ttft, tp}}
	canvases := plot.Align(plots, tiles, dc)
	for i, p := range plots[0] {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// percentilePlot draws one line per target: the value at each percentile
// of Summary.Curve below 100 (the maximum cannot sit on a nines axis).
func percentilePlot(d *data, scenario, title string, pick func(*loadgen.Result) *loadgen.Summary) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "percentile"
	p.X.Tick.Marker = ninesTicks
	p.Y.Label.Text = "log scale"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = microTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	for i, t := range targets {
		r := d.result(scenario, t)
		if r == nil {
			continue
		}
		s := pick(r)
		if s == nil {
			continue
		}
		var xys plotter.XYs
		for _, pt := range s.Curve {
			if pt.Percentile < 100 && pt.Micros > 0 {
				xys = append(xys, plotter.XY{X: nines(pt.Percentile), Y: pt.Micros})
			}
		}
		if len(xys) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		line.Color, points.Color = targetColors[i], targetColors[i]
		line.Width = vg.Points(1.5)
		p.Add(line, points)
		p.Legend.Add(fmt.Sprintf("%s (p50 %s)", t, loadgen.FormatMicros(s.P50)), line)
	}
	p.Add(plotter.NewGrid())
	return p, nil
}

func throughputPlot(d *data) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Throughput at saturation (non-streaming)"
	p.Y.Label.Text = "requests per second"
	p.Y.Min = 0
	var names []string
	for i, t := range targets {
		r := d.result("throughput", t)
		if r == nil {
			continue
		}
		bar, err := plotter.NewBarChart(plotter.Values{r.Throughput}, vg.Points(40))
		if err != nil {
			return nil, err
		}
		bar.Color = targetColors[i]
		bar.LineStyle.Width = 0
		bar.XMin = float64(len(names))
		p.Add(bar)
		names = append(names, fmt.Sprintf("%s\n%.0f/s", t, r.Throughput))
	}
	p.NominalX(names...)
	return p, nil
}

// microTicks labels a log axis of microseconds at 1, 2 and 5 times powers
// of ten, or at linear steps when the range is too narrow for those, with
// the units of the tables (850µs, 1.2ms): gonum's LogTicks labels powers of
// ten only, which leaves a 20–25 ms axis bare.
type microTicks struct{}

func (microTicks) Ticks(lo, hi float64) []plot.Tick {
	pick := func(mults []float64) []plot.Tick {
		var ts []plot.Tick
		for e := math.Floor(math.Log10(lo)); math.Pow(10, e) <= hi; e++ {
			for _, m := range mults {
				if v := m * math.Pow(10, e); v >= lo && v <= hi {
					ts = append(ts, plot.Tick{Value: v, Label: loadgen.FormatMicros(v)})
				}
			}
		}
		return ts
	}
	if ts := pick([]float64{1, 2, 5}); len(ts) >= 3 {
		return ts
	}
	// A narrow range (TTFT of 20–25 ms): linear ticks read better there.
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = loadgen.FormatMicros(ts[i].Value)
		}
	}
	return ts
}
