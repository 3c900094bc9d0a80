// Package load is a bounded, loopback-only load generator for
// container-registry-proxy: it starts the proxy binary (or uses a running
// one on a loopback address) over an upstream it runs itself
// (distribution v3 in this process, filesystem storage), warms a set of
// manifests and blobs, then runs many concurrent keep-alive clients on a
// mix of warm requests for a fixed time. It reports requests per second,
// errors (any transport error, non-2xx status, short body or digest
// mismatch), latency percentiles per request kind, and the proxy's RSS,
// goroutines and open file descriptors before, at the peak and after the
// run; "after" must come back within 10 % of "before" (goroutines and
// descriptors) once the clients closed their connections.
//
// bench/cmd/load is the command (bench/run.sh --only load runs it);
// test/e2e runs a short smoke of it against the binary.
package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/gmarcy/container-registry-proxy/bench/internal/harness"
)

// Options configure a run. Zero values take the defaults in brackets.
type Options struct {
	// ProxyBin is the proxy binary to start; or Addr is the base URL of a
	// running proxy (loopback only) configured with Registry at
	// UpstreamListen, and PID its process (0: no /proc readings).
	ProxyBin       string
	Addr           string
	PID            int
	Registry       string // registry name in mirror paths [load.test]
	UpstreamListen string // where the upstream listens [127.0.0.1:0]

	Clients  int           // concurrent clients [1000]
	Duration time.Duration // measured run [60s]
	Warm     time.Duration // the same mix before "before" [5s]
	Settle   time.Duration // wait before reading "before" [5s]
	AfterMax time.Duration // longest wait for "after" to come back [60s]

	Images   int // images pushed upstream [4]
	SmallKiB int // size of the small layer [16]
	BigKiB   int // size of the large layer [1024]
	// VerifyEvery hashes every Nth blob body of each client and compares
	// it with the digest (the first always) [20].
	VerifyEvery int

	// Dir holds the upstream's storage, the proxy's cache and log; a
	// temporary directory removed afterwards when empty.
	Dir string
	// Log receives progress lines (nil: none).
	Log func(format string, args ...any)
}

// Result is what a run measured.
type Result struct {
	Options  Options
	Date     time.Time
	Took     time.Duration // the measured run, until the last request ended
	Machine  Machine
	Kinds    []KindStats // per request kind, in mix order
	Total    KindStats
	Errors   map[string]int64 // by cause
	Samples  []string         // the first few error messages
	Conns    int64            // client connections opened in the measured run
	Cache    map[string]int64 // X-Cache of blob and manifest GETs
	Upstream map[string]int64 // upstream requests during the measured run
	WarmReqs int64            // requests of the warm-up burst
	WarmErrs int64

	Before, Peak, After Sample
	AfterWait           time.Duration // from the clients' close to "after"
	Settled             bool          // goroutines and fds back within 10 %
}

// Sample is one reading of the proxy process.
type Sample struct {
	RSS        int64 // VmRSS, bytes
	HWM        int64 // VmHWM, bytes (peak RSS since start)
	Goroutines int64 // go_goroutines of /metrics
	FDs        int64 // entries of /proc/<pid>/fd
}

// Run runs the load and returns what it measured. An error means the
// run could not be made (setup, proxy died); errors of requests are in
// the Result, and OK reports the pass criteria.
func Run(ctx context.Context, o Options) (*Result, error) {
	o = o.withDefaults()
	if err := o.check(); err != nil {
		return nil, err
	}
	r := &runner{o: o, res: &Result{Options: o, Date: time.Now().UTC()}}
	defer r.cleanup()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	if err := r.measure(ctx); err != nil {
		return nil, err
	}
	r.res.Machine.Load1 = harness.LoadAvg()
	return r.res, nil
}

// OK reports whether the run passed: no request failed and the proxy's
// goroutines and descriptors came back within 10 % of before.
func (r *Result) OK() bool {
	return r.Total.Errors == 0 && r.WarmErrs == 0 && r.Settled
}

func (o Options) withDefaults() Options {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&o.Clients, 1000)
	def(&o.Images, 4)
	def(&o.SmallKiB, 16)
	def(&o.BigKiB, 1024)
	def(&o.VerifyEvery, 20)
	defd(&o.Duration, 60*time.Second)
	defd(&o.Warm, 5*time.Second)
	defd(&o.Settle, 5*time.Second)
	defd(&o.AfterMax, 60*time.Second)
	if o.Registry == "" {
		o.Registry = "load.test"
	}
	if o.UpstreamListen == "" {
		o.UpstreamListen = "127.0.0.1:0"
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	return o
}

// maxClients bounds the clients: each holds a connection (a descriptor
// here and one in the proxy).
const maxClients = 20000

func (o Options) check() error {
	switch {
	case (o.ProxyBin == "") == (o.Addr == ""):
		return errors.New("give the proxy binary to start or the address of a running proxy, not both")
	case o.Clients < 1 || o.Clients > maxClients:
		return fmt.Errorf("clients: %d, want 1 to %d", o.Clients, maxClients)
	case o.Duration <= 0 || o.Duration > time.Hour:
		return fmt.Errorf("duration: %s, want more than 0 and at most 1h", o.Duration)
	case o.Images < 1 || o.Images > 100 || o.SmallKiB < 1 || o.BigKiB < 1 || o.BigKiB > 64<<10:
		return errors.New("images: 1 to 100; layer sizes: at least 1 KiB, the large one at most 64 MiB")
	case o.VerifyEvery < 1:
		return errors.New("verify-every: at least 1")
	}
	if err := loopbackOnly(o.UpstreamListen); err != nil {
		return fmt.Errorf("upstream listen address: %w", err)
	}
	if o.Addr != "" {
		u, err := url.Parse(o.Addr)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return fmt.Errorf("address %q: want http://127.0.0.1:PORT", o.Addr)
		}
		if err := loopbackOnly(u.Host); err != nil {
			return fmt.Errorf("address %q: %w", o.Addr, err)
		}
	}
	return nil
}

// loopbackOnly refuses a host:port whose host is not a loopback address
// (names are resolved; every address must be loopback): the generator
// never sends its load over a network.
func loopbackOnly(hostPort string) error {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return err
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return err
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is not a loopback address: the load generator only runs on loopback", ip)
		}
	}
	return nil
}

// runner holds a run's state.
type runner struct {
	o        Options
	res      *Result
	dir      string
	ownDir   bool
	up       *upstream
	proxy    *proxyProc
	base     string // the proxy's base URL
	pid      int
	images   []*image
	requests []request // the mix's request templates
}

// setup starts the upstream and the proxy, pushes the images and warms
// the cache.
func (r *runner) setup(ctx context.Context) error {
	r.res.Machine = machineInfo(r.o.ProxyBin)
	r.res.Machine.FDLimit = raiseFDLimit()
	if need := uint64(r.o.Clients) + 256; r.res.Machine.FDLimit.Soft < need {
		return fmt.Errorf("the open-files limit is %d (hard %d): %d clients need about %d descriptors here (one connection each, plus the upstream's); raise the hard limit (ulimit -Hn)",
			r.res.Machine.FDLimit.Soft, r.res.Machine.FDLimit.Hard, r.o.Clients, need)
	}
	r.dir, r.ownDir = r.o.Dir, r.o.Dir == ""
	if r.ownDir {
		d, err := os.MkdirTemp("", "crp-load-")
		if err != nil {
			return err
		}
		r.dir = d
	}
	up, err := startUpstreamAt(filepath.Join(r.dir, "upstream"), r.o.UpstreamListen)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	r.up = up
	r.o.Log("upstream (distribution v3, in process) at %s", up.url)
	if err := r.pushImages(ctx); err != nil {
		return err
	}
	if err := r.startProxy(ctx); err != nil {
		return err
	}
	r.requests = r.mix()
	return r.warm(ctx)
}

// pushImages pushes the images: each a config, a small and a large layer.
func (r *runner) pushImages(ctx context.Context) error {
	t0 := time.Now()
	for i := range r.o.Images {
		img, err := r.up.push(ctx, fmt.Sprintf("load/app%d", i), "v1", []int64{int64(r.o.SmallKiB) << 10, int64(r.o.BigKiB) << 10})
		if err != nil {
			return fmt.Errorf("pushing: %w", err)
		}
		r.images = append(r.images, img)
	}
	r.o.Log("pushed %d images (config, %d KiB and %d KiB layers) in %.1fs", r.o.Images, r.o.SmallKiB, r.o.BigKiB, time.Since(t0).Seconds())
	return nil
}

// startProxy starts the proxy binary, or checks the running one.
func (r *runner) startProxy(ctx context.Context) error {
	if r.o.Addr != "" {
		r.base, r.pid = r.o.Addr, r.o.PID
		return harness.WaitHTTP(ctx, nil, r.base+"/healthz", 200, nil)
	}
	p, err := startProxy(ctx, r.o.ProxyBin, filepath.Join(r.dir, "proxy"), r.o.Registry, r.up.url)
	if err != nil {
		return err
	}
	r.proxy, r.base, r.pid = p, p.base, p.Pid()
	r.res.Machine.ProxyFDLimit = procFDLimit(r.pid)
	r.o.Log("proxy pid %d at %s (log %s)", r.pid, r.base, p.Log)
	return nil
}

// cleanup stops what setup started and removes the temporary directory.
func (r *runner) cleanup() {
	if r.proxy != nil {
		if err := r.proxy.stop(); err != nil {
			r.o.Log("%v", err)
		}
	}
	if r.up != nil {
		r.up.close()
	}
	if r.ownDir && r.dir != "" {
		_ = os.RemoveAll(r.dir)
	}
}

// measure runs the warm-up burst, reads "before", runs the measured load
// with a sampler for the peak, and waits for "after".
func (r *runner) measure(ctx context.Context) error {
	warm := r.runClients(ctx, r.o.Warm)
	r.res.WarmReqs, r.res.WarmErrs = warm.total.requests, warm.total.errors
	r.o.Log("warm-up: %d clients for %s: %d requests, %d errors", r.o.Clients, r.o.Warm, warm.total.requests, warm.total.errors)
	if err := r.alive(); err != nil {
		return err
	}
	if err := sleepCtx(ctx, r.o.Settle); err != nil {
		return err
	}
	before, err := r.sample(ctx)
	if err != nil {
		return err
	}
	r.res.Before = before
	r.o.Log("before: %s", before)

	up0 := r.up.snapshot()
	sampler := r.startSampler(ctx)
	run := r.runClients(ctx, r.o.Duration)
	closed := time.Now()
	r.res.Peak = sampler.stop()
	r.res.Upstream = diffCounts(r.up.snapshot(), up0)
	r.res.fill(run)
	r.o.Log("run: %d requests in %.1fs, %d errors; peak %s", r.res.Total.Requests, r.res.Took.Seconds(), r.res.Total.Errors, r.res.Peak)
	if err := r.alive(); err != nil {
		return err
	}
	after, settled, err := r.waitAfter(ctx)
	if err != nil {
		return err
	}
	r.res.After, r.res.Settled, r.res.AfterWait = after, settled, time.Since(closed)
	r.o.Log("after (%.1fs after the clients closed): %s; back within 10%%: %v", r.res.AfterWait.Seconds(), after, settled)
	return nil
}

// alive reports an error when the started proxy has exited.
func (r *runner) alive() error {
	if r.proxy == nil {
		return nil
	}
	return r.proxy.Exited()
}

// waitAfter reads the proxy every 250 ms until its goroutines and
// descriptors are back within 10 % of before (settled) or AfterMax
// passed, and returns the last reading.
func (r *runner) waitAfter(ctx context.Context) (Sample, bool, error) {
	deadline := time.Now().Add(r.o.AfterMax)
	for {
		s, err := r.sample(ctx)
		if err != nil {
			return s, false, err
		}
		if within(s.Goroutines, r.res.Before.Goroutines) && (r.pid == 0 || within(s.FDs, r.res.Before.FDs)) {
			return s, true, nil
		}
		if time.Now().After(deadline) {
			return s, false, nil
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return s, false, err
		}
	}
}

// within reports whether v is at most 10 % above base (at least one
// more, for small counts).
func within(v, base int64) bool {
	return v <= base+max(base/10, 1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// diffCounts returns b - a per key, without zeros.
func diffCounts(b, a map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range b {
		if d := v - a[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// goVersion is the generator's Go.
var goVersion = runtime.Version()
