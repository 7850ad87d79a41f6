package bench

import (
	"fmt"
	"image/color"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	colorSluice = color.RGBA{R: 230, G: 120, B: 20, A: 255}
	colorOther  = color.RGBA{R: 90, G: 110, B: 150, A: 255}
	modeColors  = map[string]color.Color{
		"off":                           color.RGBA{R: 120, G: 120, B: 120, A: 255},
		"Echo request logger":           color.RGBA{R: 40, G: 90, B: 200, A: 255},
		"Echo request logger to a file": color.RGBA{R: 30, G: 150, B: 110, A: 255},
		"sluice":                        colorSluice,
	}
)

// WritePlot draws the results into a PNG at path: the sink throughput bars and the overload's memory
// on the first row, the HTTP latency distributions at each fixed rate on the second. Panels of
// scenarios that did not run are left out.
func (r *Results) WritePlot(path string) error {
	var top, bottom []*plot.Plot
	if pg := r.Postgres; pg != nil {
		p, err := throughputBars("PostgreSQL sink: events/s",
			[]string{"sluice", "CopyFrom\n(ceiling)", "INSERT\n4 conns", "INSERT\n1 conn", "Watermill\nSQL"},
			[]float64{pg.Sluice.EventsPerSecond, pg.RawCopyFrom.EventsPerSecond, pg.PerEventInsert.EventsPerSecond,
				pg.PerEventInsertOneConn.EventsPerSecond, pg.WatermillSQL.EventsPerSecond})
		if err != nil {
			return err
		}
		top = append(top, p)
	}
	if b := r.Blob; b != nil {
		// The one large upload is left out: it is I/O alone, orders of magnitude above both.
		p, err := throughputBars(fmt.Sprintf("Blob sink (Azurite): events/s\n(one large upload: %s)", count(b.OneUpload.EventsPerSecond)),
			[]string{"sluice", "one blob\nper event"},
			[]float64{b.Sluice.EventsPerSecond, b.PerEventBlob.EventsPerSecond})
		if err != nil {
			return err
		}
		top = append(top, p)
	}
	if o := r.Overload; o != nil && len(o.Samples) > 0 {
		p, err := overloadMemory(o)
		if err != nil {
			return err
		}
		top = append(top, p)
	}
	if b := r.Bus; b != nil {
		p, err := busBars(b)
		if err != nil {
			return err
		}
		top = append(top, p)
	}
	if h := r.HTTP; h != nil {
		for i, s := range h.Off.Steps {
			p, err := latencyDistribution(h, i, s.Rate)
			if err != nil {
				return err
			}
			bottom = append(bottom, p)
		}
	}
	var rows [][]*plot.Plot
	for _, row := range [][]*plot.Plot{top, bottom} {
		if len(row) > 0 {
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		return fmt.Errorf("plot: no scenario to draw")
	}
	cols := 0
	for _, row := range rows {
		cols = max(cols, len(row))
	}
	for i, row := range rows { // Align wants a full grid
		for len(row) < cols {
			row = append(row, nil)
		}
		rows[i] = row
	}
	const panel = 4.2 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(panel*vg.Length(cols), panel*0.8*vg.Length(len(rows))), vgimg.UseDPI(110))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(rows), Cols: cols, PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 6,
		PadTop: vg.Millimeter * 3, PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
	canvases := plot.Align(rows, tiles, dc)
	for i, row := range rows {
		for j, p := range row {
			if p != nil {
				p.Draw(canvases[i][j])
			}
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

// throughputBars is a bar per design, sluice's first, each labelled with its value.
func throughputBars(title string, names []string, values []float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = "events/s"
	p.Y.Min = 0
	for i, v := range values {
		vs := make(plotter.Values, len(values))
		vs[i] = v
		bars, err := plotter.NewBarChart(vs, vg.Points(28))
		if err != nil {
			return nil, err
		}
		bars.Color = colorOther
		if i == 0 {
			bars.Color = colorSluice
		}
		bars.LineStyle.Width = 0
		p.Add(bars)
	}
	labels := plotter.XYLabels{}
	for i, v := range values {
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(i), Y: v})
		labels.Labels = append(labels.Labels, count(v))
	}
	l, err := plotter.NewLabels(labels)
	if err != nil {
		return nil, err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = draw.XCenter
	}
	l.Offset = vg.Point{Y: vg.Points(3)}
	p.Add(l)
	p.NominalX(names...)
	p.Y.Max = maxOf(values) * 1.15
	return p, nil
}

// busBars is the bus scenario's events/s into PostgreSQL, a pair of bars per bus: sluice (labelled
// with its rate) and the stock design on the same broker (labelled with how many times sluice's rate
// is its); the in-process bus has sluice's bar only.
func busBars(b *BusResults) (*plot.Plot, error) {
	var names []string
	var sluice, stock plotter.Values
	if p := b.InProcess; p != nil {
		names, sluice, stock = append(names, "in-process"), append(sluice, p.EventsPerSecond), append(stock, 0)
	}
	for _, name := range slices.Sorted(maps.Keys(b.Brokers)) {
		br := b.Brokers[name]
		names, sluice, stock = append(names, name), append(sluice, br.Sluice.EventsPerSecond), append(stock, br.Stock.EventsPerSecond)
	}
	p := plot.New()
	p.Title.Text = "Bus: web node to PostgreSQL, events/s"
	p.Y.Label.Text = "events/s"
	p.Y.Min = 0
	width := vg.Points(14)
	labels := plotter.XYLabels{}
	for i, series := range []struct {
		name   string
		values plotter.Values
		color  color.Color
	}{{"sluice", sluice, colorSluice}, {"stock: a message per event", stock, colorOther}} {
		bars, err := plotter.NewBarChart(series.values, width)
		if err != nil {
			return nil, err
		}
		bars.Color, bars.LineStyle.Width, bars.Offset = series.color, 0, width*vg.Length(2*i-1)/2
		p.Add(bars)
		p.Legend.Add(series.name, bars)
	}
	for i := range names {
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(i) - 0.2, Y: sluice[i]})
		labels.Labels = append(labels.Labels, count(sluice[i]))
		if stock[i] > 0 {
			labels.XYs = append(labels.XYs, plotter.XY{X: float64(i) + 0.2, Y: stock[i]})
			labels.Labels = append(labels.Labels, fixed(sluice[i]/stock[i], 0)+"x")
		}
	}
	l, err := plotter.NewLabels(labels)
	if err != nil {
		return nil, err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = draw.XCenter
		l.TextStyle[i].Font.Size = vg.Points(8)
	}
	l.Offset = vg.Point{Y: vg.Points(3)}
	p.Add(l)
	p.NominalX(names...)
	p.Y.Max = maxOf(sluice) * 1.2
	p.Legend.Top = true
	return p, nil
}

// overloadMemory is the server's RSS each second with storage down, split into the Go heap and the
// goroutine stacks in use, against the 150 MiB goal.
func overloadMemory(o *OverloadResults) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Overload, storage down, %d req/s", o.Rate)
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = "server memory MiB"
	last := float64(o.Samples[len(o.Samples)-1].Second)
	top := 160.0
	for _, series := range []struct {
		name  string
		color color.Color
		bytes func(OverloadSample) int64
	}{
		{"RSS", colorSluice, func(s OverloadSample) int64 { return s.RSSBytes }},
		{"heap in use", colorOther, func(s OverloadSample) int64 { return s.HeapInuseBytes }},
		{"stacks in use", modeColors["off"], func(s OverloadSample) int64 { return s.StackInuseBytes }},
	} {
		xys := make(plotter.XYs, len(o.Samples))
		for i, s := range o.Samples {
			xys[i] = plotter.XY{X: float64(s.Second), Y: float64(series.bytes(s)) / (1 << 20)}
			top = math.Max(top, xys[i].Y*1.1)
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		line.Color = series.color
		line.Width = vg.Points(2)
		p.Add(line)
		p.Legend.Add(series.name, line)
	}
	goal, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 150}, {X: last, Y: 150}})
	if err != nil {
		return nil, err
	}
	goal.Color = color.RGBA{R: 200, A: 255}
	goal.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(goal)
	p.Legend.Add("goal 150 MiB", goal)
	p.Legend.Top, p.Legend.Left = true, true
	p.Y.Min, p.Y.Max = 0, top*1.4 // room for the legend above the lines
	return p, nil
}

// latencyDistribution is each mode's latency against the percentile, on log scales (the tail spread
// out: x is 1/(1-q)), for the step-th fixed rate.
func latencyDistribution(h *HTTPResults, step, rate int) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("HTTP latency at %s req/s", count(float64(rate)))
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "ms"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker = plot.ConstantTicks{{Value: 2, Label: "50%"}, {Value: 10, Label: "90%"}, {Value: 100, Label: "99%"},
		{Value: 1000, Label: "99.9%"}, {Value: 10000, Label: "99.99%"}}
	p.Y.Tick.Marker = plot.TickerFunc(ticks125)
	for _, m := range h.modes() {
		if step >= len(m.mode.Steps) {
			continue
		}
		var xys plotter.XYs
		for _, q := range m.mode.Steps[step].Latency.Quantiles {
			if q.Q <= 0 || q.Q >= 1 || q.Ms <= 0 {
				continue
			}
			xys = append(xys, plotter.XY{X: 1 / (1 - q.Q), Y: q.Ms})
		}
		if len(xys) == 0 {
			continue
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		line.Color = modeColors[m.name]
		line.Width = vg.Points(2)
		p.Add(line)
		p.Legend.Add(m.name, line)
	}
	p.Legend.Top, p.Legend.Left = true, true
	return p, nil
}

// ticks125 marks 1, 2 and 5 times each power of ten between min and max (a log axis over little more
// than a decade gets labels that way).
func ticks125(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(min)); math.Pow(10, e) <= max; e++ {
		decade := math.Pow(10, e)
		for _, m := range []float64{1, 2, 5} {
			if v := m * decade; v >= min && v <= max {
				ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return ticks
}

func maxOf(vs []float64) float64 {
	m := 0.0
	for _, v := range vs {
		m = max(m, v)
	}
	if m == 0 {
		return 1
	}
	return m
}
