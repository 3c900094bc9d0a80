package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// sample is one measured run (or warm round) of a scenario.
type sample struct {
	wall     time.Duration
	bytes    int64         // body bytes all clients received
	upstream counts        // what the upstream served during the run
	rss      int64         // proxy VmHWM at the end of the run; 0 without a proxy
	anon     int64         // proxy peak RssAnon during the run, sampled
	cpu      time.Duration // proxy user+system CPU time during the run
	lastWait time.Duration // longest wait of a client for the body's last byte
	peerCPU  time.Duration // the serving docker-registry's CPU time (direct rows)
	selfCPU  time.Duration // this program's CPU time (the clients) during the run
	protos   map[string]int
}

// scenario is a named set of samples.
type scenario struct {
	name    string
	clients int
	proxy   bool // through our proxy (RSS and cache lines are meaningful)
	samples []sample
	lines   map[string]int // blob GET access-log lines by cache status, summed
	linesOf string         // what lines covers, when not just this scenario
	peer    bool           // served by docker-registry directly (peerCPU is set)
}

// protos sums the clients' protocols over the samples.
func (sc *scenario) protos() map[string]int {
	out := map[string]int{}
	for _, s := range sc.samples {
		for k, v := range s.protos {
			out[k] += v
		}
	}
	return out
}

// bench holds what the scenarios share.
type bench struct {
	e       *env
	o       options
	img     image
	direct  string   // the registry's base URL
	counted string   // the counting proxy's base URL
	cnt     *counter // counts what the registry served through counted
	tls     *tlsUpstream
	log     func(format string, args ...any)
}

// tlsUpstream is the TLS docker-registry (a second instance on the same
// storage) and a counting proxy in front of it that also speaks TLS.
type tlsUpstream struct {
	pki     *testPKI
	reg     *proc
	direct  string // https://127.0.0.1:port of the registry
	counted string // https://127.0.0.1:port of the counter
	cnt     *counter
}

// reference downloads the blob from the upstream with one client, directly
// and through the counting proxy, repeat times each.
func (b *bench) reference(ctx context.Context) ([]*scenario, error) {
	var out []*scenario
	for _, r := range []struct{ name, base string }{
		{"upstream direct (reference)", b.direct},
		{"upstream via counter (reference)", b.counted},
	} {
		s := &scenario{name: r.name, clients: 1}
		for i := range b.o.repeat {
			before := b.cnt.snapshot()
			res, err := pullAll(ctx, pull{c: newClient(1), base: r.base, name: b.img.repo, tag: b.img.tag, img: b.img, verify: true}, 1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", r.name, err)
			}
			s.samples = append(s.samples, sample{wall: res.wall, bytes: res.bytes, upstream: b.cnt.snapshot().sub(before), lastWait: res.lastWait})
			b.log("%s run %d/%d: %.2fs", r.name, i+1, b.o.repeat, res.wall.Seconds())
		}
		out = append(out, s)
	}
	return out, nil
}

// cold pulls through a proxy with an empty cache, n clients at once,
// repeat times (a fresh cache directory and process each time).
func (b *bench) cold(ctx context.Context, n int) (*scenario, error) {
	s := &scenario{name: fmt.Sprintf("proxy cold, %d client(s)", n), clients: n, proxy: true, lines: map[string]int{}}
	for i := range b.o.repeat {
		name := "cold" + strconv.Itoa(n) + "-" + strconv.Itoa(i+1)
		cache := filepath.Join(b.e.root, "cache", name)
		pr, err := startProxy(ctx, b.e, b.o.proxyBin, name, cache, b.counted)
		if err != nil {
			return nil, err
		}
		smp, err := b.measure(ctx, pr, n, true)
		if err != nil {
			return nil, fmt.Errorf("%s run %d: %w; proxy log: %s", s.name, i+1, err, pr.log)
		}
		if err := b.finish(pr, s); err != nil {
			return nil, err
		}
		if err := os.RemoveAll(cache); err != nil {
			return nil, err
		}
		s.samples = append(s.samples, smp)
		b.log("%s run %d/%d: %.2fs, upstream blob bytes %d (%.2fx) in %d GET(s), peak RSS %.1f MiB (anon %.1f), proxy CPU %.2fs, last-byte wait %dms",
			s.name, i+1, b.o.repeat, smp.wall.Seconds(), smp.upstream.BlobBytes,
			float64(smp.upstream.BlobBytes)/float64(b.img.blobSize), smp.upstream.BlobRequests, mib(smp.rss), mib(smp.anon), smp.cpu.Seconds(), smp.lastWait.Milliseconds())
	}
	return s, nil
}

// warm fills a cache with one pull, then starts a fresh proxy process on
// it (so its peak RSS is the warm scenarios' alone) and times rounds of n
// clients: repeat rounds whose bodies are hashed (the floor for a cold run
// of n hashing clients on this machine), then warmRounds rounds that only
// count bytes (the proxy's throughput).
func (b *bench) warm(ctx context.Context, n int) (hashed, plain *scenario, err error) {
	hashed = &scenario{name: fmt.Sprintf("proxy warm, %d client(s), bodies hashed", n), clients: n, proxy: true}
	plain = &scenario{name: fmt.Sprintf("proxy warm, %d client(s)", n), clients: n, proxy: true, lines: map[string]int{},
		linesOf: "both warm rows (one process)"}
	cache := filepath.Join(b.e.root, "cache", "warm")
	pr, err := startProxy(ctx, b.e, b.o.proxyBin, "warm-fill", cache, b.counted)
	if err != nil {
		return nil, nil, err
	}
	if _, err := b.measure(ctx, pr, 1, true); err != nil {
		return nil, nil, fmt.Errorf("warm: filling the cache: %w; proxy log: %s", err, pr.log)
	}
	if err := waitCommitted(ctx, pr.p, cache, b.img.blobDigest, b.img.blobSize); err != nil {
		return nil, nil, err
	}
	if err := b.stopProxy(pr); err != nil {
		return nil, nil, err
	}
	if pr, err = startProxy(ctx, b.e, b.o.proxyBin, "warm", cache, b.counted); err != nil {
		return nil, nil, err
	}
	for _, sc := range []*scenario{hashed, plain} {
		rounds, verify := b.o.repeat, true
		if sc == plain {
			rounds, verify = b.o.warmRounds, false
		}
		for i := range rounds {
			smp, err := b.measure(ctx, pr, n, verify)
			if err != nil {
				return nil, nil, fmt.Errorf("%s round %d: %w; proxy log: %s", sc.name, i+1, err, pr.log)
			}
			sc.samples = append(sc.samples, smp)
			b.log("%s round %d/%d: %.2fs, %.0f MB/s, upstream blob GETs %d, proxy CPU %.2fs",
				sc.name, i+1, rounds, smp.wall.Seconds(), mbps(smp.bytes, smp.wall), smp.upstream.BlobRequests, smp.cpu.Seconds())
		}
	}
	// Both share one process, whose VmHWM is its peak so far.
	if err := b.finish(pr, plain); err != nil {
		return nil, nil, err
	}
	return hashed, plain, nil
}

// measure runs one round of n clients against the proxy pr and records
// what upstream served meanwhile and the proxy's peak RSS.
func (b *bench) measure(ctx context.Context, pr *proxyRun, n int, verify bool) (sample, error) {
	return b.measurePull(ctx, pr, b.cnt, pull{c: newClient(n), base: pr.base, name: upstreamNS + "/" + b.img.repo, tag: b.img.tag, img: b.img, verify: verify}, n)
}

// measurePull runs one round of n clients doing p against the proxy pr and
// records what upstream served meanwhile (counted by cnt), the proxy's
// peak RSS and CPU, and this program's CPU.
func (b *bench) measurePull(ctx context.Context, pr *proxyRun, cnt *counter, p pull, n int) (sample, error) {
	before := cnt.snapshot()
	cpu0, err := cpuTime(pr.p.pid())
	if err != nil {
		return sample{}, err
	}
	self0, _ := cpuTime(os.Getpid())
	pr.anon.reset()
	res, err := pullAll(ctx, p, n)
	if err != nil {
		return sample{}, err
	}
	self1, _ := cpuTime(os.Getpid())
	if err := pr.p.exited(); err != nil {
		return sample{}, err
	}
	up := cnt.snapshot().sub(before)
	rss, err := peakRSS(pr.p.pid())
	if err != nil {
		return sample{}, err
	}
	cpu1, err := cpuTime(pr.p.pid())
	if err != nil {
		return sample{}, err
	}
	return sample{wall: res.wall, bytes: res.bytes, upstream: up, rss: rss, anon: pr.anon.reset(), cpu: cpu1 - cpu0,
		lastWait: res.lastWait, selfCPU: self1 - self0, protos: res.protos}, nil
}

// stopProxy stops the sampler and the proxy process.
func (b *bench) stopProxy(pr *proxyRun) error {
	pr.anon.close()
	return b.e.stop(pr.p)
}

// finish stops the proxy and adds its access-log cache statuses to s.
func (b *bench) finish(pr *proxyRun, s *scenario) error {
	if err := b.stopProxy(pr); err != nil {
		return err
	}
	lines, err := cacheLines(pr.log)
	if err != nil {
		return err
	}
	for k, v := range lines {
		s.lines[k] += v
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func mbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / d.Seconds()
}
