package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/warm"
	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
)

// runWarm is the warm subcommand: package warm does the work; this is
// the command line, the configuration, --direct and the exit status.
func runWarm(args []string, env func(string) string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("warm", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	direct := fs.Bool("direct", false, "fill the local cache directly, without a running proxy (needs the cache directory to itself)")
	cfgFile := fs.String("config", "", "the proxy's YAML configuration file (for listen, registries and --direct)")
	listen := fs.String("listen", "", "the proxy's listen address (overrides the configuration)")
	cacheDir := fs.String("cache-dir", "", "cache directory for --direct (overrides the configuration)")
	wa, err := warm.ParseArgs(fs, args, os.Stdin)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprint(stdout, warm.Usage+fs.FlagUsages())
		return 0
	}
	if err == nil && wa.Proxy != "" && *direct {
		err = errors.New("--proxy and --direct exclude each other")
	}
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy warm: %s\n(see container-registry-proxy warm --help)\n", oneLine(err))
		return 2
	}
	var cfg *config.Config
	if wa.Proxy == "" || *cfgFile != "" || *direct {
		var cfgArgs []string
		for _, f := range []struct{ flag, value string }{{"--config", *cfgFile}, {"--listen", *listen}, {"--cache-dir", *cacheDir}} {
			if f.value != "" {
				cfgArgs = append(cfgArgs, f.flag, f.value)
			}
		}
		if cfg, err = config.Load(cfgArgs, env); err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy warm: configuration error: %s\n", oneLine(err))
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return warmImages(ctx, wa, cfg, *direct, stdout, stderr)
}

// warmImages finds the proxy (--proxy, --direct or the configured listen
// address), warms the images through it and returns the exit status.
func warmImages(ctx context.Context, wa warm.Args, cfg *config.Config, direct bool, stdout, stderr io.Writer) int {
	base := wa.Proxy
	switch {
	case direct:
		var done func()
		var err error
		if base, done, err = serveDirect(ctx, cfg, stderr); err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy warm --direct: %s\n", oneLine(err))
			return 1
		}
		defer done()
	case base == "":
		var err error
		if base, err = localURL(cfg.Listen); err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy warm: %v (name the proxy with --proxy)\n", err)
			return 2
		}
	}
	out := warm.NewOutput(stdout, stderr)
	opts := wa.Options
	opts.Progress = out
	if cfg != nil {
		opts.Namespaces = cfg.Namespaces()
	}
	opts.UserAgent = warm.DefaultUserAgent + "/" + Version
	w, err := warm.New(base, opts)
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy warm: %s\n", oneLine(err))
		return 2
	}
	results := w.WarmAll(ctx, wa.Images)
	out.Summary(results)
	failed := 0
	for _, r := range results {
		if r.Err != nil {
			failed++
		}
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintf(stderr, "container-registry-proxy warm: interrupted after %d of %d images\n", len(results), len(wa.Images))
		return 1
	case failed > 0:
		fmt.Fprintf(stderr, "container-registry-proxy warm: %d of %d images failed\n", failed, len(results))
		return 1
	}
	return 0
}

// serveDirect builds the proxy from cfg in this process on a loopback
// port, for warm --direct: the cache is filled exactly as a running proxy
// would. done shuts it down, letting fills commit.
func serveDirect(ctx context.Context, cfg *config.Config, stderr io.Writer) (string, func(), error) {
	log := newLogger(cfg, stderr)
	if !cfg.Debug {
		log.SetLevel(logrus.WarnLevel)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a, err := build(sctx, cfg, log)
	if err != nil {
		cancel()
		var ce *configError
		if errors.As(err, &ce) && strings.Contains(err.Error(), "held by another") {
			err = fmt.Errorf("%w (warm through the running proxy instead: drop --direct)", err)
		}
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return "", nil, errors.Join(err, a.close())
	}
	served := make(chan error, 1)
	go func() { served <- serveOn(sctx, ln, a, log, cfg) }()
	done := func() {
		cancel()
		if err := <-served; err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy warm --direct: shutdown: %v\n", err)
		}
		if err := a.close(); err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy warm --direct: releasing the cache: %v\n", err)
		}
	}
	return "http://" + ln.Addr().String(), done, nil
}
