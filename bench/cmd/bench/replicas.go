package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/bench/internal/harness"
)

// The replicas group's systems: ours on S3 (versitygw) with its shared
// state in Redis, as one replica, as clusterReplicas replicas that know
// each other, and as one replica with storage.redirect on. Each is a
// cluster of its own: its own root directory in the bucket and its own
// Redis key prefix.
const (
	sysS3      = "ours-s3"
	sysS3x3    = "ours-s3x3"
	sysS3Redir = "ours-s3-redirect"
)

// clusterReplicas is how many replicas sysS3x3 runs.
const clusterReplicas = 3

// clusterSecret authenticates the replicas to each other.
const clusterSecret = "bench-cluster-secret-0123456789"

// isS3 says whether sys is one of ours on S3.
func isS3(sys string) bool { return sys == sysS3 || sys == sysS3x3 || sys == sysS3Redir }

// replicas is how many processes sys runs.
func replicas(sys string) int {
	if sys == sysS3x3 {
		return clusterReplicas
	}
	return 1
}

// s3Root is the bucket's root directory of sys's cache named cacheName
// (a cold run's, or "warm").
func s3Root(sys, cacheName string) string { return "/" + sys + "-" + cacheName }

// startShared starts the S3 server and Redis the replicas group shares,
// once.
func (b *bench) startShared(ctx context.Context) error {
	if b.s3 != nil {
		return nil
	}
	if err := b.needFullBuild(); err != nil {
		return err
	}
	bin, err := versitygwBin(b.o.versitygwBin)
	if err != nil {
		return err
	}
	b.s3Ver = goModVersion(bin)
	s, err := startS3(ctx, b.e, bin, b.o.s3NoKeepAlive)
	if err != nil {
		return err
	}
	b.s3 = s
	b.log("S3 server: %s pid %d at %s, bucket %s", b.s3Ver, s.proc.Pid(), s.endpoint, s.bucket)
	b.redisVer = firstLine(b.o.redisBin, "--version")
	if b.redis, b.redisAddr, err = startRedis(ctx, b.e, b.o.redisBin); err != nil {
		return err
	}
	b.log("Redis: %s pid %d at %s", b.redisVer, b.redis.Pid(), b.redisAddr)
	return nil
}

// needFullBuild fails early, with the fix, when the proxy has no s3
// driver and no full build beside it (a lean build runs <binary>-full
// for a configuration that names s3: the container image's layout).
func (b *bench) needFullBuild() error {
	if fi, err := os.Stat(b.o.proxyBin + "-full"); err == nil && fi.Mode().IsRegular() {
		return nil
	}
	if v := firstLine(b.o.proxyBin, "--version"); strings.Contains(v, " s3") {
		return nil
	}
	return fmt.Errorf("the replicas group needs the s3 driver: %s is a lean build and there is no %s-full beside it (bench/run.sh builds both)", b.o.proxyBin, b.o.proxyBin)
}

// startReplicas starts sys's replicas one after the other (each ready,
// /readyz, before the next), on the bucket's root directory and the Redis
// prefix of cacheName; in's clients are spread over them round-robin.
func (b *bench) startReplicas(ctx context.Context, in *instance, dir, cacheName string) error {
	root := s3Root(in.sys, cacheName)
	in.s3Root = root
	in.aux = []*proc{b.s3.proc, b.redis}
	in.t.name = func(repo string) string { return upstreamNS + "/" + repo }
	for i := range replicas(in.sys) {
		cacheDir := filepath.Join(dir, fmt.Sprintf("replica-%d", i), "cache")
		name := fmt.Sprintf("%s-%s-r%d", in.sys, cacheName, i)
		p, base, err := startProxyCfg(ctx, b.e, b.o.proxyBin, name, "/readyz", nil, func(port int) string {
			return b.replicaConfig(in.sys, port, cacheDir, root, "crp-"+in.sys+"-"+cacheName)
		})
		if err != nil {
			for _, q := range in.procs {
				_ = b.e.stop(q)
			}
			return err
		}
		in.procs = append(in.procs, p)
		in.logs = append(in.logs, p.Log)
		in.t.bases = append(in.t.bases, base)
	}
	in.pids = in.procs[0].Pid
	in.t.base = in.t.bases[0]
	return nil
}

// replicaConfig is the configuration of one replica of sys listening on
// port: the upstream through the counting proxy, the bucket under root,
// Redis under prefix, and the cluster (advertising its own URL).
func (b *bench) replicaConfig(sys string, port int, cacheDir, root, prefix string) string {
	extra := "    insecure: true\n" + b.s3.storageYAML(root, sys == sysS3Redir) +
		fmt.Sprintf("redis:\n  addr: %q\n  prefix: %q\ncluster:\n  advertise: %q\n  secret: %q\n",
			b.redisAddr, prefix, "http://127.0.0.1:"+strconv.Itoa(port), clusterSecret)
	return harness.ProxyConfig(port, cacheDir, filepath.Join(b.e.root, "ca"), upstreamHost, b.counted, extra)
}

// replicasGroup runs the replicas group: cold fills by --clients clients
// over 1 and clusterReplicas replicas, warm throughput of every S3 system,
// and the latency of blob hits; ours on the filesystem is the reference
// in each (its rows are shared with the cold and warm groups).
func (b *bench) replicasGroup(ctx context.Context) error {
	if err := b.startShared(ctx); err != nil {
		return err
	}
	ref := b.selected(sysOurs)
	if err := b.coldSet(ctx, append(slices.Clone(ref), sysS3, sysS3x3), b.big, b.o.clients); err != nil {
		return err
	}
	for _, n := range b.o.warmClients {
		if err := b.warmSet(ctx, append(slices.Clone(ref), sysS3, sysS3x3, sysS3Redir), b.warmImage(n), n); err != nil {
			return err
		}
	}
	return b.hitLatency(ctx, append(slices.Clone(ref), sysS3, sysS3Redir))
}

// s3Mark marks the S3 server's access log before a run of in (S3
// systems; 0 for the others).
func (b *bench) s3Mark(in *instance) int64 {
	if in.s3Root == "" {
		return 0
	}
	return b.s3.logSize()
}

// s3Since returns the S3 requests since mark (S3 systems; none for the
// others).
func (b *bench) s3Since(in *instance, mark int64) s3Ops {
	if in.s3Root == "" {
		return s3Ops{}
	}
	ops, err := b.s3.opsSince(mark)
	if err != nil {
		b.log("S3 access log: %v", err)
	}
	return ops
}

// peerFills sums crp_peer_fills_total over in's replicas: fills that
// streamed from another replica instead of upstream.
func (b *bench) peerFills(ctx context.Context, in *instance) float64 {
	var n float64
	for _, base := range in.t.bases {
		v, err := scrapeMetric(ctx, base, "crp_peer_fills_total")
		if err != nil {
			b.log("%s: %v", in, err)
		}
		n += v
	}
	return n
}

// scrapeMetric sums the samples of the Prometheus series name (any
// labels) at base's /metrics.
func scrapeMetric(ctx context.Context, base, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s/metrics: status %d", base, resp.StatusCode)
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum, sc.Err()
}

// hitLatency times --hit-requests sequential GETs of each hit image's
// layer by one client from each of systems' warm instances, repeat runs
// per system and blob, the systems interleaved and their order rotating.
func (b *bench) hitLatency(ctx context.Context, systems []string) error {
	for _, img := range b.hits {
		for _, sys := range systems {
			if _, err := b.warmInstance(ctx, sys); err != nil {
				return err
			}
			if b.find(kindHit, sys, img, 1) == nil {
				b.rows = append(b.rows, &row{kind: kindHit, sys: sys, img: img, clients: 1})
			}
		}
		for i := range b.o.repeat {
			for _, sys := range rotate(systems, i) {
				s, err := b.hitRun(ctx, b.warm[sys], img)
				if err != nil {
					return fmt.Errorf("hit latency, %s, %s, run %d: %w", img.label, plainLabel(sys), i+1, err)
				}
				r := b.find(kindHit, sys, img, 1)
				r.samples = append(r.samples, s)
				b.log("blob hits, %s, %s, run %d/%d: TTFB p50 %.2f ms p90 %.2f ms, total p50 %.2f ms p90 %.2f ms, CPU %.2fs (S3 + Redis %.2fs), S3 requests %d %v",
					img.label, plainLabel(sys), i+1, b.o.repeat, ms(s.ttfbP50), ms(s.ttfbP90), ms(s.totP50), ms(s.totP90), s.cpu.Seconds(), s.auxCPU.Seconds(),
					s.s3.total(), s.s3.reqs)
			}
		}
	}
	return nil
}

// hitRun is one latency run of img's layer against in: one net/http
// client on keep-alive connections (redirects followed), opened by one
// untimed GET that also checks the digest.
func (b *bench) hitRun(ctx context.Context, in *instance, img *image) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(b.o.roundTimeoutS)*time.Second)
	defer cancel()
	c := in.t.newClient()
	defer c.CloseIdleConnections()
	l := img.layers[0]
	u := in.t.base + "/v2/" + in.t.name(img.repo) + "/blobs/" + l.digest
	if _, err := getBlobURL(ctx, c, u, l, true); err != nil {
		return sample{}, err
	}
	pids, aux := in.measured(), pidsOf(in.aux)
	resetPeak(pids)
	var before counts
	if in.cnt != nil {
		before = in.cnt.snapshot()
	}
	cpu0, aux0, s3mark := sumCPU(pids), sumCPU(aux), b.s3Mark(in)
	ttfb := make([]time.Duration, 0, b.o.hitRequests)
	total := make([]time.Duration, 0, b.o.hitRequests)
	start := time.Now()
	for range b.o.hitRequests {
		t, tot, err := timedGET(ctx, c, u, l)
		if err != nil {
			return sample{}, err
		}
		ttfb, total = append(ttfb, t), append(total, tot)
	}
	s := sample{wall: time.Since(start), reqs: int64(b.o.hitRequests), bytes: int64(b.o.hitRequests) * l.size,
		cpu: sumCPU(in.measured()) - cpu0, auxCPU: sumCPU(aux) - aux0, rss: sumStatus(in.measured(), "VmHWM")["VmHWM"]}
	if in.cnt != nil {
		s.upstream = in.cnt.snapshot().sub(before)
	}
	s.s3 = b.s3Since(in, s3mark)
	slices.Sort(ttfb)
	slices.Sort(total)
	s.ttfbP50, s.ttfbP90 = quantile(ttfb, 0.5), quantile(ttfb, 0.9)
	s.totP50, s.totP90 = quantile(total, 0.5), quantile(total, 0.9)
	return s, nil
}

// timedGET GETs blob b at u (following redirects) and returns the time to
// its first body byte and to its last, both from the request's start.
func timedGET(ctx context.Context, c *http.Client, u string, b blob) (ttfb, total time.Duration, err error) {
	t0 := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return 0, 0, fmt.Errorf("GET %s: status %d: %s", u, resp.StatusCode, msg)
	}
	var first [1]byte
	if _, err := io.ReadFull(resp.Body, first[:]); err != nil {
		return 0, 0, fmt.Errorf("GET %s: no body: %w", u, err)
	}
	ttfb = time.Since(t0)
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	n, err := io.CopyBuffer(io.Discard, onlyReader{resp.Body}, *bufp)
	total = time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("GET %s: body cut after %d of %d bytes: %w", u, n+1, b.size, err)
	}
	if n+1 != b.size {
		return 0, 0, fmt.Errorf("GET %s: body has %d bytes, want %d", u, n+1, b.size)
	}
	return ttfb, total, nil
}

// pidsOf returns the processes' ids.
func pidsOf(ps []*proc) []int {
	out := make([]int, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Pid())
	}
	return out
}
