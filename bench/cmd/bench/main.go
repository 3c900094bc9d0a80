// Command bench measures container-registry-proxy side by side with its
// peers, in one run on one machine, against the same upstream (Debian's
// docker-registry, distribution 2.8, on loopback):
//
//   - distribution 2.8 in pull-through proxy mode (proxy.remoteurl),
//   - nginx as a caching reverse proxy for blobs (proxy_cache with
//     proxy_cache_lock, the engine of the original project),
//   - nginx serving the upstream's blob files statically with sendfile
//     (the practical limit of the machine),
//   - direct downloads from the upstream over plain HTTP and over TLS.
//
// Scenarios: cold pulls of one large layer and of a many-layer image by
// one and by many clients, warm throughput (plain HTTP, and TLS through
// the CONNECT shim), manifest-by-tag upstream requests and latency, peak
// memory, scaling with the blob size, and ours on S3 (versitygw) with
// Redis: cold fills over 1 and 3 replicas, warm throughput, blob hit
// latency, redirects to the bucket. Upstream bytes and requests are
// counted by a reverse proxy in front of the upstream, not assumed.
//
// It prints Markdown tables, writes them to --out and PNG charts (gnuplot)
// to --img-dir. bench/run.sh installs the peers and builds the proxy; see
// docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Groups of scenarios (--only), in the order they run.
var allGroups = []string{"cold", "image", "scaling", "warm", "tls", "manifest", "memory", "replicas"}

// Systems (--systems). The TLS rows (direct-tls, ours-shim) belong to the
// tls group and need no entry here.
var allSystems = []string{sysDirect, sysOurs, sysDist, sysNginx, sysStatic}

// options are the command-line flags.
type options struct {
	sizeMiB       int
	clients       int
	layers        int
	layerMiB      int
	warmClients   []int
	manyMiB       int
	memClients    int
	manClients    int
	manRequests   int
	manSeconds    float64
	tagPulls      int
	scalingMiB    []int
	repeat        int
	parallel      int
	verify        string
	client        string
	groups        []string
	systems       []string
	tlsHTTP1      bool
	proxyBin      string
	registryBin   string
	nginxBin      string
	gnuplotBin    string
	out           string
	imgDir        string
	command       string
	notes         string
	keep          bool
	rawOnly       string
	rawSystems    string
	rawWarm       string
	rawScaling    string
	roundTimeoutS int
	rawHitKiB     string
	hitKiB        []int
	hitRequests   int
	versitygwBin  string
	redisBin      string
	s3NoKeepAlive bool
}

func main() {
	var o options
	flag.IntVar(&o.sizeMiB, "size-mib", 256, "size of the single-layer image's layer (cold and 8-client warm rows), MiB")
	flag.IntVar(&o.clients, "clients", 8, "concurrent clients of the multi-client cold rows (and the scaling rows)")
	flag.IntVar(&o.layers, "layers", 20, "layers of the many-layer image")
	flag.IntVar(&o.layerMiB, "layer-mib", 4, "size of each layer of the many-layer image, MiB")
	flag.StringVar(&o.rawWarm, "warm-clients", "8,64", "concurrent clients of the warm rows, comma-separated")
	flag.IntVar(&o.manyMiB, "many-mib", 32, "layer size for rows with more clients than --clients (warm 64, memory 100), MiB")
	flag.IntVar(&o.memClients, "mem-clients", 100, "concurrent warm pulls of the memory row")
	flag.IntVar(&o.manClients, "manifest-clients", 100, "concurrent clients of the manifest latency rows")
	flag.IntVar(&o.manRequests, "manifest-requests", 500, "at most this many manifest GETs per client per latency run")
	flag.Float64Var(&o.manSeconds, "manifest-seconds", 2, "at most this long per latency run (a client stops after its GET in flight)")
	flag.IntVar(&o.tagPulls, "tag-pulls", 100, "sequential tag pulls per run of the upstream-requests rows")
	flag.StringVar(&o.rawScaling, "scaling-mib", "16,256,1024", "blob sizes of the scaling rows, MiB, comma-separated")
	flag.IntVar(&o.repeat, "repeat", 3, "runs (cold) or rounds (warm) of each timed figure")
	flag.IntVar(&o.parallel, "parallel", 3, "concurrent blob downloads per client (Docker's default is 3)")
	flag.StringVar(&o.verify, "verify", "one", "which clients hash bodies and check the digest: one (the first of each run), all, none")
	flag.StringVar(&o.client, "client", "splice", "how clients take plain-HTTP blob bodies: splice (to /dev/null with splice(2), zero-copy, unless they verify the digest) or copy (read into user space, like curl); TLS rows and digest checks always copy")
	flag.StringVar(&o.rawOnly, "only", "all", "groups to run, comma-separated: "+strings.Join(allGroups, ", ")+" (shim = tls; s3, redirect = replicas), or all")
	flag.StringVar(&o.rawSystems, "systems", "all", "systems, comma-separated: "+strings.Join(allSystems, ", ")+", or all")
	flag.BoolVar(&o.tlsHTTP1, "tls-http1", false, "TLS rows: clients speak HTTP/1.1 only (default: h2 by ALPN)")
	flag.StringVar(&o.proxyBin, "proxy-bin", "", "container-registry-proxy binary (required)")
	flag.StringVar(&o.registryBin, "registry-bin", "/usr/bin/docker-registry", "distribution 2.8 registry binary (upstream and peer)")
	flag.StringVar(&o.nginxBin, "nginx-bin", "/usr/sbin/nginx", "nginx binary (peers)")
	flag.StringVar(&o.gnuplotBin, "gnuplot-bin", "gnuplot", `gnuplot binary for the charts ("" skips them)`)
	flag.StringVar(&o.out, "out", "", "write the Markdown report to this file too")
	flag.StringVar(&o.imgDir, "img-dir", "", "write the PNG charts to this directory (linked from --out relative to it)")
	flag.StringVar(&o.command, "command", "", "command line to record in the report (default: this program's)")
	flag.StringVar(&o.notes, "notes", "", "Markdown file appended to the report as its Analysis section")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs) for inspection")
	flag.IntVar(&o.roundTimeoutS, "round-timeout", 300, "seconds after which one run or round is abandoned")
	flag.StringVar(&o.rawHitKiB, "hit-kib", "4,1024", "replicas group: blob sizes of the hit latency rows, KiB, comma-separated")
	flag.IntVar(&o.hitRequests, "hit-requests", 200, "replicas group: sequential GETs per hit latency run")
	flag.StringVar(&o.versitygwBin, "versitygw-bin", "", "replicas group: versitygw binary, the S3 server (default: in PATH or GOPATH/bin)")
	flag.StringVar(&o.redisBin, "redis-bin", "redis-server", "replicas group: redis-server binary")
	flag.BoolVar(&o.s3NoKeepAlive, "s3-no-keep-alive", false, "replicas group: versitygw closes every connection after one request (its default; the benchmark turns keep-alive on, as S3 keeps connections)")
	flag.Parse()
	if err := o.parse(); err != nil {
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

// parse checks the flags and splits the lists.
func (o *options) parse() error {
	var err error
	if o.warmClients, err = intList(o.rawWarm); err != nil {
		return fmt.Errorf("--warm-clients: %w", err)
	}
	if o.scalingMiB, err = intList(o.rawScaling); err != nil {
		return fmt.Errorf("--scaling-mib: %w", err)
	}
	if o.hitKiB, err = intList(o.rawHitKiB); err != nil {
		return fmt.Errorf("--hit-kib: %w", err)
	}
	switch {
	case o.proxyBin == "":
		return errors.New("--proxy-bin is required")
	case o.sizeMiB < 1 || o.layerMiB < 1 || o.manyMiB < 1:
		return errors.New("--size-mib, --layer-mib and --many-mib must be at least 1")
	case o.clients < 1 || o.layers < 1 || o.memClients < 1 || o.manClients < 1 || o.manRequests < 1 || o.tagPulls < 1 || o.hitRequests < 1:
		return errors.New("client, layer and request counts must be at least 1")
	case o.repeat < 1:
		return errors.New("--repeat must be at least 1")
	case o.parallel < 1:
		return errors.New("--parallel must be at least 1")
	case o.manSeconds <= 0:
		return errors.New("--manifest-seconds must be positive")
	case o.roundTimeoutS < 1:
		return errors.New("--round-timeout must be at least 1")
	}
	switch o.verify {
	case "one", "all", "none":
	default:
		return fmt.Errorf("--verify %q: want one, all or none", o.verify)
	}
	switch o.client {
	case "splice", "copy":
	default:
		return fmt.Errorf("--client %q: want splice or copy", o.client)
	}
	if o.groups, err = pick(o.rawOnly, allGroups, map[string]string{"shim": "tls", "s3": "replicas", "redirect": "replicas"}); err != nil {
		return fmt.Errorf("--only: %w", err)
	}
	if o.systems, err = pick(o.rawSystems, allSystems, nil); err != nil {
		return fmt.Errorf("--systems: %w", err)
	}
	return nil
}

// runs reports whether group g was selected.
func (o *options) runs(g string) bool { return slices.Contains(o.groups, g) }

// has reports whether system s was selected.
func (o *options) has(s string) bool { return slices.Contains(o.systems, s) }

// pick parses a comma-separated subset of all ("all" for every one),
// keeping all's order.
func pick(raw string, all []string, alias map[string]string) ([]string, error) {
	if raw == "" || raw == "all" {
		return slices.Clone(all), nil
	}
	want := map[string]bool{}
	for _, s := range strings.Split(raw, ",") {
		s = strings.TrimSpace(s)
		if a, ok := alias[s]; ok {
			s = a
		}
		if !slices.Contains(all, s) {
			return nil, fmt.Errorf("unknown %q (want %s or all)", s, strings.Join(all, ", "))
		}
		want[s] = true
	}
	var out []string
	for _, s := range all {
		if want[s] {
			out = append(out, s)
		}
	}
	return out, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}
