package cluster_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/cluster"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gmarcy/container-registry-proxy/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

const testSecret = "0123456789abcdef-test"

// replica is one proxy of an in-process cluster: its own mirror, spool
// and Redis connection, the storage shared with the others.
type replica struct {
	url     string
	srv     *httptest.Server
	mirror  *mirror.Mirror
	members *cluster.Members
	redis   *cluster.Redis
	logs    *testutil.SyncBuffer
}

// countingDriver counts the uploads written to the shared storage and
// the blobs moved into place.
type countingDriver struct {
	storagedriver.StorageDriver
	writers, moves atomic.Int32
}

func (d *countingDriver) Writer(ctx context.Context, p string, a bool) (storagedriver.FileWriter, error) {
	d.writers.Add(1)
	return d.StorageDriver.Writer(ctx, p, a)
}

func (d *countingDriver) Move(ctx context.Context, from, to string) error {
	d.moves.Add(1)
	return d.StorageDriver.Move(ctx, from, to)
}

// startReplicas runs n replicas of one cache (one in-memory storage
// driver, one Redis prefix) in front of up as "registry.test".
func startReplicas(t *testing.T, n int, up *testreg.Registry, redisAddr string) []*replica {
	t.Helper()
	reps, _ := startCounted(t, n, up, redisAddr)
	return reps
}

// startCounted is startReplicas that also returns the storage's counts.
func startCounted(t *testing.T, n int, up *testreg.Registry, redisAddr string) ([]*replica, *countingDriver) {
	t.Helper()
	driver := &countingDriver{StorageDriver: inmemory.New()}
	prefix := "t" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	reps := make([]*replica, n)
	for i := range reps {
		reps[i] = startReplica(t, driver, up, redisAddr, prefix)
	}
	return reps, driver
}

func startReplica(t *testing.T, driver storagedriver.StorageDriver, up *testreg.Registry, redisAddr, prefix string) *replica {
	t.Helper()
	return startReplicaOf(t, driver, map[string]*testreg.Registry{"registry.test": up}, redisAddr, prefix, 20*time.Second)
}

// startReplicaOf is startReplica in front of several upstreams, by host,
// whose answers may take readTimeout.
func startReplicaOf(t *testing.T, driver storagedriver.StorageDriver, ups map[string]*testreg.Registry, redisAddr, prefix string, readTimeout time.Duration) *replica {
	t.Helper()
	store, err := storage.New(driver, storage.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var regs []mirror.Registry
	for host, up := range ups {
		client, err := upstream.New(upstream.Options{Host: host, Endpoint: up.URL, CAFile: up.CAFile,
			ConnectTimeout: 5 * time.Second, ReadTimeout: readTimeout, SendTimeout: 20 * time.Second,
			Tokens: auth.NewTokenCache(&http.Client{Timeout: 10 * time.Second}, auth.TokenOptions{}), Log: logx.From})
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, mirror.Registry{Host: host, Client: client})
	}
	rep := &replica{logs: &testutil.SyncBuffer{}}
	log := logrus.New()
	log.SetOutput(rep.logs)
	rep.srv = httptest.NewUnstartedServer(nil)
	rep.url = "http://" + rep.srv.Listener.Addr().String()
	if rep.redis, err = cluster.OpenRedis(t.Context(), cluster.RedisOptions{Addr: redisAddr, Prefix: prefix, Log: log}); err != nil {
		t.Fatal(err)
	}
	rep.members = cluster.JoinMembers(t.Context(), rep.redis, rep.url, 3*time.Second)
	fetcher := cluster.NewFetcher(rep.redis, rep.members, cluster.FetcherOptions{Secret: testSecret, LeaseTTL: 3 * time.Second, Log: log})
	rep.mirror, err = mirror.New(store, regs, mirror.Options{FillTimeout: time.Minute, Fetcher: fetcher})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v2/", rep.mirror)
	mux.Handle(mirror.PeerPath, cluster.RequireSecret(testSecret, rep.mirror.PeerHandler()))
	rep.srv.Config.Handler = logx.AccessLog(log, mux)
	rep.srv.Start()
	t.Cleanup(func() { rep.stop(t) })
	return rep
}

// stop ends the replica as a graceful shutdown does.
func (r *replica) stop(t *testing.T) {
	r.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.mirror.Drain(ctx); err != nil {
		t.Errorf("drain: %v", err)
	}
	_ = r.members.Close()
	_ = r.redis.Close()
	if t.Failed() {
		t.Logf("replica %s log:\n%s", r.url, r.logs.String())
	}
}

// kill ends the replica as a crash would for its peers: connections cut,
// fills abandoned.
func (r *replica) kill() {
	r.srv.CloseClientConnections()
	r.srv.Close()
	r.mirror.Abandon()
}

// pull GETs the blob through rep and returns the hex SHA-256 of the body.
func pull(rep *replica, d digest.Digest) (string, error) {
	resp, err := http.Get(rep.url + "/v2/registry.test/app/blobs/" + d.String())
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
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// waitFills waits until every replica in reps has a fill of d whose
// source is known.
func waitFills(t *testing.T, reps []*replica, d digest.Digest) map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		sources := map[string]string{}
		for _, r := range reps {
			for _, f := range r.mirror.Fills() {
				if f.Digest == d.String() && f.Source != "" {
					sources[r.url] = f.Source
				}
			}
		}
		if len(sources) == len(reps) {
			return sources
		}
		if time.Now().After(deadline) {
			t.Fatalf("fills of %s with a source: %v, want one on each of %d replicas", d, sources, len(reps))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// threeReplicas runs 3 replicas in front of an upstream holding one blob
// of size bytes, and returns the digest's owner and the two others.
func threeReplicas(t *testing.T, size int) (up *testreg.Registry, b testreg.Blob, owner *replica, others []*replica) {
	t.Helper()
	rd := testutil.StartRedis(t)
	up = testreg.Start(t, testreg.Options{})
	b = up.PushBlob(t, "app", testreg.RandomLayer(t, size))
	reps := startReplicas(t, 3, up, rd.Addr)
	waitMembers(t, reps)
	owner = ownerOf(t, reps, b.Digest)
	for _, r := range reps {
		if r != owner {
			others = append(others, r)
		}
	}
	return up, b, owner, others
}

// waitNoFills waits until no replica has a fill in flight.
func waitNoFills(t *testing.T, reps []*replica) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range reps {
		for len(r.mirror.Fills()) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("replica %s still fills %v", r.url, r.mirror.Fills())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func ownerOf(t *testing.T, reps []*replica, d digest.Digest) *replica {
	t.Helper()
	owner := reps[0].members.Owner(cluster.LeaseKey("registry.test", d))
	for _, r := range reps {
		if r.url == owner {
			return r
		}
	}
	t.Fatalf("owner %q of %s is none of the replicas", owner, d)
	return nil
}

// waitMembers waits until every replica sees all of them.
func waitMembers(t *testing.T, reps []*replica) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range reps {
		for len(r.members.Live()) < len(reps) {
			if time.Now().After(deadline) {
				t.Fatalf("replica %s sees %v", r.url, r.members.Live())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestOneUpstreamFetchAcrossReplicas: 8 clients on 3 replicas pull one
// cold blob at once; upstream serves it once, every client gets the
// verified bytes, and the replicas that are not the owner stream the
// owner's fill.
func TestOneUpstreamFetchAcrossReplicas(t *testing.T) {
	t.Parallel()
	rd := testutil.StartRedis(t)
	up := testreg.Start(t, testreg.Options{})
	b := up.PushBlob(t, "app", testreg.RandomLayer(t, 4<<20))
	reps, driver := startCounted(t, 3, up, rd.Addr)
	waitMembers(t, reps)
	owner := ownerOf(t, reps, b.Digest)
	up.SetFault(testreg.FaultBlobDelay)

	var wg sync.WaitGroup
	sums := make([]string, 8)
	errs := make([]error, 8)
	for i := range 8 {
		wg.Go(func() { sums[i], errs[i] = pull(reps[i%3], b.Digest) })
	}
	up.WaitBlobsParked(t, 1)
	sources := waitFills(t, reps, b.Digest)
	up.ReleaseBlobs()
	wg.Wait()
	for i := range 8 {
		if errs[i] != nil || sums[i] != b.Digest.String() {
			t.Errorf("client %d: %s, %v; want %s", i, sums[i], errs[i], b.Digest)
		}
	}
	if n := up.Count("GET", "blob"); n != 1 {
		t.Errorf("upstream served %d blob GETs for 8 clients on 3 replicas, want 1", n)
	}
	// The replicas that streamed the owner's fill waited for its commit:
	// the storage received the blob once.
	waitNoFills(t, reps)
	if w, m := driver.writers.Load(), driver.moves.Load(); w != 1 || m != 1 {
		t.Errorf("the shared storage got %d uploads and %d moves into place, want the blob written once", w, m)
	}
	for url, src := range sources {
		want := owner.url
		if url == owner.url {
			want = mirror.SourceUpstream
		}
		if src != want {
			t.Errorf("replica %s filled from %q, want %q (owner %s)", url, src, want, owner.url)
		}
	}
}

// TestFailoverWhenOwnerDies: the owner dies halfway through its fill
// (upstream throttled); the clients of the other replicas keep their
// connections and get verified bytes: their fills resume at their offsets
// from the replica that takes the lease over, which resumes upstream with
// a Range request. Upstream sends less than twice the blob.
func TestFailoverWhenOwnerDies(t *testing.T) {
	t.Parallel()
	up, b, owner, survivors := threeReplicas(t, 2<<20)
	up.SetBlobRate(1 << 20)
	var wg sync.WaitGroup
	sums := make([]string, 4)
	errs := make([]error, 4)
	for i := range 4 {
		wg.Go(func() { sums[i], errs[i] = pull(survivors[i%2], b.Digest) })
	}
	waitWritten(t, survivors, b.Digest, 256<<10)
	owner.kill()
	up.SetBlobRate(0)
	wg.Wait()
	for i := range 4 {
		if errs[i] != nil || sums[i] != b.Digest.String() {
			t.Errorf("client %d on a surviving replica: %s, %v; want %s", i, sums[i], errs[i], b.Digest)
		}
	}
	for _, r := range survivors {
		if !strings.Contains(r.logs.String(), "broke off; resuming") {
			t.Errorf("replica %s did not log its failover:\n%s", r.url, r.logs.String())
		}
	}
	if got := up.BlobBytes(); got >= 2*int64(len(b.Bytes)) {
		t.Errorf("upstream sent %d bytes for a %d-byte blob, want less than twice", got, len(b.Bytes))
	}
}

// waitWritten waits until every replica's fill of d has spooled at least
// n bytes.
func waitWritten(t *testing.T, reps []*replica, d digest.Digest, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range reps {
		for {
			var written int64
			for _, f := range r.mirror.Fills() {
				if f.Digest == d.String() {
					written = f.Written
				}
			}
			if written >= n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s spooled %d bytes of %s, want %d", r.url, written, d, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestPeerRequestsNeedTheSecret: the replicas' blob endpoint refuses
// requests without the cluster secret, or with a wrong one.
func TestPeerRequestsNeedTheSecret(t *testing.T) {
	t.Parallel()
	rd := testutil.StartRedis(t)
	up := testreg.Start(t, testreg.Options{})
	b := up.PushBlob(t, "app", testreg.RandomLayer(t, 1000))
	rep := startReplicas(t, 1, up, rd.Addr)[0]
	u := rep.url + mirror.PeerPath + b.Digest.String() + "?upstream=registry.test&repo=app"
	for _, secret := range []string{"", "wrong", testSecret + "x"} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
		if secret != "" {
			req.Header.Set(cluster.SecretHeader, secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("secret %q: status %d, want 401", secret, resp.StatusCode)
		}
	}
	if n := up.Count("GET", "blob"); n != 0 {
		t.Errorf("refused peer requests made %d upstream blob GETs", n)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	req.Header.Set(cluster.SecretHeader, testSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != b.Digest {
		t.Errorf("with the secret: status %d, %d bytes", resp.StatusCode, len(body))
	}
}

// TestFailoverWhenOwnerStallsWithoutItsLease: the owner's fill sends
// nothing (upstream parked) and its lease disappears, as for a replica
// frozen without its connections closing: the other replicas stop
// waiting for it, take the lease and fetch themselves; their clients get
// verified bytes.
func TestFailoverWhenOwnerStallsWithoutItsLease(t *testing.T) {
	t.Parallel()
	up, b, owner, others := threeReplicas(t, 1<<20)
	up.SetFault(testreg.FaultBlobDelay)
	var wg sync.WaitGroup
	sums := make([]string, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { sums[i], errs[i] = pull(others[i], b.Digest) })
	}
	up.WaitBlobsParked(t, 1)
	waitFills(t, others, b.Digest)
	// The owner's lease vanishes (it expired: the owner stopped renewing).
	if err := owner.redis.Client().Del(t.Context(), owner.redis.Key("lease", cluster.LeaseKey("registry.test", b.Digest))).Err(); err != nil {
		t.Fatal(err)
	}
	up.WaitBlobsParked(t, 2) // a follower took the lease and fetches
	up.ReleaseBlobs()
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil || sums[i] != b.Digest.String() {
			t.Errorf("client %d: %s, %v; want %s", i, sums[i], errs[i], b.Digest)
		}
	}
	stalled := 0
	for _, r := range others {
		if strings.Contains(r.logs.String(), "sends nothing and no longer holds its lease") {
			stalled++
		}
	}
	if stalled == 0 {
		t.Error("no replica noticed the stalled owner")
	}
}

// TestFillsOfOneDigestFromTwoUpstreams: fills of one digest from two
// upstreams are two fills across the replicas too, each under a lease of
// its own. A replica streaming the genuine blob from the owner of its
// fill finishes (commits, its fill ends) once that fill is stored, while
// a fill of the same digest from another upstream that sends other bytes
// still stalls on the same owner; that fill's client is cut short.
func TestFillsOfOneDigestFromTwoUpstreams(t *testing.T) {
	t.Parallel()
	rd := testutil.StartRedis(t)
	good := testreg.Start(t, testreg.Options{})
	b := good.PushBlob(t, "app", testreg.RandomLayer(t, 1<<20))
	bad := testreg.Start(t, testreg.Options{})
	bad.ClaimBlob(b.Digest, b.Size)
	ups := map[string]*testreg.Registry{"good.test": good, "bad.test": bad}
	driver := &countingDriver{StorageDriver: inmemory.New()}
	prefix := "t" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	// The bad upstream stalls for longer than the fills are waited for.
	reps := []*replica{startReplicaOf(t, driver, ups, rd.Addr, prefix, 2*time.Minute), startReplicaOf(t, driver, ups, rd.Addr, prefix, 2*time.Minute)}
	waitMembers(t, reps)
	owner, other := reps[0], reps[1]
	if reps[0].members.Owner(cluster.LeaseKey("good.test", b.Digest)) != owner.url {
		owner, other = other, owner
	}
	get := func(rep *replica, host string) (string, error) {
		resp, err := http.Get(rep.url + "/v2/" + host + "/app/blobs/" + b.Digest.String())
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		h := sha256.New()
		_, err = io.Copy(h, resp.Body)
		return "sha256:" + hex.EncodeToString(h.Sum(nil)), err
	}

	good.SetFault(testreg.FaultBlobDelay)
	bad.SetFault(testreg.FaultBlobDelay)
	goodDone := make(chan error, 1)
	go func() {
		sum, err := get(other, "good.test")
		if err == nil && sum != b.Digest.String() {
			err = fmt.Errorf("got %s", sum)
		}
		goodDone <- err
	}()
	good.WaitBlobsParked(t, 1)
	badDone := make(chan string, 1)
	go func() {
		sum, _ := get(other, "bad.test")
		badDone <- sum
	}()
	bad.WaitBlobsParked(t, 1)
	good.ReleaseBlobs()
	if err := <-goodDone; err != nil {
		t.Fatalf("pull from the good upstream: %v", err)
	}
	// The other replica's fill from the good upstream ends while the bad
	// upstream still stalls.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		for _, f := range other.mirror.Fills() {
			if f.Namespace == "good.test" {
				n++
			}
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s still fills from good.test: %+v", other.url, other.mirror.Fills())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := good.Count("GET", "blob"); n != 1 {
		t.Fatalf("the good upstream served %d blob GETs, want 1", n)
	}
	bad.ReleaseBlobs()
	if sum := <-badDone; sum == b.Digest.String() {
		t.Fatal("the bad upstream's client got the blob")
	}
	waitNoFills(t, reps)
}

// TestPeerAskedWhileAnotherHoldsTheLease: a replica asked by a peer for a
// blob whose lease another replica holds answers 409 instead of streaming
// that replica's fill in turn: a chain of peers would leave the asking
// replica without a failover when the holder dies (it would follow the
// middle one, which itself fails over). The asking replica then goes to
// the holder; upstream is asked once.
func TestPeerAskedWhileAnotherHoldsTheLease(t *testing.T) {
	t.Parallel()
	up, b, owner, others := threeReplicas(t, 1<<20)
	up.SetFault(testreg.FaultBlobDelay)
	var wg sync.WaitGroup
	var sum string
	var perr error
	wg.Go(func() { sum, perr = pull(owner, b.Digest) })
	up.WaitBlobsParked(t, 1)
	waitFills(t, []*replica{owner}, b.Digest)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet,
		others[0].url+mirror.PeerPath+b.Digest.String()+"?upstream=registry.test&repo=app", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(cluster.SecretHeader, testSecret)
	type answer struct {
		status int
		err    error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- answer{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- answer{status: resp.StatusCode}
	}()
	var a answer
	select {
	case a = <-got:
	case <-time.After(3 * time.Second):
		// Streaming the holder's fill, parked upstream: release it to
		// see what the peer got.
		up.ReleaseBlobs()
		a = <-got
	}
	if a.err != nil || a.status != http.StatusConflict {
		t.Errorf("peer ask to %s while %s holds the lease: %d, %v; want 409", others[0].url, owner.url, a.status, a.err)
	}
	up.ReleaseBlobs()
	wg.Wait()
	if perr != nil || sum != b.Digest.String() {
		t.Errorf("owner's client: %s, %v", sum, perr)
	}
	// The asking replica's own clients still get the blob.
	if s, err := pull(others[1], b.Digest); err != nil || s != b.Digest.String() {
		t.Errorf("other replica afterwards: %s, %v", s, err)
	}
	if n := up.Count("GET", "blob"); n != 1 {
		t.Errorf("upstream served %d blob GETs, want 1", n)
	}
}
