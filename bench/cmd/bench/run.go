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
	reg, direct, err := startRegistry(ctx, e, o.registryBin, nil)
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
	cnt, counted, stopCounter, err := startCounter(direct, nil)
	if err != nil {
		return err
	}
	defer stopCounter()
	logf("counting proxy at %s", counted)

	b := &bench{e: e, o: o, img: img, direct: direct, counted: counted, cnt: cnt, log: logf}
	runs := func(what string) bool { return o.only == "all" || o.only == what }
	var all []*scenario
	if o.only != "shim" {
		refs, err := b.reference(ctx)
		if err != nil {
			return err
		}
		all = append(all, refs...)
	}
	var cold1, coldN, warmHashed, warm *scenario
	if runs("cold") {
		if cold1, err = b.cold(ctx, 1); err != nil {
			return err
		}
		if coldN, err = b.cold(ctx, o.clients); err != nil {
			return err
		}
		all = append(all, cold1, coldN)
	}
	if runs("warm") {
		if warmHashed, warm, err = b.warm(ctx, o.clients); err != nil {
			return err
		}
		all = append(all, warmHashed, warm)
	}
	var tlsRows *shimRows
	if runs("shim") {
		tu, stopTLSCounter, err := startTLSUpstream(ctx, e, o.registryBin)
		if err != nil {
			return err
		}
		defer stopTLSCounter()
		logf("upstream docker-registry (TLS, same storage) pid %d at %s; counting proxy (TLS) at %s", tu.reg.pid(), tu.direct, tu.counted)
		b.tls = tu
		if tlsRows, err = b.shim(ctx, o.clients); err != nil {
			return err
		}
		all = append(all, tlsRows.directHashed, tlsRows.direct, tlsRows.viaHashed, tlsRows.via)
		if err := e.stop(tu.reg); err != nil {
			logf("%v", err)
		}
	}
	if err := e.stop(reg); err != nil {
		logf("%v", err)
	}

	rep := report{
		o: o, img: img, scenarios: all, cold1: cold1, coldN: coldN, warm: warm, warmHashed: warmHashed, tls: tlsRows,
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
