//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/service/s3"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/opencontainers/go-digest"
)

// sharedS3 is one versitygw for every replica test (a bucket each).
var sharedS3 testutil.SharedS3

const clusterSecret = "e2e-cluster-secret-0123456789"

// clusterEnv is one cache shared by replicas: a bucket, a Redis (absent
// for the tests without), and the upstream they all serve as
// registry.test.
type clusterEnv struct {
	t     *testing.T
	up    *testreg.Registry
	s3    *testutil.S3Server
	redis *testutil.RedisServer
	dir   string
	// redirect sets storage.redirect: blob hits answered with a 307 to
	// the bucket.
	redirect bool
}

func newClusterEnv(t *testing.T, withRedis bool) *clusterEnv {
	t.Helper()
	requireProxy(t)
	e := &clusterEnv{t: t, up: testreg.Start(t, testreg.Options{TLS: true}), s3: sharedS3.Get(t), dir: t.TempDir()}
	if withRedis {
		e.redis = testutil.StartRedis(t)
	}
	return e
}

// config is replica i's configuration, listening on addr and advertising
// it; extra is appended (top-level YAML).
func (e *clusterEnv) config(i int, addr, extra string) string {
	dir := filepath.Join(e.dir, fmt.Sprintf("replica-%d", i))
	cfg := fmt.Sprintf(`listen: %q
cacheDir: %q
caDir: %q
logFormat: text
dockerHub: false
registries:
  - host: registry.test
    endpoint: %q
    caFile: %q
`, addr, filepath.Join(dir, "cache"), filepath.Join(e.dir, "ca"), e.up.URL, e.up.CAFile) + s3Section(e.s3)
	if e.redirect {
		cfg += "  redirect: true\n"
	}
	if e.redis != nil {
		cfg += fmt.Sprintf("redis:\n  addr: %q\ncluster:\n  advertise: %q\n  secret: %q\n", e.redis.Addr, "http://"+addr, clusterSecret)
	}
	return cfg + extra
}

// start runs n replicas.
func (e *clusterEnv) start(n int, extra string) []*proxy {
	e.t.Helper()
	ps := make([]*proxy, n)
	for i := range ps {
		ps[i] = startProxyIn(e.t, e.dir, fmt.Sprintf("replica-%d", i), func(addr string) string { return e.config(i, addr, extra) })
	}
	return ps
}

// pullBlob GETs a blob through p and returns its digest as received.
func pullBlob(p *proxy, repo string, d digest.Digest) (digest.Digest, error) {
	resp, err := plainClient().Get(p.URL + "/v2/registry.test/" + repo + "/blobs/" + d.String())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return "", err
	}
	return digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil))), nil
}

// pullAll has clients GET d at once, client i through ps[i%len(ps)].
func pullAll(ps []*proxy, clients int, repo string, d digest.Digest) ([]digest.Digest, []error) {
	got := make([]digest.Digest, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { got[i], errs[i] = pullBlob(ps[i%len(ps)], repo, d) })
	}
	wg.Wait()
	return got, errs
}

// sumMetric adds a series over replicas.
func sumMetric(t *testing.T, ps []*proxy, name string) float64 {
	t.Helper()
	var n float64
	for _, p := range ps {
		n += scrape(t, p)[name]
	}
	return n
}

// waitMetric polls until sumMetric reaches at least want.
func waitMetric(t *testing.T, ps []*proxy, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for sumMetric(t, ps, name) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s summed over the replicas stays below %v", name, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplicasFetchOnce: 8 clients spread over 3 replicas (separate
// processes on one versitygw bucket and one redis-server) pull one cold
// 64 MiB blob at once; upstream serves it exactly once, every client gets
// bytes that match the digest, and the two replicas that do not own the
// digest stream the owner's fill.
func TestReplicasFetchOnce(t *testing.T) {
	t.Parallel()
	e := newClusterEnv(t, true)
	d, size := e.up.PushBigBlob(t, "team/app", 64)
	ps := e.start(3, "")
	e.up.ResetCounts()
	e.up.SetFault(testreg.FaultBlobDelay)
	done := make(chan struct{})
	var got []digest.Digest
	var errs []error
	go func() { got, errs = pullAll(ps, 8, "team/app", d); close(done) }()
	e.up.WaitBlobsParked(t, 1)
	waitMetric(t, ps, "crp_peer_fills_total", 2)
	e.up.ReleaseBlobs()
	<-done
	for i := range got {
		if errs[i] != nil || got[i] != d {
			t.Errorf("client %d: %s, %v; want %s", i, got[i], errs[i], d)
		}
	}
	if n := e.up.Count("GET", "blob"); n != 1 {
		t.Errorf("upstream served %d blob GETs for 8 clients on 3 replicas, want 1", n)
	}
	if b := e.up.BlobBytes(); b != size {
		t.Errorf("upstream sent %d blob bytes, want %d (the blob once)", b, size)
	}
	// Every replica now answers from the shared bucket.
	for _, p := range ps {
		mark := p.Mark()
		if g, err := pullBlob(p, "team/app", d); err != nil || g != d {
			t.Errorf("replica %s after the fill: %s, %v", p.Addr, g, err)
		}
		p.requireBlobHits(t, mark, d.String())
	}
}

// TestReplicaKilledMidFill: the replica that owns the digest is killed
// with SIGKILL while upstream (throttled) is still sending it; every
// client of the surviving replicas keeps its connection and gets the
// verified blob, upstream sends less than twice the blob, and afterwards
// every replica, the restarted one included, serves the right bytes.
func TestReplicaKilledMidFill(t *testing.T) {
	t.Parallel()
	e := newClusterEnv(t, true)
	d, size := e.up.PushBigBlob(t, "team/app", 64)
	ps := e.start(3, "")
	e.up.ResetCounts()
	e.up.SetBlobRate(16 << 20)
	done := make(chan struct{})
	var got []digest.Digest
	var errs []error
	go func() { got, errs = pullAll(ps, 9, "team/app", d); close(done) }()
	waitMetric(t, ps, "crp_peer_fills_total", 2)
	for e.up.BlobBytes() < 8<<20 {
		time.Sleep(20 * time.Millisecond)
	}
	owner := -1
	for i, p := range ps {
		if scrape(t, p)["crp_fills_in_flight"] == 1 {
			owner = i
		}
	}
	if owner < 0 {
		t.Fatal("no replica reports a fill from upstream in flight")
	}
	ps[owner].kill(t)
	e.up.SetBlobRate(0)
	<-done
	for i := range got {
		if i%3 == owner {
			continue // its clients lost their connection with it
		}
		if errs[i] != nil || got[i] != d {
			t.Errorf("client %d of surviving replica %d: %s, %v; want %s", i, i%3, got[i], errs[i], d)
		}
	}
	b := e.up.BlobBytes()
	t.Logf("owner (replica %d) killed; upstream sent %d bytes for the %d-byte blob (%.2fx) in %d GETs", owner, b, size, float64(b)/float64(size), e.up.Count("GET", "blob"))
	if b >= 2*size {
		t.Errorf("upstream sent %d bytes for a %d-byte blob, want less than twice", b, size)
	}
	if n := sumMetric(t, ps[:owner], "crp_fill_failovers_total") + sumMetric(t, ps[owner+1:], "crp_fill_failovers_total"); n < 2 {
		t.Errorf("crp_fill_failovers_total = %v on the survivors, want each to have failed over", n)
	}
	ps[owner] = startProxyIn(t, e.dir, fmt.Sprintf("replica-%d-again", owner), func(addr string) string { return e.config(owner, addr, "") })
	for i, p := range ps {
		if g, err := pullBlob(p, "team/app", d); err != nil || g != d {
			t.Errorf("replica %d afterwards: %s, %v", i, g, err)
		}
	}
}

// TestReplicasShareTagRecords: with the manifest cache on, 100 pulls of a
// tag spread over 3 replicas ask upstream for the manifest once: a tag
// revalidated by one replica is fresh for all of them.
func TestReplicasShareTagRecords(t *testing.T) {
	t.Parallel()
	e := newClusterEnv(t, true)
	img := e.up.PushImage(t, "team/app", "v1.2.3", testreg.RandomLayer(t, 1000))
	ps := e.start(3, "manifestCache:\n  enabled: true\n")
	e.up.ResetCounts()
	for i := range 100 {
		resp, err := plainClient().Do(mustRequest(http.MethodGet, ps[i%3].URL+"/v2/registry.test/team/app/manifests/v1.2.3"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.ManifestDigest {
			t.Fatalf("pull %d through replica %d: status %d, %s", i, i%3, resp.StatusCode, digest.FromBytes(body))
		}
	}
	if n := e.up.Count("GET", "manifest") + e.up.Count("HEAD", "manifest"); n != 1 {
		t.Errorf("upstream got %d manifest requests for 100 pulls over 3 replicas within the TTL, want 1", n)
	}
}

// TestReplicasWithoutRedis: two replicas on one bucket without Redis
// serve every pull correctly (each may fetch for itself).
func TestReplicasWithoutRedis(t *testing.T) {
	t.Parallel()
	e := newClusterEnv(t, false)
	var blobs []testreg.Blob
	for range 3 {
		blobs = append(blobs, e.up.PushBlob(t, "team/app", testreg.RandomLayer(t, 3<<20)))
	}
	ps := e.start(2, "")
	for _, b := range blobs {
		got, errs := pullAll(ps, 4, "team/app", b.Digest)
		for i := range got {
			if errs[i] != nil || got[i] != b.Digest {
				t.Errorf("client %d: %s, %v; want %s", i, got[i], errs[i], b.Digest)
			}
		}
	}
	for _, p := range ps {
		if strings.Contains(p.Log(), "level=error") {
			t.Errorf("replica %s logged errors:\n%s", p.Addr, tail(p.Log(), 40))
		}
	}
}

// TestReplicasRedisOutage: with Redis stopped mid-run, hits and fills
// keep working and /readyz says the replicas are degraded; once Redis is
// back, readiness is plain again and a cold blob pulled through all three
// replicas at once crosses from upstream once more.
func TestReplicasRedisOutage(t *testing.T) {
	t.Parallel()
	e := newClusterEnv(t, true)
	warm := e.up.PushBlob(t, "team/app", testreg.RandomLayer(t, 2<<20))
	during := e.up.PushBlob(t, "team/app", testreg.RandomLayer(t, 2<<20))
	after := e.up.PushBlob(t, "team/app", testreg.RandomLayer(t, 2<<20))
	ps := e.start(3, "")
	if got, errs := pullAll(ps, 3, "team/app", warm.Digest); errs[0] != nil || got[0] != warm.Digest {
		t.Fatalf("warming: %v %v", got, errs)
	}
	e.redis.Stop()
	for _, b := range []testreg.Blob{warm, during} {
		got, errs := pullAll(ps, 6, "team/app", b.Digest)
		for i := range got {
			if errs[i] != nil || got[i] != b.Digest {
				t.Errorf("Redis down, client %d: %s, %v; want %s", i, got[i], errs[i], b.Digest)
			}
		}
	}
	for _, p := range ps {
		waitReadyz(t, p, "ok, degraded: redis unreachable")
	}
	e.redis.Start()
	for _, p := range ps {
		waitReadyz(t, p, "ok\n")
	}
	e.up.ResetCounts()
	e.up.SetFault(testreg.FaultBlobDelay)
	before := sumMetric(t, ps, "crp_peer_fills_total")
	done := make(chan struct{})
	var got []digest.Digest
	var errs []error
	go func() { got, errs = pullAll(ps, 6, "team/app", after.Digest); close(done) }()
	e.up.WaitBlobsParked(t, 1)
	waitMetric(t, ps, "crp_peer_fills_total", before+2)
	e.up.ReleaseBlobs()
	<-done
	for i := range got {
		if errs[i] != nil || got[i] != after.Digest {
			t.Errorf("Redis back, client %d: %s, %v", i, got[i], errs[i])
		}
	}
	if n := e.up.Count("GET", "blob"); n != 1 {
		t.Errorf("Redis back: upstream served %d blob GETs for 6 clients on 3 replicas, want 1", n)
	}
	for _, p := range ps {
		if n := strings.Count(p.Log(), "redis unreachable: serving degraded"); n != 1 {
			t.Errorf("replica %s logged the outage %d times, want once", p.Addr, n)
		}
	}
}

// waitReadyz polls /readyz until its answer starts with want.
func waitReadyz(t *testing.T, p *proxy, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := plainClient().Get(p.URL + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
			if resp.StatusCode == http.StatusOK && strings.HasPrefix(last, want) {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("replica %s: /readyz says %q, want %q", p.Addr, last, want)
}

// bucketBlobBytes sums the sizes of the blobs stored in e's bucket, as S3
// lists them (past the proxies and their index).
func (e *clusterEnv) bucketBlobBytes(t *testing.T) int64 {
	t.Helper()
	return max(e.list(t, "cache/blobs/"), 0)
}

// list sums the object sizes under prefix; -1 when there are none.
func (e *clusterEnv) list(t *testing.T, prefix string) int64 {
	t.Helper()
	var total int64 = -1
	c := e.s3.Client()
	var token *string
	for {
		out, err := c.ListObjectsV2WithContext(t.Context(), &s3.ListObjectsV2Input{Bucket: &e.s3.Bucket, Prefix: &prefix, ContinuationToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			if total < 0 {
				total = 0
			}
			total += *o.Size
		}
		if out.NextContinuationToken == nil {
			return total
		}
		token = out.NextContinuationToken
	}
}

// TestReplicasShareTheSizeBound: 3 replicas pulling different blobs keep
// one size bound (cache.maxSize 20m) over the shared bucket: the shared
// index and the bucket itself stay under it, and du from the command line
// reads the shared figures.
func TestReplicasShareTheSizeBound(t *testing.T) {
	t.Parallel()
	e := newClusterEnv(t, true)
	var blobs []testreg.Blob
	for range 9 {
		blobs = append(blobs, e.up.PushBlob(t, "team/app", testreg.RandomLayer(t, 4<<20)))
	}
	ps := e.start(3, "cache:\n  maxSize: 20m\n")
	for i, b := range blobs {
		if got, err := pullBlob(ps[i%3], "team/app", b.Digest); err != nil || got != b.Digest {
			t.Fatalf("blob %d through replica %d: %s, %v", i, i%3, got, err)
		}
	}
	const bound = 20 << 20
	var pulled int64
	for _, b := range blobs {
		pulled += b.Size
	}
	// The bucket and the shared index end within the bound, and the
	// replicas' eviction counters add up to what left the bucket.
	deadline := time.Now().Add(60 * time.Second)
	for {
		stored, indexed := e.bucketBlobBytes(t), scrape(t, ps[0])["crp_cache_bytes"]
		evicted := int64(sumMetric(t, ps, "crp_evicted_bytes_total"))
		if stored <= bound && int64(indexed) == stored && evicted == pulled-stored {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 9 blobs (%d bytes) through 3 replicas: the bucket holds %d blob bytes, the index says %v, the replicas evicted %d; bound %d",
				pulled, stored, indexed, evicted, bound)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := exec.Command(proxyBin, "du", "--config", filepath.Join(e.dir, "config-replica-0-0.yml")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "TOTAL") || !strings.Contains(string(out), "bound (CACHE_MAX_SIZE): 20.0 MiB") {
		t.Errorf("du against S3 and Redis: %v\n%s", err, out)
	}
	// gc from the command line takes the eviction lease like a replica;
	// the cache is within its bound, so it removes nothing.
	for _, args := range [][]string{{"gc", "--dry-run"}, {"gc"}} {
		out, err := exec.Command(proxyBin, append(args, "--config", filepath.Join(e.dir, "config-replica-1-0.yml"))...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), " 0 objects") {
			t.Errorf("%v against S3 and Redis: %v\n%s", args, err, out)
		}
	}
}
