package main

import (
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

const plotFile = "routing-latency.png"

// topoStyle draws one topology: its colour and its offset from the policy's
// tick, so that single and fleet stand side by side.
var topoStyle = []struct {
	name   string
	label  string
	color  color.RGBA
	offset float64
}{
	{"direct", "no sidecar", color.RGBA{R: 120, G: 120, B: 120, A: 255}, 0},
	{"single", "1 sidecar", color.RGBA{R: 31, G: 119, B: 180, A: 255}, -0.15},
	{"fleet", "fleet", color.RGBA{R: 214, G: 39, B: 40, A: 255}, 0.15},
}

// writePlot draws p50 (circle) and p99 (triangle) of TTFT and of end-to-end
// latency per policy, one panel each, on a log scale, single and fleet side
// by side, joined by a line from p50 to p99.
func writePlot(path string, rs []result) error {
	var policies []string
	index := map[string]int{}
	for _, r := range rs {
		key := r.label()
		if r.Topology == "direct" {
			key = "no sidecar"
		}
		if _, ok := index[key]; !ok {
			index[key] = len(policies)
			policies = append(policies, key)
		}
	}
	panels := []struct {
		title string
		pick  func(r result) latency
	}{
		{"time to first token", func(r result) latency { return r.TTFT }},
		{"end-to-end latency", func(r result) latency { return r.E2E }},
	}
	row := make([]*plot.Plot, len(panels))
	for i, panel := range panels {
		p := plot.New()
		p.Title.Text = panel.title + " (p50 ●, p99 ▲)"
		p.Y.Label.Text = "ms (log scale)"
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Add(plotter.NewGrid())
		p.NominalX(policies...)
		p.X.Tick.Label.Rotation = math.Pi / 6
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
		p.X.Min, p.X.Max = -0.6, float64(len(policies))-0.4
		p.Legend.Top = true
		for _, ts := range topoStyle {
			var p50, p99 plotter.XYs
			for _, r := range rs {
				if r.Topology != ts.name {
					continue
				}
				key := r.label()
				if r.Topology == "direct" {
					key = "no sidecar"
				}
				l := panel.pick(r)
				if l.N == 0 {
					continue
				}
				x := float64(index[key]) + ts.offset
				p50 = append(p50, plotter.XY{X: x, Y: max(l.P50, 0.1)})
				p99 = append(p99, plotter.XY{X: x, Y: max(l.P99, 0.1)})
				seg, err := plotter.NewLine(plotter.XYs{{X: x, Y: max(l.P50, 0.1)}, {X: x, Y: max(l.P99, 0.1)}})
				if err != nil {
					return err
				}
				seg.Color = ts.color
				p.Add(seg)
			}
			if len(p50) == 0 {
				continue
			}
			s50, err := plotter.NewScatter(p50)
			if err != nil {
				return err
			}
			s50.GlyphStyle = draw.GlyphStyle{Color: ts.color, Radius: vg.Points(3), Shape: draw.CircleGlyph{}}
			s99, err := plotter.NewScatter(p99)
			if err != nil {
				return err
			}
			s99.GlyphStyle = draw.GlyphStyle{Color: ts.color, Radius: vg.Points(4), Shape: draw.TriangleGlyph{}}
			p.Add(s50, s99)
			p.Legend.Add(ts.label, s50)
		}
		row[i] = p
	}
	img := vgimg.New(14*vg.Inch, 5.5*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 2,
		PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
