package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"
)

// sample is one measured run (cold) or round (warm) of a row.
type sample struct {
	wall     time.Duration
	bytes    int64         // body bytes all clients received
	reqs     int64         // requests the clients made
	upstream counts        // what the upstream served during the run
	rss      int64         // peak RSS: VmHWM summed over the system's processes (reset before the run)
	anon     int64         // peak of the sampled sum of RssAnon
	cpu      time.Duration // the system's CPU time (user+system, all its processes)
	selfCPU  time.Duration // this program's CPU time (clients, counting proxy)
	protos   map[string]int
	p50, p99 time.Duration // latency rows

	// The replicas group.
	auxCPU           time.Duration // CPU time of the S3 server and Redis (S3 systems)
	s3               s3Ops         // requests the S3 server answered (S3 systems)
	peerFills        float64       // fills streamed from another replica (crp_peer_fills_total, cold runs)
	ttfbP50, ttfbP90 time.Duration // blob hits: time to the first body byte
	totP50, totP90   time.Duration // blob hits: time to the last body byte
}

// Row kinds.
const (
	kindCold    = "cold"    // fresh cache per run
	kindWarm    = "warm"    // filled cache, rounds on one process
	kindTags    = "tags"    // sequential tag pulls, upstream requests counted
	kindLatency = "latency" // concurrent cached manifest GETs
	kindHit     = "hit"     // sequential GETs of a stored blob
)

// row is one table row: a system in one scenario, with its samples.
type row struct {
	kind    string
	sys     string
	img     *image
	clients int
	samples []sample
	lines   map[string]int // ours: blob GET access-log lines by cache status
}

func (r *row) series(f func(sample) float64) stat {
	xs := make([]float64, len(r.samples))
	for i, s := range r.samples {
		xs[i] = f(s)
	}
	return statOf(xs)
}

func (r *row) wall() stat { return r.series(func(s sample) float64 { return s.wall.Seconds() }) }
func (r *row) mbps() stat { return r.series(func(s sample) float64 { return mbps(s.bytes, s.wall) }) }

// upBytes is the upstream's blob bytes in units of the image's blob bytes
// (what one client fetches).
func (r *row) upBytes() stat {
	return r.series(func(s sample) float64 { return float64(s.upstream.BlobBytes) / float64(r.img.blobBytes()) })
}

// bench holds what the scenarios share.
type bench struct {
	e       *env
	o       options
	reg     *proc    // the upstream docker-registry
	direct  string   // its base URL
	counted string   // the counting proxy's base URL
	cnt     *counter // counts what the upstream served through counted
	tls     *tlsUpstream
	log     func(format string, args ...any)

	big     *image         // one --size-mib layer
	layered *image         // --layers × --layer-mib
	singles map[int]*image // single-layer images by MiB (big among them)
	hits    []*image       // single-layer images of --hit-kib, smallest first (replicas group)

	// The replicas group's shared services.
	s3              *s3Server
	redis           *proc
	redisAddr       string
	s3Ver, redisVer string

	rows  []*row
	warm  map[string]*instance // warm instances by system
	notes []string             // generated notes (access-log lines)
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

// find returns the row of kind for sys, img and clients, or nil.
func (b *bench) find(kind, sys string, img *image, clients int) *row {
	for _, r := range b.rows {
		if r.kind == kind && r.sys == sys && r.img == img && r.clients == clients {
			return r
		}
	}
	return nil
}

// rotate returns xs starting at index i (mod len), so that each run or
// round of a set of systems has a different one first.
func rotate(xs []string, i int) []string {
	if len(xs) == 0 {
		return nil
	}
	i %= len(xs)
	return append(slices.Clone(xs[i:]), xs[:i]...)
}

// measure runs one round of n clients pulling img from in and records what
// the upstream served meanwhile and the system's peak memory and CPU.
func (b *bench) measure(ctx context.Context, in *instance, img *image, n int) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(b.o.roundTimeoutS)*time.Second)
	defer cancel()
	pids := in.measured()
	resetPeak(pids)
	in.mem.reset()
	var before counts
	if in.cnt != nil {
		before = in.cnt.snapshot()
	}
	cpu0, aux0, s3mark := sumCPU(pids), sumCPU(pidsOf(in.aux)), b.s3Mark(in)
	self0, _ := cpuTime(os.Getpid())
	res, err := pullAll(ctx, in.t, img, n, b.o.parallel, b.o.verify)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %w", in, err)
	}
	self1, _ := cpuTime(os.Getpid())
	if err := in.alive(); err != nil {
		return sample{}, err
	}
	pids = in.measured()
	s := sample{wall: res.wall, bytes: res.bytes, reqs: res.reqs, protos: res.protos, selfCPU: self1 - self0,
		cpu: sumCPU(pids) - cpu0, rss: sumStatus(pids, "VmHWM")["VmHWM"], auxCPU: sumCPU(pidsOf(in.aux)) - aux0}
	s.anon, _ = in.mem.reset()
	s.s3 = b.s3Since(in, s3mark)
	if in.cnt != nil {
		s.upstream = in.cnt.snapshot().sub(before)
	} else {
		// The row is the upstream: it served what the clients got.
		k := int64(n)
		s.upstream = counts{BlobRequests: k * int64(len(img.blobs())), BlobBytes: k * img.blobBytes(),
			ManifestRequests: k, ManifestGETs: k, ManifestBytes: k * int64(len(img.manifest))}
	}
	return s, nil
}

// coldSet runs cold pulls of img by n clients through each of systems,
// repeat times: a fresh cache directory and a fresh process per run, the
// systems' order rotating from run to run.
func (b *bench) coldSet(ctx context.Context, systems []string, img *image, n int) error {
	var todo []string
	for _, sys := range systems {
		if b.find(kindCold, sys, img, n) == nil {
			todo = append(todo, sys)
			b.rows = append(b.rows, &row{kind: kindCold, sys: sys, img: img, clients: n, lines: map[string]int{}})
		}
	}
	for i := range b.o.repeat {
		for _, sys := range rotate(todo, i) {
			r := b.find(kindCold, sys, img, n)
			name := fmt.Sprintf("cold-%s-%d-%d", img.repo[len("bench/"):], n, i+1)
			in, err := b.start(ctx, sys, name)
			if err != nil {
				return err
			}
			s3mark := b.s3Mark(in)
			s, err := b.measure(ctx, in, img, n)
			if err != nil {
				_ = b.stop(in)
				return fmt.Errorf("cold %s, %d client(s), run %d: %w", img.label, n, i+1, err)
			}
			if isS3(sys) {
				s.peerFills = b.peerFills(ctx, in)
			}
			if err := b.stop(in); err != nil {
				b.log("%v", err)
			}
			// The fills' commits end after the clients': the S3 requests
			// of a cold run are counted until the replicas exited.
			s.s3 = b.s3Since(in, s3mark)
			if isOurs(sys) {
				for _, l := range in.logs {
					addLines(r.lines, l)
				}
			}
			if err := b.removeCache(sys, name); err != nil {
				return err
			}
			r.samples = append(r.samples, s)
			b.log("cold %s, %d client(s), %s, run %d/%d: %.2fs, upstream blob bytes %.2f× in %d blob GET(s), %d manifest req(s), peak RSS %.1f MiB (anon %.1f), CPU %.2fs (bench %.2fs, S3 + Redis %.2fs), peer fills %.0f, S3 requests %d %v",
				img.label, n, plainLabel(sys), i+1, b.o.repeat, s.wall.Seconds(), float64(s.upstream.BlobBytes)/float64(img.blobBytes()),
				s.upstream.BlobRequests, s.upstream.ManifestRequests, mib(s.rss), mib(s.anon), s.cpu.Seconds(), s.selfCPU.Seconds(), s.auxCPU.Seconds(), s.peerFills,
				s.s3.total(), s.s3.reqs)
		}
	}
	return nil
}

// addLines adds the proxy log's blob GET lines by cache status to m.
func addLines(m map[string]int, log string) {
	lines, err := cacheLines(log)
	if err != nil {
		return
	}
	for k, v := range lines {
		m[k] += v
	}
}

// warmImages are the images every warm instance holds (with the
// replicas group, the hit images too).
func (b *bench) warmImages() []*image {
	out := append([]*image{b.big}, b.hits...)
	for _, n := range append(slices.Clone(b.o.warmClients), b.o.memClients) {
		if img := b.warmImage(n); img != nil && !slices.Contains(out, img) {
			out = append(out, img)
		}
	}
	return out
}

// warmImage is the image n warm clients pull: the big one for up to
// --clients clients, else the --many-mib one (so that a round moves a
// similar amount of data).
func (b *bench) warmImage(n int) *image {
	if n <= b.o.clients {
		return b.big
	}
	return b.singles[b.o.manyMiB]
}

// warmInstance returns a running instance of sys over a cache that holds
// the warm images: filled by one client pull each, then served by a fresh
// process (so that its memory is the warm rows' alone).
func (b *bench) warmInstance(ctx context.Context, sys string) (*instance, error) {
	if in := b.warm[sys]; in != nil {
		return in, nil
	}
	in, err := b.start(ctx, sys, "warm")
	if err != nil {
		return nil, err
	}
	if hasCache(sys) {
		for _, img := range b.warmImages() {
			s, err := b.measure(ctx, in, img, 1)
			if err != nil {
				_ = b.stop(in)
				return nil, fmt.Errorf("filling the warm cache of %s: %w", plainLabel(sys), err)
			}
			if err := b.committed(ctx, in, img); err != nil {
				_ = b.stop(in)
				return nil, err
			}
			b.log("warm %s: filled %s in %.2fs", plainLabel(sys), img.label, s.wall.Seconds())
		}
		if err := b.stop(in); err != nil {
			return nil, err
		}
		if in, err = b.start(ctx, sys, "warm"); err != nil {
			return nil, err
		}
	}
	b.warm[sys] = in
	return in, nil
}

// warmSet times rounds of n clients pulling img from each of systems'
// warm instances, repeat rounds each, the systems interleaved and their
// order rotating, so that drift in the machine's load hits all alike.
func (b *bench) warmSet(ctx context.Context, systems []string, img *image, n int) error {
	var todo []string
	for _, sys := range systems {
		if b.find(kindWarm, sys, img, n) != nil {
			continue
		}
		if _, err := b.warmInstance(ctx, sys); err != nil {
			return err
		}
		todo = append(todo, sys)
		b.rows = append(b.rows, &row{kind: kindWarm, sys: sys, img: img, clients: n, lines: map[string]int{}})
	}
	for i := range b.o.repeat {
		for _, sys := range rotate(todo, i) {
			r := b.find(kindWarm, sys, img, n)
			s, err := b.measure(ctx, b.warm[sys], img, n)
			if err != nil {
				return fmt.Errorf("warm %s, %d client(s), round %d: %w", img.label, n, i+1, err)
			}
			r.samples = append(r.samples, s)
			b.log("warm %s, %d client(s), %s, round %d/%d: %.2fs, %.0f MB/s, upstream blob GETs %d, peak RSS %.1f MiB (anon %.1f), CPU %.2fs (bench %.2fs, S3 + Redis %.2fs), S3 requests %d %v",
				img.label, n, plainLabel(sys), i+1, b.o.repeat, s.wall.Seconds(), mbps(s.bytes, s.wall), s.upstream.BlobRequests,
				mib(s.rss), mib(s.anon), s.cpu.Seconds(), s.selfCPU.Seconds(), s.auxCPU.Seconds(), s.s3.total(), s.s3.reqs)
		}
	}
	return nil
}

// stopWarm stops the warm instances (adding ours' access-log lines to
// the notes), in a stable order.
func (b *bench) stopWarm() {
	for _, sys := range slices.Sorted(maps.Keys(b.warm)) {
		in := b.warm[sys]
		if err := b.stop(in); err != nil {
			b.log("%v", err)
		}
		if isOurs(sys) {
			m := map[string]int{}
			for _, l := range in.logs {
				addLines(m, l)
			}
			what := "the access log of the warm process"
			if len(in.logs) > 1 {
				what = fmt.Sprintf("the access logs of the %d warm processes", len(in.logs))
			}
			b.notes = append(b.notes, fmt.Sprintf("Blob GET lines in %s of %s (all its warm rounds) by `cache=`: %s.", what, plainLabel(sys), formatLines(m)))
		}
		delete(b.warm, sys)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func mbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / d.Seconds()
}
