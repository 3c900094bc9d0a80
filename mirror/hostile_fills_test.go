package mirror_test

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"
)

// restrictedGuard is the real access policy with one proxy user, alice,
// and the registries listed served to proxy users only (authenticated).
func restrictedGuard(t *testing.T, hosts ...string) (*auth.Guard, []string) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(file, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := auth.LoadHtpasswd(file)
	if err != nil {
		t.Fatal(err)
	}
	regs := map[string]auth.RegistryAccess{}
	for _, h := range hosts {
		regs[h] = auth.RegistryAccess{Mode: auth.Authenticated}
	}
	p, err := auth.NewPolicy(auth.PolicyOptions{Users: users, Registries: regs})
	if err != nil {
		t.Fatal(err)
	}
	return auth.NewGuard(p, false), []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:alice-pw"))}
}

// gotBlob reports whether a GET answered exactly the blob d of size bytes.
func gotBlob(status int, sum string, n int64, err error, d digest.Digest, size int64) bool {
	return err == nil && status == 200 && sum == d.String() && n == size
}

// TestLyingUpstreamCannotUnlockPrivateBlob: a blob cached from a
// registry served to proxy users only is not served through another
// registry that merely claims it (HEAD 200, and a GET of other bytes):
// not to an anonymous client, not after a HEAD, and no link is stored for
// that repository. A registry that really holds the bytes gets them
// linked after one verified download through it; another repository of
// the private registry itself is linked on that registry's HEAD. With the
// cache's index (which knows the private registry links the blob) and
// without one (then any restricted registry makes the rule apply).
func TestLyingUpstreamCannotUnlockPrivateBlob(t *testing.T) {
	t.Parallel()
	for _, withIndex := range []bool{true, false} {
		name := map[bool]string{true: "index", false: "no index"}[withIndex]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			layer := testreg.RandomLayer(t, 200_000)
			private := testreg.Start(t, testreg.Options{TLS: true})
			b := private.PushBlob(t, "secret/app", layer)
			private.PushBlob(t, "secret/other", layer)
			liar := testreg.Start(t, testreg.Options{TLS: true})
			liar.ClaimBlob(b.Digest, b.Size)
			honest := testreg.Start(t, testreg.Options{TLS: true})
			honest.PushBlob(t, "lib/base", layer)
			guard, alice := restrictedGuard(t, "private.test")
			e := newEnv(t, envOptions{access: guard, lifecycle: withIndex},
				upstreamSpec{host: "private.test", reg: private}, upstreamSpec{host: "liar.test", reg: liar},
				upstreamSpec{host: "honest.test", reg: honest})

			privPath := "/v2/private.test/secret/app/blobs/" + b.Digest.String()
			if status, sum, n, err := hashGET(e, privPath, alice...); !gotBlob(status, sum, n, err, b.Digest, b.Size) {
				t.Fatalf("alice's pull of the private blob: %d %s %d %v", status, sum, n, err)
			}
			e.drain()
			if resp, _ := e.do("GET", privPath); resp.StatusCode != 401 {
				t.Fatalf("anonymous GET of the private path: %d, want 401", resp.StatusCode)
			}

			liarPath := "/v2/liar.test/x/blobs/" + b.Digest.String()
			if resp, _ := e.do("HEAD", liarPath); resp.Header.Get("X-Cache") == "HIT" {
				t.Fatal("a HEAD through the lying registry was answered from the cache")
			}
			for i := range 2 {
				status, sum, n, err := hashGET(e, liarPath)
				if gotBlob(status, sum, n, err, b.Digest, b.Size) {
					t.Fatalf("GET %d through the lying registry got the private blob", i)
				}
				e.drain()
			}
			if n := served(liar, "GET", "blob"); n != 2 {
				t.Fatalf("the lying registry was asked for the bytes %d times, want 2 (once per GET)", n)
			}
			if linked, err := e.store.HasLink(t.Context(), "liar.test", "x", b.Digest); linked || err != nil {
				t.Fatalf("the lying registry's repository is linked to the private blob: %v %v", linked, err)
			}

			// A registry that holds the bytes: one verified download, then hits.
			honestPath := "/v2/honest.test/lib/base/blobs/" + b.Digest.String()
			for i, want := range []string{"MISS", "HIT"} {
				resp, body := e.do("GET", honestPath)
				if resp.StatusCode != 200 || sha(body) != b.Digest.String() || resp.Header.Get("X-Cache") != want {
					t.Fatalf("GET %d through the honest registry: %d X-Cache %q", i, resp.StatusCode, resp.Header.Get("X-Cache"))
				}
				e.drain()
			}
			if n := served(honest, "GET", "blob"); n != 1 {
				t.Fatalf("the honest registry served the blob %d times, want 1", n)
			}

			// The private registry's own other repository: its HEAD stands.
			resp, body := e.do("GET", "/v2/private.test/secret/other/blobs/"+b.Digest.String(), alice...)
			if resp.StatusCode != 200 || sha(body) != b.Digest.String() || resp.Header.Get("X-Cache") != "HIT" {
				t.Fatalf("another repository of the private registry: %d X-Cache %q", resp.StatusCode, resp.Header.Get("X-Cache"))
			}
			if get, head := served(private, "GET", "blob"), served(private, "HEAD", "blob"); get != 1 || head != 1 {
				t.Fatalf("the private registry served %d GETs and %d HEADs of the blob, want 1 and 1", get, head)
			}
		})
	}
}

// TestFillsAreKeptApartByUpstream: a slow fill of digest D from one
// upstream (parked, and sending other bytes) does not hold up a pull of
// D from another upstream: that client gets the verified blob from its
// own upstream at once (one GET there), the slow fill's client is cut
// short when its bytes fail, and only the upstream that sent the right
// bytes is linked.
func TestFillsAreKeptApartByUpstream(t *testing.T) {
	t.Parallel()
	layer := testreg.RandomLayer(t, 300_000)
	good := testreg.Start(t, testreg.Options{TLS: true})
	b := good.PushBlob(t, "app", layer)
	bad := testreg.Start(t, testreg.Options{TLS: true})
	bad.ClaimBlob(b.Digest, b.Size)
	bad.SetFault(testreg.FaultBlobDelay)
	e := newEnv(t, envOptions{}, upstreamSpec{host: "bad.test", reg: bad}, upstreamSpec{host: "good.test", reg: good})

	type result struct {
		status int
		sum    string
		n      int64
		err    error
	}
	slow := make(chan result, 1)
	go func() {
		s, sum, n, err := hashGET(e, "/v2/bad.test/x/blobs/"+b.Digest.String())
		slow <- result{s, sum, n, err}
	}()
	bad.WaitBlobsParked(t, 1)

	if status, sum, n, err := hashGET(e, "/v2/good.test/app/blobs/"+b.Digest.String()); !gotBlob(status, sum, n, err, b.Digest, b.Size) {
		t.Fatalf("pull from the good upstream while the bad one stalls: %d %s %d %v", status, sum, n, err)
	}
	if n := served(good, "GET", "blob"); n != 1 {
		t.Fatalf("the good upstream served %d GETs, want 1", n)
	}
	bad.ReleaseBlobs()
	if r := <-slow; gotBlob(r.status, r.sum, r.n, r.err, b.Digest, b.Size) {
		t.Fatal("the bad upstream's client got the blob: its bytes were not the blob's")
	}
	e.drain()
	if linked, _ := e.store.HasLink(t.Context(), "bad.test", "x", b.Digest); linked {
		t.Fatal("the bad upstream's repository is linked to the blob")
	}
	if linked, _ := e.store.HasLink(t.Context(), "good.test", "app", b.Digest); !linked {
		t.Fatal("the good upstream's repository is not linked to the blob")
	}
}

// TestTwoUpstreamsOneDigestOneCommit: fills of one digest from two
// upstreams that both hold it both verify; the blob is moved into place
// once, both repositories are linked, and both clients get the blob.
func TestTwoUpstreamsOneDigestOneCommit(t *testing.T) {
	t.Parallel()
	layer := testreg.RandomLayer(t, 300_000)
	one := testreg.Start(t, testreg.Options{TLS: true})
	b := one.PushBlob(t, "app", layer)
	two := testreg.Start(t, testreg.Options{TLS: true})
	two.PushBlob(t, "lib/app", layer)
	one.SetFault(testreg.FaultBlobDelay)
	two.SetFault(testreg.FaultBlobDelay)
	mc := &moveCounter{}
	e := newEnv(t, envOptions{backend: "filesystem", wrap: mc.wrap}, upstreamSpec{host: "one.test", reg: one}, upstreamSpec{host: "two.test", reg: two})

	var wg sync.WaitGroup
	results := make([]bool, 2)
	for i, p := range []string{"/v2/one.test/app/blobs/", "/v2/two.test/lib/app/blobs/"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, sum, n, err := hashGET(e, p+b.Digest.String())
			results[i] = gotBlob(status, sum, n, err, b.Digest, b.Size)
		}()
	}
	one.WaitBlobsParked(t, 1)
	two.WaitBlobsParked(t, 1)
	one.ReleaseBlobs()
	two.ReleaseBlobs()
	wg.Wait()
	e.drain()
	if !results[0] || !results[1] {
		t.Fatalf("clients got the blob: %v", results)
	}
	if n := mc.count(b.Digest); n != 1 {
		t.Fatalf("the blob was moved into place %d times, want 1", n)
	}
	for _, l := range [][2]string{{"one.test", "app"}, {"two.test", "lib/app"}} {
		if linked, _ := e.store.HasLink(t.Context(), l[0], l[1], b.Digest); !linked {
			t.Fatalf("%s/%s is not linked", l[0], l[1])
		}
	}
}

// TestFillCaps: past the cap of fills from one upstream, and past the cap
// of all fills, a request that would start one more is answered 503
// UNAVAILABLE with Retry-After, without an upstream request; joining a
// fill in flight is never refused, and the cap frees when fills end.
func TestFillCaps(t *testing.T) {
	t.Parallel()
	a := testreg.Start(t, testreg.Options{TLS: true})
	bReg := testreg.Start(t, testreg.Options{TLS: true})
	var as, bs []testreg.Blob
	for range 3 {
		as = append(as, a.PushBlob(t, "app", testreg.RandomLayer(t, 5_000)))
		bs = append(bs, bReg.PushBlob(t, "app", testreg.RandomLayer(t, 5_000)))
	}
	e := newEnv(t, envOptions{maxFills: 3, maxFillsPerUpstream: 2}, upstreamSpec{host: "a.test", reg: a}, upstreamSpec{host: "b.test", reg: bReg})
	a.SetFault(testreg.FaultBlobDelay)
	bReg.SetFault(testreg.FaultBlobDelay)
	path := func(host string, b testreg.Blob) string { return "/v2/" + host + "/app/blobs/" + b.Digest.String() }

	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	pull := func(p string, d digest.Digest, size int64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, sum, n, err := hashGET(e, p); !gotBlob(status, sum, n, err, d, size) {
				mu.Lock()
				failed = append(failed, p)
				mu.Unlock()
			}
		}()
	}
	pull(path("a.test", as[0]), as[0].Digest, as[0].Size)
	pull(path("a.test", as[1]), as[1].Digest, as[1].Size)
	a.WaitBlobsParked(t, 2)
	pull(path("a.test", as[0]), as[0].Digest, as[0].Size) // joins: never refused
	wantRefused(t, e, path("a.test", as[2]), "from a.test")
	pull(path("b.test", bs[0]), bs[0].Digest, bs[0].Size)
	bReg.WaitBlobsParked(t, 1)
	wantRefused(t, e, path("b.test", bs[1]), "blobs, as many")
	if n := served(a, "GET", "blob") + served(bReg, "GET", "blob"); n != 3 {
		t.Fatalf("upstreams were asked for %d blobs, want 3 (refused requests ask nothing)", n)
	}
	a.ReleaseBlobs()
	bReg.ReleaseBlobs()
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("pulls within the caps failed: %v", failed)
	}
	e.drain()
	if status, sum, n, err := hashGET(e, path("a.test", as[2])); !gotBlob(status, sum, n, err, as[2].Digest, as[2].Size) {
		t.Fatalf("once the fills ended: %d %v", status, err)
	}
}

func wantRefused(t *testing.T, e *env, path, msg string) {
	t.Helper()
	resp, body := e.do("GET", path)
	wantStatus(t, resp, body, 503, "UNAVAILABLE")
	if resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), msg) {
		t.Fatalf("refusal without Retry-After or without saying why (%q): %s", msg, body)
	}
}

// TestUnkeptFillStopsWithoutClients: a fill of a blob too large for the
// cache, or one that relays because the disk is low, stops when its only
// client leaves (the upstream request is given up, the spool removed,
// nothing stored); a fill that will be kept goes on after its client left
// and is committed.
func TestUnkeptFillStopsWithoutClients(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		max       int64
		low, kept bool
	}{
		{name: "larger than the cache", max: 1 << 20},
		{name: "relayed", max: 1 << 30, low: true},
		{name: "kept", max: 1 << 30, kept: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := testreg.Start(t, testreg.Options{TLS: true})
			d, size := reg.PushBigBlob(t, "app", 4)
			c := &boundedCache{max: tc.max}
			c.low.Store(tc.low)
			e := newEnv(t, envOptions{backend: "filesystem", cache: c}, upstreamSpec{host: "registry.test", reg: reg})
			reg.SetFault(testreg.FaultStallMidBlob)
			// A relay goes at its reader's pace: upstream stalls, or not.
			readSomeAndLeave(t, e, reg, "/v2/registry.test/app/blobs/"+d.String(), !tc.low)
			if !tc.kept {
				reg.WaitNoBlobsParked(t) // the fill gave its upstream request up
			}
			reg.ReleaseBlobs()
			e.drain()
			if stopped := strings.Contains(e.logs.String(), "blob fill stopped: nobody waits for a blob that will not be kept"); stopped == tc.kept {
				t.Fatalf("the fill stopped for want of clients: %v, want %v", stopped, !tc.kept)
			}
			_, err := e.store.StatBlob(t.Context(), d)
			if stored := err == nil; stored != tc.kept {
				t.Fatalf("blob stored: %v, want %v", stored, tc.kept)
			}
			if sent := reg.BlobBytes(); (sent == size) != tc.kept {
				t.Fatalf("upstream sent %d of %d bytes", sent, size)
			}
			if ents, _ := os.ReadDir(filepath.Join(e.root, "_uploads")); len(ents) != 0 {
				t.Fatalf("%d uploads left", len(ents))
			}
		})
	}
}

// readSomeAndLeave starts a GET, reads the first bytes of its body and
// hangs up: with stalled, once upstream stalls in the middle of the blob.
func readSomeAndLeave(t *testing.T, e *env, reg *testreg.Registry, path string, stalled bool) {
	t.Helper()
	resp, err := e.srv.Client().Get(e.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	if _, err := resp.Body.Read(buf); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %d %v", resp.StatusCode, err)
	}
	if stalled {
		reg.WaitBlobsParked(t, 1)
	}
	resp.Body.Close()
	e.srv.CloseClientConnections()
}

// moveCounter counts the blobs moved into place, by digest.
type moveCounter struct {
	mu    sync.Mutex
	moves map[string]int
}

func (m *moveCounter) wrap(sd storagedriver.StorageDriver) storagedriver.StorageDriver {
	return &countMoves{StorageDriver: sd, m: m}
}

func (m *moveCounter) count(d digest.Digest) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.moves[storage.BlobPath(d)]
}

type countMoves struct {
	storagedriver.StorageDriver
	m *moveCounter
}

func (c *countMoves) Move(ctx context.Context, from, to string) error {
	c.m.mu.Lock()
	if c.m.moves == nil {
		c.m.moves = map[string]int{}
	}
	c.m.moves[to]++
	c.m.mu.Unlock()
	return c.StorageDriver.Move(ctx, from, to)
}
