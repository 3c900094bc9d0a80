package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/bench/load"
)

// run sets up the upstream, pushes the images, runs the selected groups
// and reports.
func run(ctx context.Context, e *env, o options) error {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
	started, load0 := time.Now(), loadAvg()
	reg, direct, err := startRegistry(ctx, e, o.registryBin, nil)
	if err != nil {
		return err
	}
	logf("upstream docker-registry pid %d at %s", reg.Pid(), direct)
	logf("clients: --client %s (plain-HTTP blob bodies %s), --verify %s", o.client,
		map[string]string{"splice": "spliced to /dev/null unless verified", "copy": "read into user space"}[o.client], o.verify)
	b := &bench{e: e, o: o, reg: reg, direct: direct, log: logf, singles: map[int]*image{}, warm: map[string]*instance{}}
	if err := b.push(ctx); err != nil {
		return err
	}
	cnt, counted, stopCounter, err := startCounter(direct, nil)
	if err != nil {
		return err
	}
	defer stopCounter()
	b.cnt, b.counted = cnt, counted
	logf("counting proxy at %s", counted)
	if o.runs("tls") {
		tu, stopTLSCounter, err := startTLSUpstream(ctx, e, o.registryBin)
		if err != nil {
			return err
		}
		defer stopTLSCounter()
		b.tls = tu
		logf("upstream docker-registry (TLS, same storage) pid %d at %s; counting proxy (TLS) at %s", tu.reg.Pid(), tu.direct, tu.counted)
	}

	err = b.groups(ctx)
	b.stopWarm()
	if err != nil {
		return err
	}
	if b.tls != nil {
		if err := e.stop(b.tls.reg); err != nil {
			logf("%v", err)
		}
	}
	if err := e.stop(reg); err != nil {
		logf("%v", err)
	}

	rep := &report{b: b, machine: machineInfo(o, load0), took: time.Since(started)}
	return rep.publish()
}

// publish draws the charts (with --img-dir and gnuplot), prints the
// tables and the targets, writes the page (--out) and logs the missed
// targets.
func (r *report) publish() error {
	o := r.b.o
	if o.imgDir != "" && o.gnuplotBin != "" {
		charts, err := r.charts(o.imgDir)
		if err != nil {
			r.b.log("charts: %v", err)
		}
		r.chartFiles = charts
	}
	fmt.Print(r.tables())
	fmt.Println()
	fmt.Print(r.targetTable())
	if o.out != "" {
		page := r.markdown()
		// The load section (bench/run.sh --only load) is measured apart:
		// keep it.
		if old, err := os.ReadFile(o.out); err == nil {
			if block := load.Section(string(old)); block != "" {
				page = load.SpliceBlock(page, block)
			}
		}
		if err := os.WriteFile(o.out, []byte(page), 0o644); err != nil {
			return err
		}
		r.b.log("wrote %s", o.out)
	}
	if failed := r.failedTargets(); len(failed) > 0 {
		r.b.log("targets missed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// pushJob is an image to push.
type pushJob struct {
	label, repo string
	sizes       []int64
	mib         int  // single-layer images
	hit         bool // an image of the hit latency rows (b.hits)
}

// push pushes every image the selected groups need, concurrently.
func (b *bench) push(ctx context.Context) error {
	jobs := b.pushJobs()
	t0 := time.Now()
	if err := b.pushAll(ctx, jobs); err != nil {
		return err
	}
	b.big = b.singles[b.o.sizeMiB]
	var names []string
	for _, j := range jobs {
		names = append(names, j.label)
	}
	b.log("pushed %s in %.1fs", strings.Join(names, ", "), time.Since(t0).Seconds())
	return nil
}

// pushJobs lists the images the selected groups need: the --size-mib one
// first, each single-layer size once.
func (b *bench) pushJobs() []pushJob {
	o := b.o
	jobs := []pushJob{{label: fmt.Sprintf("%d MiB layer", o.sizeMiB), repo: fmt.Sprintf("bench/single-%d", o.sizeMiB), sizes: []int64{int64(o.sizeMiB) << 20}, mib: o.sizeMiB}}
	single := func(m int) {
		for _, j := range jobs {
			if j.mib == m {
				return
			}
		}
		jobs = append(jobs, pushJob{label: fmt.Sprintf("%d MiB layer", m), repo: fmt.Sprintf("bench/single-%d", m), sizes: []int64{int64(m) << 20}, mib: m})
	}
	if o.runs("image") {
		sizes := make([]int64, o.layers)
		for i := range sizes {
			sizes[i] = int64(o.layerMiB) << 20
		}
		jobs = append(jobs, pushJob{label: fmt.Sprintf("%d × %d MiB layers", o.layers, o.layerMiB), repo: "bench/layered", sizes: sizes})
	}
	if o.runs("replicas") {
		for _, k := range o.hitKiB {
			jobs = append(jobs, pushJob{label: kibLabel(k), repo: fmt.Sprintf("bench/hit-%dk", k), sizes: []int64{int64(k) << 10}, hit: true})
		}
	}
	if o.runs("warm") || o.runs("tls") || o.runs("memory") || o.runs("manifest") || o.runs("replicas") {
		for _, n := range append(slices.Clone(o.warmClients), o.memClients) {
			if n > o.clients {
				single(o.manyMiB)
			}
		}
	}
	if o.runs("scaling") {
		for _, m := range o.scalingMiB {
			single(m)
		}
	}
	if o.runs("memory") {
		single(slices.Max(o.scalingMiB))
	}
	return jobs
}

// pushAll pushes the jobs' images concurrently into singles and layered;
// it returns the first error.
func (b *bench) pushAll(ctx context.Context, jobs []pushJob) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := pushImage(ctx, b.direct, j.label, j.repo, "v1", j.sizes)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = err
				}
				return
			}
			switch {
			case j.hit:
				b.hits = append(b.hits, img)
				slices.SortFunc(b.hits, func(x, y *image) int { return int(x.blobBytes() - y.blobBytes()) })
			case j.mib > 0:
				b.singles[j.mib] = img
			default:
				b.layered = img
			}
		}()
	}
	wg.Wait()
	return first
}

// kibLabel names a one-layer image of k KiB ("4 KiB blob", "1 MiB blob").
func kibLabel(k int) string {
	if k%1024 == 0 {
		return fmt.Sprintf("%d MiB blob", k/1024)
	}
	return fmt.Sprintf("%d KiB blob", k)
}

// groups runs the selected groups in order.
func (b *bench) groups(ctx context.Context) error {
	for _, g := range b.o.groups {
		b.log("group %s", g)
		if err := b.group(ctx, g); err != nil {
			return fmt.Errorf("group %s: %w", g, err)
		}
	}
	return nil
}

// selected returns the systems among cands that --systems selected.
func (b *bench) selected(cands ...string) []string {
	var out []string
	for _, s := range cands {
		if b.o.has(s) {
			out = append(out, s)
		}
	}
	return out
}

// group runs group g; it stops at the first error.
func (b *bench) group(ctx context.Context, g string) error {
	o := b.o
	cold := b.selected(sysDirect, sysOurs, sysDist, sysNginx)
	caching := b.selected(sysOurs, sysDist, sysNginx)
	warm := b.selected(sysDirect, sysOurs, sysDist, sysNginx, sysStatic)
	switch g {
	case "cold", "image":
		img := b.big
		if g == "image" {
			img = b.layered
		}
		for _, n := range []int{1, o.clients} {
			if err := b.coldSet(ctx, cold, img, n); err != nil {
				return err
			}
		}
	case "scaling":
		for _, m := range o.scalingMiB {
			if err := b.coldSet(ctx, caching, b.singles[m], o.clients); err != nil {
				return err
			}
		}
	case "warm", "tls":
		systems := warm
		if g == "tls" {
			systems = []string{sysDirectTLS, sysShim}
		}
		for _, n := range o.warmClients {
			if err := b.warmSet(ctx, systems, b.warmImage(n), n); err != nil {
				return err
			}
		}
	case "manifest":
		return b.manifestGroup(ctx)
	case "replicas":
		return b.replicasGroup(ctx)
	case "memory":
		if err := b.warmSet(ctx, warm, b.warmImage(o.memClients), o.memClients); err != nil {
			return err
		}
		return b.coldSet(ctx, caching, b.singles[slices.Max(o.scalingMiB)], o.clients)
	}
	return nil
}

// manifestGroup runs the tag pulls of ours (manifest cache on and off)
// and the caching peers, then the latency runs of those and the upstream.
func (b *bench) manifestGroup(ctx context.Context) error {
	var tags []string
	if b.o.has(sysOurs) {
		tags = append(tags, sysOursOn, sysOursOff)
	}
	tags = append(tags, b.selected(sysDist, sysNginx)...)
	if err := b.tagPulls(ctx, tags); err != nil {
		return err
	}
	return b.latency(ctx, append(b.selected(sysDirect), tags...))
}
