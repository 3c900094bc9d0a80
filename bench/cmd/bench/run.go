package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// run sets up the upstream, runs the selected scenarios and reports.
func run(ctx context.Context, e *env, o options) error {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
	started, load0 := time.Now(), loadAvg()
	reg, direct, err := startRegistry(ctx, e, o.registryBin)
	if err != nil {
		return err
	}
	logf("upstream docker-registry pid %d at %s", reg.pid(), direct)
	size := int64(o.sizeMiB) << 20
	t0 := time.Now()
	img, err := pushImage(ctx, direct, "bench/big", "v1", size)
	if err != nil {
		return err
	}
	logf("pushed %s:%s, layer %s (%d MiB) in %.1fs", img.repo, img.tag, img.blobDigest, o.sizeMiB, time.Since(t0).Seconds())
	cnt, counted, stopCounter, err := startCounter(direct)
	if err != nil {
		return err
	}
	defer stopCounter()
	logf("counting proxy at %s", counted)

	b := &bench{e: e, o: o, img: img, direct: direct, counted: counted, cnt: cnt, log: logf}
	var all []*scenario
	refs, err := b.reference(ctx)
	if err != nil {
		return err
	}
	all = append(all, refs...)
	var cold1, coldN, warmHashed, warm *scenario
	if o.only != "warm" {
		if cold1, err = b.cold(ctx, 1); err != nil {
			return err
		}
		if coldN, err = b.cold(ctx, o.clients); err != nil {
			return err
		}
		all = append(all, cold1, coldN)
	}
	if o.only != "cold" {
		if warmHashed, warm, err = b.warm(ctx, o.clients); err != nil {
			return err
		}
		all = append(all, warmHashed, warm)
	}
	if err := e.stop(reg); err != nil {
		logf("%v", err)
	}

	rep := report{
		o: o, img: img, scenarios: all, cold1: cold1, coldN: coldN, warm: warm, warmHashed: warmHashed,
		machine: machineInfo(o, load0), took: time.Since(started),
	}
	md := rep.markdown()
	fmt.Print(rep.table())
	fmt.Println()
	fmt.Print(rep.targets())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return err
		}
		logf("wrote %s", o.out)
	}
	if failed := rep.failedTargets(); len(failed) > 0 {
		logf("targets missed: %s", strings.Join(failed, "; "))
	}
	return nil
}
