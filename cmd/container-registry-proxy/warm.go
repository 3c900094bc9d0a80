package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
)

const warmUsage = `Usage: container-registry-proxy warm [flags] IMAGE...

Pulls images through a running proxy (or, with --direct, into the local
cache without one) so that the first real pull is a hit. IMAGE is a name as
docker takes it: alpine is docker.io/library/alpine:latest;
quay.io/org/app:v1, registry.local:5000/team/app@sha256:… name other
registries (they must be configured in the proxy).

Exit status: 0 when every image was warmed, 1 when any failed, 2 on bad
arguments.

Flags:
`

// warmArgs are the parsed arguments of the warm subcommand.
type warmArgs struct {
	images    []imageRef
	wants     []platform
	all       bool
	proxy     string
	direct    bool
	user      string
	pass      string
	jobs      int
	cfgArgs   []string // for config.Load: --config, --listen, --cache-dir
	needsConf bool
}

// parseWarmArgs parses the warm subcommand's arguments; errors are bad
// arguments (exit 2). help is set for -h/--help.
func parseWarmArgs(args []string, stdout io.Writer) (wa warmArgs, help bool, err error) {
	fs := pflag.NewFlagSet("warm", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	platforms := fs.StringArray("platform", nil, "os/arch[/variant] to warm from multi-platform images (repeatable; \"all\" for every one; default linux/amd64)")
	files := fs.StringArray("file", nil, "read image names from this file, one per line (# comments; repeatable; - for stdin)")
	proxy := fs.String("proxy", "", "the proxy's base URL (default http://127.0.0.1:<port of the configured listen>)")
	direct := fs.Bool("direct", false, "fill the local cache directly, without a running proxy (needs the cache directory to itself)")
	user := fs.String("user", "", "USER:PASSWORD of a proxy user (clientAuth.htpasswd), for registries served to proxy users only")
	jobs := fs.Int("jobs", 4, "blobs fetched at once per image")
	cfgFile := fs.String("config", "", "the proxy's YAML configuration file (for listen, registries and --direct)")
	listen := fs.String("listen", "", "the proxy's listen address (overrides the configuration)")
	cacheDir := fs.String("cache-dir", "", "cache directory for --direct (overrides the configuration)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, warmUsage+fs.FlagUsages())
			return wa, true, nil
		}
		return wa, false, err
	}
	wa = warmArgs{proxy: *proxy, direct: *direct, jobs: *jobs}
	if *jobs < 1 || *jobs > 64 {
		return wa, false, fmt.Errorf("--jobs %d: want 1 to 64", *jobs)
	}
	if *user != "" {
		u, p, ok := strings.Cut(*user, ":")
		if !ok || u == "" {
			return wa, false, errors.New("--user: want USER:PASSWORD")
		}
		wa.user, wa.pass = u, p
	}
	if wa.proxy != "" && wa.direct {
		return wa, false, errors.New("--proxy and --direct exclude each other")
	}
	if wa.proxy != "" {
		u, err := url.Parse(wa.proxy)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return wa, false, fmt.Errorf("--proxy %q: want http(s)://host:port", wa.proxy)
		}
		wa.proxy = strings.TrimSuffix(wa.proxy, "/")
	}
	for _, p := range *platforms {
		for _, one := range strings.Split(p, ",") {
			if strings.TrimSpace(one) == "all" {
				wa.all = true
				continue
			}
			pl, err := parsePlatform(one)
			if err != nil {
				return wa, false, fmt.Errorf("--platform: %w", err)
			}
			wa.wants = append(wa.wants, pl)
		}
	}
	if len(wa.wants) == 0 {
		wa.wants = []platform{{OS: "linux", Arch: "amd64"}}
	}
	names := fs.Args()
	for _, f := range *files {
		more, err := readImageList(f)
		if err != nil {
			return wa, false, fmt.Errorf("--file: %w", err)
		}
		names = append(names, more...)
	}
	if len(names) == 0 {
		return wa, false, errors.New("no images given: name them as arguments or with --file")
	}
	seen := map[string]bool{}
	for _, n := range names {
		ref, err := parseImage(n)
		if err != nil {
			return wa, false, err
		}
		if !seen[ref.String()] {
			seen[ref.String()] = true
			wa.images = append(wa.images, ref)
		}
	}
	if *cfgFile != "" {
		wa.cfgArgs = append(wa.cfgArgs, "--config", *cfgFile)
	}
	if *listen != "" {
		wa.cfgArgs = append(wa.cfgArgs, "--listen", *listen)
	}
	if *cacheDir != "" {
		wa.cfgArgs = append(wa.cfgArgs, "--cache-dir", *cacheDir)
	}
	wa.needsConf = wa.proxy == "" || *cfgFile != ""
	return wa, false, nil
}

// readImageList reads image names, one per line; blank lines and # comments
// are skipped.
func readImageList(path string) ([]string, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// runWarm is the warm subcommand.
func runWarm(args []string, env func(string) string, stdout, stderr io.Writer) int {
	wa, help, err := parseWarmArgs(args, stdout)
	if help {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy warm: %s\n(see container-registry-proxy warm --help)\n", oneLine(err))
		return 2
	}
	var cfg *config.Config
	if wa.needsConf || wa.direct {
		if cfg, err = config.Load(wa.cfgArgs, env); err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy warm: configuration error: %s\n", oneLine(err))
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	base := wa.proxy
	switch {
	case wa.direct:
		var done func()
		base, done, err = serveDirect(ctx, cfg, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy warm --direct: %s\n", oneLine(err))
			return 1
		}
		defer done()
	case base == "":
		if base, err = localURL(cfg.Listen); err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy warm: %v (name the proxy with --proxy)\n", err)
			return 2
		}
	}
	w := &warmer{
		base:      base,
		client:    warmClient(),
		user:      wa.user,
		pass:      wa.pass,
		namespace: namespaces(cfg),
		wants:     wa.wants,
		all:       wa.all,
		jobs:      wa.jobs,
	}
	out := &warmOutput{out: stdout, errw: stderr, tty: isTerminal(stdout)}
	results := make([]warmResult, 0, len(wa.images))
	failed := 0
	for _, ref := range wa.images {
		r := w.warm(ctx, ref, func(total int64) { out.begin(ref.String(), total) }, out.progress)
		out.done(r)
		results = append(results, r)
		if r.Err != nil {
			failed++
		}
		if ctx.Err() != nil {
			break
		}
	}
	out.summary(results)
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "container-registry-proxy warm: interrupted after %d of %d images\n", len(results), len(wa.images))
		return 1
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "container-registry-proxy warm: %d of %d images failed\n", failed, len(results))
		return 1
	}
	return 0
}

// warmClient talks to the proxy directly (never through HTTP(S)_PROXY).
func warmClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   64,
		ResponseHeaderTimeout: 10 * time.Minute,
		IdleConnTimeout:       90 * time.Second,
	}}
}

// namespaces maps a registry host to its mirror path prefix: the
// configured namespace when the configuration names the registry, else
// the host with ':' → '_' (docker.io for Docker Hub).
func namespaces(cfg *config.Config) func(string) string {
	known := map[string]string{}
	if cfg != nil {
		for _, rc := range cfg.Upstreams() {
			known[oci.CanonicalHost(rc.Host)] = rc.Namespace
		}
	}
	return func(host string) string {
		if ns := known[host]; ns != "" {
			return ns
		}
		return oci.NamespaceFor(host)
	}
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
		a.life.Close()
		return "", nil, err
	}
	served := make(chan error, 1)
	go func() { served <- serveOn(sctx, ln, a, log, cfg) }()
	done := func() {
		cancel()
		if err := <-served; err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy warm --direct: shutdown: %v\n", err)
		}
		if a.lock != nil {
			a.lock.Close()
		}
	}
	return "http://" + ln.Addr().String(), done, nil
}
