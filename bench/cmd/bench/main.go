// Command bench measures container-registry-proxy against a real upstream
// (Debian's docker-registry, distribution 2.8): cold pulls of one large
// blob by one and by many clients, warm throughput (plain HTTP, and TLS
// through the CONNECT shim next to a direct TLS download from the
// upstream), bytes fetched from upstream (counted by a reverse proxy in
// front of it, not assumed) and the proxy's peak RSS. It prints a Markdown report and writes it to --out.
//
// It is run by bench/run.sh, which installs docker-registry and builds the
// proxy; see docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// options are the command-line flags.
type options struct {
	sizeMiB     int
	clients     int
	repeat      int
	warmRounds  int
	only        string
	proxyBin    string
	registryBin string
	out         string
	command     string
	notes       string
	keep        bool
	tlsHTTP1    bool
}

func main() {
	var o options
	flag.IntVar(&o.sizeMiB, "size-mib", 256, "size of the random layer blob in MiB")
	flag.IntVar(&o.clients, "clients", 8, "concurrent clients for the multi-client scenarios")
	flag.IntVar(&o.repeat, "repeat", 3, "repetitions of each cold scenario (fresh cache each)")
	flag.IntVar(&o.warmRounds, "warm-rounds", 5, "timed rounds of the warm scenario (after one verifying round)")
	flag.StringVar(&o.only, "only", "all", "scenarios to run: cold, warm, shim (TLS: direct from the upstream and warm through the CONNECT shim) or all")
	flag.BoolVar(&o.tlsHTTP1, "tls-http1", false, "TLS scenarios: clients speak HTTP/1.1 only (default: h2 by ALPN)")
	flag.StringVar(&o.proxyBin, "proxy-bin", "", "container-registry-proxy binary (required)")
	flag.StringVar(&o.registryBin, "registry-bin", "/usr/bin/docker-registry", "distribution 2.8 registry binary (upstream)")
	flag.StringVar(&o.out, "out", "", "write the Markdown report to this file too")
	flag.StringVar(&o.command, "command", "", "command line to record in the report (default: this program's)")
	flag.StringVar(&o.notes, "notes", "", "Markdown file appended to the report as its Analysis section")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs) for inspection")
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		flag.Usage()
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env, err := newEnv(o.keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	err = run(ctx, env, o)
	stop()
	env.cleanup()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "bench: interrupted")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		os.Exit(1)
	}
}

func (o *options) validate() error {
	switch {
	case o.proxyBin == "":
		return errors.New("--proxy-bin is required")
	case o.sizeMiB < 1:
		return errors.New("--size-mib must be at least 1")
	case o.clients < 1:
		return errors.New("--clients must be at least 1")
	case o.repeat < 1:
		return errors.New("--repeat must be at least 1")
	case o.warmRounds < 1:
		return errors.New("--warm-rounds must be at least 1")
	}
	switch o.only {
	case "cold", "warm", "shim", "all":
	default:
		return fmt.Errorf("--only %q: want cold, warm, shim or all", o.only)
	}
	return nil
}
