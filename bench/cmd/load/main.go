// Command load runs a bounded, loopback-only load against
// container-registry-proxy: 1,000 concurrent keep-alive clients on warm
// manifests and blobs for 60 s by default, over an upstream it runs itself
// (distribution v3, in process). It prints requests per second, errors,
// latency percentiles per request kind and the proxy's RSS, goroutines and
// descriptors before, at the peak and after, and exits 1 when a request
// failed or the goroutines and descriptors did not come back within 10 %.
// See package bench/load; bench/run.sh --only load builds and runs it.
//
//	load --proxy-bin ./container-registry-proxy [--clients 1000] [--duration 60s]
//	     [--out section.md] [--page docs/benchmarks.md]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gmarcy/container-registry-proxy/bench/load"
)

func main() {
	var (
		o       load.Options
		out     string
		page    string
		command string
	)
	flag.StringVar(&o.ProxyBin, "proxy-bin", "", "proxy binary to start (or --addr)")
	flag.StringVar(&o.Addr, "addr", "", "base URL of a running proxy on loopback (http://127.0.0.1:PORT), configured with --registry at --upstream-listen (insecure: true)")
	flag.IntVar(&o.PID, "pid", 0, "with --addr: the proxy's process id, for RSS and descriptors (0: goroutines only)")
	flag.StringVar(&o.Registry, "registry", "load.test", "registry name of the upstream in the proxy's paths (/v2/<registry>/…)")
	flag.StringVar(&o.UpstreamListen, "upstream-listen", "127.0.0.1:0", "loopback address of the upstream this program runs")
	flag.IntVar(&o.Clients, "clients", 1000, "concurrent clients, one keep-alive connection each")
	flag.DurationVar(&o.Duration, "duration", 0, "measured run (default 60s)")
	flag.DurationVar(&o.Warm, "warm", 0, "the same load before \"before\" is read (default 5s)")
	flag.DurationVar(&o.Settle, "settle", 0, "rest between the warm-up and \"before\" (default 5s)")
	flag.DurationVar(&o.AfterMax, "after-max", 0, "longest wait for the goroutines and descriptors to come back (default 60s)")
	flag.IntVar(&o.Images, "images", 4, "images pushed upstream (each a config, a small and a large layer)")
	flag.IntVar(&o.SmallKiB, "small-kib", 16, "size of each image's small layer, KiB")
	flag.IntVar(&o.BigKiB, "big-kib", 1024, "size of each image's large layer, KiB")
	flag.IntVar(&o.VerifyEvery, "verify-every", 20, "hash every Nth blob body of each client (manifests always)")
	flag.StringVar(&out, "out", "", "write the Markdown section to this file")
	flag.StringVar(&page, "page", "", "put the Markdown section into this page (docs/benchmarks.md), replacing the previous one")
	flag.StringVar(&command, "command", "", "command line to record in the section (default: this program's)")
	flag.Parse()
	if command == "" {
		command = strings.Join(os.Args, " ")
	}
	o.Log = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "load: "+format+"\n", args...) }

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	res, err := load.Run(ctx, o)
	stop()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "load: interrupted")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
	fmt.Print(res.Text())
	section := res.Markdown(command)
	if err := write(out, page, section); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
	if !res.OK() {
		fmt.Fprintln(os.Stderr, "load: FAILED: requests failed, or the goroutines and descriptors did not come back within 10 %")
		os.Exit(1)
	}
}

// write writes the section to out and into page, when given.
func write(out, page, section string) error {
	if out != "" {
		if err := os.WriteFile(out, []byte(section), 0o644); err != nil {
			return err
		}
	}
	if page == "" {
		return nil
	}
	old, err := os.ReadFile(page)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(page, []byte(load.Splice(string(old), section)), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "load: wrote the section into", page)
	return nil
}
