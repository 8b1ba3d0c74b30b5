package main

// benchctl plot RESULTS.json DIR: PNG charts of a run's figures (results.json), shown by
// RESULTS.md and the README: qps.png (throughput per scenario), cpu.png (CPU per query), latency.png
// (p50 and p99 at a fixed rate), memory.png (heap and RSS at scale, steady and at a relist),
// relist.png (RSS and heap through a relist, over time) and fixed-rate-cpu.png.

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	oursColor   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} // blue
	theirsColor = color.RGBA{R: 0xb0, G: 0xb0, B: 0xb0, A: 0xff} // grey
	peakColor   = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff} // orange
)

func plotResults(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: benchctl plot RESULTS.json DIR")
	}
	res, err := readResults(args[0])
	if err != nil {
		return err
	}
	return drawPlots(res, args[1])
}

// drawPlots draws the charts of res into dir.
func drawPlots(res *Results, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sub := fmt.Sprintf("run of %s at %s; server on one core, load on the other", res.Run.Date, res.Run.Commit)
	if len(res.Scenarios) > 0 {
		var qps, cpu, p50, p99 []*plot.Plot
		for _, s := range res.Scenarios {
			labels := make([]string, len(s.Servers))
			q, c, l50, l99 := make([]float64, len(s.Servers)), make([]float64, len(s.Servers)), make([]float64, len(s.Servers)), make([]float64, len(s.Servers))
			ours := make([]bool, len(s.Servers))
			for i, srv := range s.Servers {
				labels[i], ours[i] = srv.Label, srv.Ours
				q[i], c[i], l50[i], l99[i] = srv.MeanQPS, srv.MeanCPUu, srv.P50ms, srv.P99ms
			}
			p, err := oursVsTheirs(s.Title, "queries per second", labels, ours, q, "%.0f")
			if err != nil {
				return err
			}
			qps = append(qps, p)
			if p, err = oursVsTheirs(s.Title, "CPU µs per answered query (lower is better)", labels, ours, c, "%.1f"); err != nil {
				return err
			}
			cpu = append(cpu, p)
			title := fmt.Sprintf("%s (at %d q/s)", s.Title, s.LatencyRate)
			if p, err = oursVsTheirs(title, "p50 latency ms", labels, ours, l50, "%.3f"); err != nil {
				return err
			}
			p50 = append(p50, p)
			if p, err = oursVsTheirs(title, "p99 latency ms", labels, ours, l99, "%.2f"); err != nil {
				return err
			}
			p99 = append(p99, p)
		}
		w := vg.Length(len(res.Scenarios)) * 10 * vg.Centimeter
		if err := saveTiles(filepath.Join(dir, "qps.png"), "Throughput, mean of the runs — "+sub, [][]*plot.Plot{qps}, w, 10*vg.Centimeter); err != nil {
			return err
		}
		if err := saveTiles(filepath.Join(dir, "cpu.png"), "CPU per query — "+sub, [][]*plot.Plot{cpu}, w, 10*vg.Centimeter); err != nil {
			return err
		}
		if err := saveTiles(filepath.Join(dir, "latency.png"), "Latency at half the slowest server's QPS — "+sub, [][]*plot.Plot{p50, p99}, w, 19*vg.Centimeter); err != nil {
			return err
		}
	}
	if len(res.FixedRate) > 0 {
		if err := plotFixedRate(res.FixedRate, filepath.Join(dir, "fixed-rate-cpu.png"), "CPU per query at fixed rates — "+sub); err != nil {
			return err
		}
	}
	if len(res.Memory) > 0 {
		labels := make([]string, len(res.Memory))
		var steadyHeap, peakHeap, steadyRSS, peakRSS []float64
		for i, m := range res.Memory {
			labels[i] = m.Label
			steadyHeap, peakHeap = append(steadyHeap, m.SteadyHeap), append(peakHeap, m.RelistPeakHeap)
			steadyRSS, peakRSS = append(steadyRSS, m.SteadyRSS), append(peakRSS, m.RelistPeakRSS)
		}
		heap, err := steadyVsPeak("Go heap in use", "MiB", labels, steadyHeap, peakHeap)
		if err != nil {
			return err
		}
		rss, err := steadyVsPeak("RSS", "MiB", labels, steadyRSS, peakRSS)
		if err != nil {
			return err
		}
		if err := saveTiles(filepath.Join(dir, "memory.png"), "Memory at scale, steady and at a relist — "+sub,
			[][]*plot.Plot{{heap, rss}}, 26*vg.Centimeter, 12*vg.Centimeter); err != nil {
			return err
		}
		if err := plotRelist(res.Memory, filepath.Join(dir, "relist.png"), "A relist over time: sampled from 0 s, the API server stopped right after and started again over a compacted etcd (ready again 20 to 35 s in), every watch relists — "+sub); err != nil {
			return err
		}
	}
	return nil
}

// plotRelist draws the relist timelines, RSS and heap, a line per DNS (nothing when the run has
// no samples).
func plotRelist(mems []Memory, path, title string) error {
	type named struct {
		name string
		line *plotter.Line
	}
	var rss, heap []named
	dark := map[bool]color.Color{true: color.RGBA{R: 0x08, G: 0x30, B: 0x6b, A: 0xff}, false: color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff}}
	light := map[bool]color.Color{true: oursColor, false: theirsColor}
	for _, m := range mems {
		if len(m.Relist) == 0 {
			continue
		}
		r, h := make(plotter.XYs, len(m.Relist)), make(plotter.XYs, len(m.Relist))
		for i, x := range m.Relist {
			r[i], h[i] = plotter.XY{X: x.T, Y: x.RSS}, plotter.XY{X: x.T, Y: x.Heap}
		}
		c := light[m.Ours]
		if strings.Contains(m.Name, "verified") {
			c = dark[m.Ours]
		}
		rss, heap = append(rss, named{m.Label, lineOf(r, c)}), append(heap, named{m.Label, lineOf(h, c)})
	}
	if len(rss) == 0 {
		return nil
	}
	var panels []*plot.Plot
	for _, set := range []struct {
		title string
		lines []named
	}{{"RSS", rss}, {"Go heap in use", heap}} {
		p := plot.New()
		p.Title.Text, p.X.Label.Text, p.Y.Label.Text = set.title, "seconds", "MiB"
		for _, n := range set.lines {
			p.Add(n.line)
			p.Legend.Add(n.name, n.line)
		}
		p.Legend.Top, p.Legend.Left = true, true
		p.Y.Min = 0
		p.Y.Max *= 1.3
		p.Y.Tick.Marker = plainTicks{}
		panels = append(panels, p)
	}
	return saveTiles(path, title, [][]*plot.Plot{panels}, 30*vg.Centimeter, 12*vg.Centimeter)
}

func lineOf(xys plotter.XYs, c color.Color) *plotter.Line {
	l, _ := plotter.NewLine(xys)
	l.Color, l.Width = c, vg.Points(1.2)
	return l
}

// plotFixedRate is a panel per role: for each rate, ours and theirs side by side (CPU per query).
func plotFixedRate(rows []FixedRate, path, title string) error {
	var panels []*plot.Plot
	for _, role := range []string{"central", "node"} {
		var rates []int
		ours, theirs := map[int]float64{}, map[int]float64{}
		var oursLabel, theirsLabel string
		for _, r := range rows {
			if r.Role != role {
				continue
			}
			if _, seen := ours[r.Rate]; !seen {
				if _, seen := theirs[r.Rate]; !seen {
					rates = append(rates, r.Rate)
				}
			}
			if r.Ours {
				ours[r.Rate], oursLabel = r.MeanCPUu, r.Label
			} else {
				theirs[r.Rate], theirsLabel = r.MeanCPUu, r.Label
			}
		}
		if len(rates) == 0 {
			continue
		}
		labels := make([]string, len(rates))
		var o, t []float64
		for i, rate := range rates {
			labels[i] = fmt.Sprintf("%d q/s", rate)
			o, t = append(o, ours[rate]), append(t, theirs[rate])
		}
		p, err := groupedBars(role+" role", "CPU µs per answered query (lower is better)", labels, "%.1f",
			barSeries{oursLabel, o, oursColor}, barSeries{theirsLabel, t, theirsColor})
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return nil
	}
	return saveTiles(path, title, [][]*plot.Plot{panels}, vg.Length(len(panels))*12*vg.Centimeter, 11*vg.Centimeter)
}

// oursVsTheirs is a bar per server, ours in colour, with each value written above its bar.
func oursVsTheirs(title, ylabel string, labels []string, ours []bool, values []float64, format string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	mine, others := make(plotter.Values, len(values)), make(plotter.Values, len(values))
	for i, v := range values {
		if ours[i] {
			mine[i] = v
		} else {
			others[i] = v
		}
	}
	for _, set := range []struct {
		v plotter.Values
		c color.Color
	}{{mine, oursColor}, {others, theirsColor}} {
		bars, err := plotter.NewBarChart(set.v, barWidth(len(values)))
		if err != nil {
			return nil, err
		}
		bars.Color, bars.LineStyle.Width = set.c, 0
		p.Add(bars)
	}
	if err := addValueLabels(p, values, 0, format); err != nil {
		return nil, err
	}
	p.NominalX(wrapped(labels)...)
	p.Y.Min = 0
	p.Y.Max *= 1.12 // room for the labels
	p.Y.Tick.Marker = plainTicks{}
	return p, nil
}

// barWidth fits n bars into a panel of the charts' width.
func barWidth(n int) vg.Length { return min(1.4*vg.Centimeter, 5.6*vg.Centimeter/vg.Length(n)) }

// wrapped puts each word of a bar's label on a line of its own.
func wrapped(labels []string) []string {
	out := make([]string, len(labels))
	for i, l := range labels {
		out[i] = strings.ReplaceAll(strings.ReplaceAll(l, ", ", "\n"), " ", "\n")
	}
	return out
}

// plainTicks are gonum's default ticks written without decimals that say nothing (50000, not 50000.00).
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = fmt.Sprintf("%.6g", ticks[i].Value)
		}
	}
	return ticks
}

// steadyVsPeak is two bars per configuration: the steady value and the relist peak.
func steadyVsPeak(title, ylabel string, labels []string, steady, peak []float64) (*plot.Plot, error) {
	return groupedBars(title, ylabel, wrapped(labels), "%.0f",
		barSeries{"steady (after a forced GC)", steady, oursColor}, barSeries{"relist peak", peak, peakColor})
}

// barSeries is one bar of each group of groupedBars.
type barSeries struct {
	name   string
	values []float64
	color  color.Color
}

// groupedBars is two bars per label, a legend and each bar's value above it.
func groupedBars(title, ylabel string, labels []string, format string, a, b barSeries) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	w := 0.9 * vg.Centimeter
	for i, set := range []barSeries{a, b} {
		bars, err := plotter.NewBarChart(plotter.Values(set.values), w)
		if err != nil {
			return nil, err
		}
		bars.Color, bars.LineStyle.Width = set.color, 0
		bars.Offset = vg.Length(2*i-1) * w / 2
		p.Add(bars)
		p.Legend.Add(set.name, bars)
		if err := addValueLabels(p, set.values, float64(2*i-1)*0.22, format); err != nil {
			return nil, err
		}
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.NominalX(labels...)
	p.Y.Min = 0
	p.Y.Max *= 1.25
	p.Y.Tick.Marker = plainTicks{}
	return p, nil
}

func addValueLabels(p *plot.Plot, values []float64, dx float64, format string) error {
	xys := make(plotter.XYs, len(values))
	text := make([]string, len(values))
	for i, v := range values {
		xys[i] = plotter.XY{X: float64(i) + dx, Y: v}
		text[i] = fmt.Sprintf(format, v)
	}
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: text})
	if err != nil {
		return err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = draw.XCenter
		l.TextStyle[i].YAlign = draw.YBottom
	}
	p.Add(l)
	return nil
}

// saveTiles draws rows of plots on one PNG under a title.
func saveTiles(path, title string, rows [][]*plot.Plot, w, h vg.Length) error {
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(110))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	head := plot.New()
	head.Title.Text = title
	const titleH = 0.9 * vg.Centimeter
	headCanvas := draw.Crop(dc, 0, 0, h-titleH, 0)
	head.Title.TextStyle.Font.Size = 11
	head.HideAxes()
	head.Draw(headCanvas)
	body := draw.Crop(dc, 0, 0, 0, -titleH)
	tiles := draw.Tiles{Rows: len(rows), Cols: len(rows[0]), PadX: vg.Centimeter, PadY: 0.5 * vg.Centimeter,
		PadTop: 0.2 * vg.Centimeter, PadBottom: 0.3 * vg.Centimeter, PadLeft: 0.3 * vg.Centimeter, PadRight: 0.3 * vg.Centimeter}
	canvases := plot.Align(rows, tiles, body)
	for i := range rows {
		for j := range rows[i] {
			rows[i][j].Draw(canvases[i][j])
		}
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
