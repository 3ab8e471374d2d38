package bench

import (
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var backendColor = map[string]color.RGBA{
	Legacy: {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	NFT:    {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	XTBPF:  {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// WritePlot draws pps against rules, one panel per path and flow, with
// the no-filter ceiling as a grey dashed line. Rule counts sit at even
// spacing (0 has no place on a log axis); rates are on a log axis.
func (r *Results) WritePlot(w io.Writer) error {
	panels := [][]*plot.Plot{make([]*plot.Plot, 2), make([]*plot.Plot, 2)}
	for i, s := range scenarios {
		p, err := r.panel(s)
		if err != nil {
			return fmt.Errorf("plot %s: %w", s, err)
		}
		panels[i/2][i%2] = p
	}
	img := vgimg.New(11*vg.Inch, 8*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 2, PadX: vg.Inch / 3, PadY: vg.Inch / 3,
		PadTop: vg.Inch / 6, PadBottom: vg.Inch / 6, PadLeft: vg.Inch / 6, PadRight: vg.Inch / 6}
	canvases := plot.Align(panels, tiles, dc)
	for i := range panels {
		for j := range panels[i] {
			panels[i][j].Draw(canvases[i][j])
		}
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("write png: %w", err)
	}
	return nil
}

func (r *Results) panel(s scenario) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s, packets meeting the %s", s.Path, s.Flow)
	p.X.Label.Text = "rules"
	p.Y.Label.Text = "packets per second"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.TickerFunc(decadeTicks)
	var ticks []plot.Tick
	for i, n := range r.Counts {
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: countLabel(n)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Min, p.X.Max = -0.2, float64(len(r.Counts)-1)+0.2
	p.Legend.Top = false
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	lo, hi := math.Inf(1), 0.0
	if c := r.Ceiling[s.Path]; c > 0 {
		line, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: c}, {X: p.X.Max, Y: c}})
		if err != nil {
			return nil, err
		}
		line.Color = color.Gray{Y: 0x80}
		line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(line)
		p.Legend.Add("no filter table", line)
		lo, hi = c, c
	}
	for _, b := range r.Backends {
		var xys plotter.XYs
		for i, n := range r.Counts {
			if v, ok := r.pps(b, s.Path, s.Flow, n); ok && v > 0 {
				xys = append(xys, plotter.XY{X: float64(i), Y: v})
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
		if len(xys) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		line.Color, points.Color = backendColor[b], backendColor[b]
		line.Width = vg.Points(1.5)
		points.Shape = draw.CircleGlyph{}
		p.Add(line, points)
		p.Legend.Add(b, line, points)
	}
	if hi > 0 {
		p.Y.Min = math.Pow(10, math.Floor(math.Log10(lo)))
		p.Y.Max = math.Pow(10, math.Ceil(math.Log10(hi*1.5)))
	}
	return p, nil
}

// decadeTicks labels powers of ten as 1 K, 10 K, … and marks the 2…9
// multiples between them.
func decadeTicks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	for d := math.Pow(10, math.Floor(math.Log10(min))); d <= max; d *= 10 {
		for k := 1.0; k < 10; k++ {
			v := d * k
			if v < min || v > max {
				continue
			}
			t := plot.Tick{Value: v}
			if k == 1 {
				t.Label = fmtPPS(v)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}
