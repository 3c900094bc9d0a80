package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// chart is one PNG drawn by gnuplot from a tab-separated data file: one
// line per cluster (its label first), then median, min and max of each
// series.
type chart struct {
	file, title, ylabel string
	series              []string
	clusters            []string
	cells               [][]*stat // [cluster][series], nil: missing
	logY                bool
}

// charts draws the charts into dir and returns the files written.
func (r *report) charts(dir string) ([]string, error) {
	if _, err := exec.LookPath(r.b.o.gnuplotBin); err != nil {
		return nil, fmt.Errorf("gnuplot not found (%w); no charts", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var out []string
	for _, c := range r.chartList() {
		if !c.hasData() {
			continue
		}
		path := filepath.Join(dir, c.file)
		if err := c.draw(r.b.o.gnuplotBin, r.b.e.root, path); err != nil {
			return out, fmt.Errorf("%s: %w", c.file, err)
		}
		out = append(out, path)
	}
	return out, nil
}

func (c *chart) hasData() bool {
	for _, row := range c.cells {
		for _, s := range row {
			if s != nil {
				return true
			}
		}
	}
	return false
}

// chartList builds the charts from the rows.
func (r *report) chartList() []*chart {
	return []*chart{r.throughputChart(), r.upstreamChart(), r.latencyChart()}
}

// cell is the series f of the row of kind for sys, img and n, or nil when
// the row is missing or has no samples.
func (r *report) cell(kind, sys string, img *image, n int, f func(sample) float64) *stat {
	x := r.sampled(kind, sys, img, n)
	if x == nil {
		return nil
	}
	s := x.series(f)
	return &s
}

// throughputChart is the throughput per system: cold (big, 1 and N
// clients) and warm.
func (r *report) throughputChart() *chart {
	o := r.b.o
	thr := func(s sample) float64 { return mbps(s.bytes, s.wall) }
	sys := []string{sysDirect, sysOurs, sysDist, sysNginx, sysStatic, sysDirectTLS, sysShim}
	t := &chart{file: "bench-throughput.png", title: "Throughput delivered to the clients (median, min–max)", ylabel: "MB/s"}
	t.series = []string{fmt.Sprintf("cold, 1 client (%s)", r.b.big.label), fmt.Sprintf("cold, %d clients (%s)", o.clients, r.b.big.label)}
	var warmNs []int
	for _, n := range o.warmClients {
		if img := r.b.warmImage(n); img != nil {
			warmNs = append(warmNs, n)
			t.series = append(t.series, fmt.Sprintf("warm, %d clients (%s)", n, img.label))
		}
	}
	for _, s := range sys {
		row := []*stat{r.cell(kindCold, s, r.b.big, 1, thr), r.cell(kindCold, s, r.b.big, o.clients, thr)}
		for _, n := range warmNs {
			row = append(row, r.cell(kindWarm, s, r.b.warmImage(n), n, thr))
		}
		t.clusters = append(t.clusters, plainLabel(s))
		t.cells = append(t.cells, row)
	}
	return t
}

// upstreamChart is the upstream bytes per system, cold, N clients, by
// image.
func (r *report) upstreamChart() *chart {
	o := r.b.o
	u := &chart{file: "bench-upstream.png", title: fmt.Sprintf("Bytes fetched from upstream for %d cold clients (× what one client pulls)", o.clients), ylabel: "× image size"}
	var imgs []*image
	if r.b.layered != nil {
		imgs = append(imgs, r.b.layered)
	}
	for _, m := range o.scalingMiB {
		if img := r.b.singles[m]; img != nil {
			imgs = append(imgs, img)
		}
	}
	if len(imgs) == 0 || !containsImg(imgs, r.b.big) {
		imgs = append(imgs, r.b.big)
	}
	for _, img := range imgs {
		u.series = append(u.series, img.label)
	}
	for _, s := range []string{sysOurs, sysDist, sysNginx} {
		var row []*stat
		for _, img := range imgs {
			row = append(row, r.cell(kindCold, s, img, o.clients, func(x sample) float64 { return float64(x.upstream.BlobBytes) / float64(img.blobBytes()) }))
		}
		u.clusters = append(u.clusters, plainLabel(s))
		u.cells = append(u.cells, row)
	}
	return u
}

// latencyChart is the manifest latency per system.
func (r *report) latencyChart() *chart {
	l := &chart{file: "bench-manifest-latency.png", title: fmt.Sprintf("Manifest GETs by tag, %d concurrent clients (median of runs, min–max)", r.b.o.manClients), ylabel: "ms (log scale)", logY: true,
		series: []string{"p50", "p99"}}
	for _, x := range r.rowsOf(kindLatency, nil, 0) {
		p50, p99 := x.series(func(s sample) float64 { return ms(s.p50) }), x.series(func(s sample) float64 { return ms(s.p99) })
		l.clusters = append(l.clusters, plainLabel(x.sys))
		l.cells = append(l.cells, []*stat{&p50, &p99})
	}
	return l
}

func containsImg(xs []*image, img *image) bool {
	for _, x := range xs {
		if x == img {
			return true
		}
	}
	return false
}

// draw writes the data and the script to tmp and runs gnuplot.
func (c *chart) draw(gnuplot, tmp, path string) error {
	var data strings.Builder
	for i, cl := range c.clusters {
		data.WriteString(strings.ReplaceAll(cl, "\t", " "))
		for _, s := range c.cells[i] {
			if s == nil {
				data.WriteString("\t-\t-\t-")
				continue
			}
			fmt.Fprintf(&data, "\t%g\t%g\t%g", s.med, s.lo, s.hi)
		}
		data.WriteString("\n")
	}
	dataFile := filepath.Join(tmp, c.file+".dat")
	if err := os.WriteFile(dataFile, []byte(data.String()), 0o644); err != nil {
		return err
	}
	var sc strings.Builder
	fmt.Fprintf(&sc, "set terminal pngcairo size 1100,520 font 'sans,10' noenhanced\n")
	fmt.Fprintf(&sc, "set output %q\n", path)
	fmt.Fprintf(&sc, "set title %q\n", c.title)
	fmt.Fprintf(&sc, "set ylabel %q\n", c.ylabel)
	sc.WriteString("set datafile separator '\\t'\nset datafile missing '-'\n")
	sc.WriteString("set style data histogram\nset style histogram errorbars gap 1.5 lw 1\n")
	sc.WriteString("set style fill solid 0.85 border -1\nset boxwidth 0.9\n")
	sc.WriteString("set grid ytics\nset key outside right top vertical\nset xtics nomirror rotate by -15\n")
	if c.logY {
		sc.WriteString("set logscale y\n")
	} else {
		sc.WriteString("set yrange [0:*]\n")
	}
	sc.WriteString("plot ")
	for i, s := range c.series {
		if i > 0 {
			sc.WriteString(", ")
		}
		col := 2 + 3*i
		if i == 0 {
			fmt.Fprintf(&sc, "%q using %d:%d:%d:xtic(1) title %q", dataFile, col, col+1, col+2, s)
		} else {
			fmt.Fprintf(&sc, "'' using %d:%d:%d title %q", col, col+1, col+2, s)
		}
	}
	sc.WriteString("\n")
	script := filepath.Join(tmp, c.file+".gp")
	if err := os.WriteFile(script, []byte(sc.String()), 0o644); err != nil {
		return err
	}
	out, err := exec.Command(gnuplot, script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}
