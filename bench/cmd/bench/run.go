package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
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
	logf("upstream docker-registry pid %d at %s", reg.pid(), direct)
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
		logf("upstream docker-registry (TLS, same storage) pid %d at %s; counting proxy (TLS) at %s", tu.reg.pid(), tu.direct, tu.counted)
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
	if o.imgDir != "" && o.gnuplotBin != "" {
		charts, err := rep.charts(o.imgDir)
		if err != nil {
			logf("charts: %v", err)
		}
		rep.chartFiles = charts
	}
	fmt.Print(rep.tables())
	fmt.Println()
	fmt.Print(rep.targetTable())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(rep.markdown()), 0o644); err != nil {
			return err
		}
		logf("wrote %s", o.out)
	}
	if failed := rep.failedTargets(); len(failed) > 0 {
		logf("targets missed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// push pushes every image the selected groups need, concurrently.
func (b *bench) push(ctx context.Context) error {
	o := b.o
	type job struct {
		label, repo string
		sizes       []int64
		mib         int // single-layer images
	}
	jobs := []job{{fmt.Sprintf("%d MiB layer", o.sizeMiB), fmt.Sprintf("bench/single-%d", o.sizeMiB), []int64{int64(o.sizeMiB) << 20}, o.sizeMiB}}
	single := func(m int) {
		for _, j := range jobs {
			if j.mib == m {
				return
			}
		}
		jobs = append(jobs, job{fmt.Sprintf("%d MiB layer", m), fmt.Sprintf("bench/single-%d", m), []int64{int64(m) << 20}, m})
	}
	if o.runs("image") {
		sizes := make([]int64, o.layers)
		for i := range sizes {
			sizes[i] = int64(o.layerMiB) << 20
		}
		jobs = append(jobs, job{fmt.Sprintf("%d × %d MiB layers", o.layers, o.layerMiB), "bench/layered", sizes, 0})
	}
	if o.runs("warm") || o.runs("tls") || o.runs("memory") || o.runs("manifest") {
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
	t0 := time.Now()
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
			if j.mib > 0 {
				b.singles[j.mib] = img
			} else {
				b.layered = img
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	b.big = b.singles[o.sizeMiB]
	var names []string
	for _, j := range jobs {
		names = append(names, j.label)
	}
	b.log("pushed %s in %.1fs", strings.Join(names, ", "), time.Since(t0).Seconds())
	return nil
}

// groups runs the selected groups in order.
func (b *bench) groups(ctx context.Context) error {
	o := b.o
	pick := func(cands ...string) []string {
		var out []string
		for _, s := range cands {
			if o.has(s) {
				out = append(out, s)
			}
		}
		return out
	}
	cold := pick(sysDirect, sysOurs, sysDist, sysNginx)
	caching := pick(sysOurs, sysDist, sysNginx)
	warm := pick(sysDirect, sysOurs, sysDist, sysNginx, sysStatic)
	for _, g := range o.groups {
		b.log("group %s", g)
		var err error
		switch g {
		case "cold":
			for _, n := range []int{1, o.clients} {
				if err = b.coldSet(ctx, cold, b.big, n); err != nil {
					break
				}
			}
		case "image":
			for _, n := range []int{1, o.clients} {
				if err = b.coldSet(ctx, cold, b.layered, n); err != nil {
					break
				}
			}
		case "scaling":
			for _, m := range o.scalingMiB {
				if err = b.coldSet(ctx, caching, b.singles[m], o.clients); err != nil {
					break
				}
			}
		case "warm":
			for _, n := range o.warmClients {
				if err = b.warmSet(ctx, warm, b.warmImage(n), n); err != nil {
					break
				}
			}
		case "tls":
			tlsSys := []string{sysDirectTLS, sysShim}
			for _, n := range o.warmClients {
				if err = b.warmSet(ctx, tlsSys, b.warmImage(n), n); err != nil {
					break
				}
			}
		case "manifest":
			var tags []string
			if o.has(sysOurs) {
				tags = append(tags, sysOursOn, sysOursOff)
			}
			tags = append(tags, pick(sysDist, sysNginx)...)
			if err = b.tagPulls(ctx, tags); err != nil {
				break
			}
			lat := append(pick(sysDirect), tags...)
			err = b.latency(ctx, lat)
		case "memory":
			if err = b.warmSet(ctx, warm, b.warmImage(o.memClients), o.memClients); err != nil {
				break
			}
			err = b.coldSet(ctx, caching, b.singles[slices.Max(o.scalingMiB)], o.clients)
		}
		if err != nil {
			return fmt.Errorf("group %s: %w", g, err)
		}
	}
	return nil
}
