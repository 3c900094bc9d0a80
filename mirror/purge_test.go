package mirror_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/shim"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
)

// purgeHost is the registry the purge tests intercept.
const purgeHost = "registry.test:5000"

// newPurgeEnv is an env (filesystem backend) in front of reg served as
// purgeHost, whose Options.Cache is a cache.Lifecycle over a MemIndex: the
// index, pins and removals of the real proxy.
func newPurgeEnv(t *testing.T, reg *testreg.Registry, tagTTL time.Duration) *env {
	t.Helper()
	return newEnv(t, envOptions{backend: "filesystem", tagTTL: tagTTL, lifecycle: true}, upstreamSpec{host: purgeHost, reg: reg})
}

// viaShim is a client of a Shim in front of an env's mirror: it
// intercepts purgeHost, passes writes through to reg and tells the mirror
// what they changed.
type viaShim struct {
	t *testing.T
	c *http.Client
}

func newViaShim(t *testing.T, e *env, reg *testreg.Registry) *viaShim {
	t.Helper()
	ca, err := shim.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(e.logs)
	sh, err := shim.New(e.mirror, shim.NewMinter(ca, shim.MinterOptions{}), shim.Options{
		Registries:    []shim.Registry{{Host: purgeHost, Endpoint: reg.URL, CAFile: reg.CAFile}},
		AllowPush:     true,
		Purger:        e.mirror,
		HeaderTimeout: 10 * time.Second,
		Logger:        log,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sh)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	pu, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(pu), ForceAttemptHTTP2: true}
	tr.TLSClientConfig = reg.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tr.TLSClientConfig.RootCAs = pool
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
		if err := sh.Close(); err != nil {
			t.Error(err)
		}
	})
	return &viaShim{t: t, c: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// manifestAccept is what the tests' manifest requests accept.
var manifestAccept = strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
	testreg.MediaTypeDockerManifest, testreg.MediaTypeDockerManifestList}, ", ")

// do sends method to path (/v2/…) of purgeHost through the shim.
func (s *viaShim) do(method, path string, body []byte, hdr ...string) (*http.Response, []byte) {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), method, "https://"+purgeHost+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if strings.Contains(path, "/manifests/") {
		req.Header.Set("Accept", manifestAccept)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.c.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, b
}

// want sends method to path through the shim and checks the status (and
// X-Cache when xcache is not empty).
func (s *viaShim) want(method, path string, status int, xcache string) {
	s.t.Helper()
	resp, body := s.do(method, path, nil)
	if resp.StatusCode != status || (xcache != "" && resp.Header.Get("X-Cache") != xcache) {
		s.t.Fatalf("%s %s: %d X-Cache %q, want %d %q; body %s", method, path, resp.StatusCode, resp.Header.Get("X-Cache"), status, xcache, body)
	}
}

// pull GETs img's manifest by tag and by digest and every blob of it
// through the shim, so that all of it is cached for repo.
func (s *viaShim) pull(img testreg.Image) {
	s.t.Helper()
	s.want(http.MethodGet, "/v2/"+img.Repo+"/manifests/"+img.Tag, http.StatusOK, "")
	s.want(http.MethodGet, "/v2/"+img.Repo+"/manifests/"+img.ManifestDigest.String(), http.StatusOK, mirror.CacheHit)
	for _, b := range append([]testreg.Blob{img.Config}, img.Layers...) {
		s.want(http.MethodGet, "/v2/"+img.Repo+"/blobs/"+b.Digest.String(), http.StatusOK, "")
		s.want(http.MethodHead, "/v2/"+img.Repo+"/blobs/"+b.Digest.String(), http.StatusOK, mirror.CacheHit)
	}
}

// stored reports whether the cache's storage holds d.
func stored(t *testing.T, s *storage.Store, d digest.Digest) bool {
	t.Helper()
	_, err := s.StatBlob(t.Context(), d)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestDeleteThroughTheShimPurges: with pushes allowed, deletes that the
// registry accepted through the shim purge the cache before the client
// has its answer. A manifest deleted by digest answers 404 by digest (not
// 200 HIT), its tag record is gone (the tag goes upstream and is unknown
// there), and its content leaves the storage (no other repository links
// it). A blob deleted in one repository answers 404 there and 200 HIT in
// another that links it, and stays stored while that one does; deleted
// there too, it leaves the storage.
func TestDeleteThroughTheShimPurges(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	shared, own := testreg.RandomLayer(t, 40<<10), testreg.RandomLayer(t, 30<<10)
	app := reg.PushImage(t, "team/app", "v1", shared, own)
	other := reg.PushImage(t, "team/other", "v1", shared)
	e := newPurgeEnv(t, reg, time.Hour)
	s := newViaShim(t, e, reg)
	s.pull(app)
	s.pull(other)
	md := app.ManifestDigest.String()

	s.want(http.MethodDelete, "/v2/team/app/manifests/"+md, http.StatusAccepted, "")
	s.want(http.MethodHead, "/v2/team/app/manifests/"+md, http.StatusNotFound, "")
	s.want(http.MethodGet, "/v2/team/app/manifests/"+md, http.StatusNotFound, "")
	if rec, err := e.store.GetTag(t.Context(), "registry.test_5000", "team/app", "v1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("tag record of the deleted manifest: %+v, %v; want none", rec, err)
	}
	before := served(reg, http.MethodGet, "manifest") + served(reg, http.MethodHead, "manifest")
	s.want(http.MethodGet, "/v2/team/app/manifests/v1", http.StatusNotFound, "")
	if after := served(reg, http.MethodGet, "manifest") + served(reg, http.MethodHead, "manifest"); after == before {
		t.Fatal("the tag of the deleted manifest was answered without asking upstream")
	}
	if stored(t, e.store, app.ManifestDigest) {
		t.Fatal("the deleted manifest, linked by no other repository, is still stored")
	}
	s.want(http.MethodHead, "/v2/team/other/manifests/v1", http.StatusOK, mirror.CacheHit)

	ownD, sharedD := app.Layers[1].Digest.String(), app.Layers[0].Digest
	s.want(http.MethodDelete, "/v2/team/app/blobs/"+ownD, http.StatusAccepted, "")
	s.want(http.MethodHead, "/v2/team/app/blobs/"+ownD, http.StatusNotFound, "")
	s.want(http.MethodGet, "/v2/team/app/blobs/"+ownD, http.StatusNotFound, "")
	if stored(t, e.store, app.Layers[1].Digest) {
		t.Fatal("a deleted blob that no other repository links is still stored")
	}

	s.want(http.MethodDelete, "/v2/team/app/blobs/"+sharedD.String(), http.StatusAccepted, "")
	s.want(http.MethodHead, "/v2/team/app/blobs/"+sharedD.String(), http.StatusNotFound, "")
	s.want(http.MethodGet, "/v2/team/other/blobs/"+sharedD.String(), http.StatusOK, mirror.CacheHit)
	if !stored(t, e.store, sharedD) {
		t.Fatal("a blob deleted in one repository was removed while another links it")
	}
	s.want(http.MethodDelete, "/v2/team/other/blobs/"+sharedD.String(), http.StatusAccepted, "")
	s.want(http.MethodHead, "/v2/team/other/blobs/"+sharedD.String(), http.StatusNotFound, "")
	if stored(t, e.store, sharedD) {
		t.Fatal("a blob deleted in every repository that linked it is still stored")
	}
}

// TestDeleteManifestDropsEveryTagPointingToIt: every tag record of the
// repository that names the deleted manifest goes; a tag of other content
// stays.
func TestDeleteManifestDropsEveryTagPointingToIt(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 1<<10))
	keep := reg.PushImage(t, "team/app", "keep", testreg.RandomLayer(t, 1<<10))
	tags := []string{"v1", "latest", "stable", "1.0"}
	for _, tag := range tags[1:] {
		reg.PushManifest(t, "team/app", tag, img.MediaType, img.Manifest)
	}
	e := newPurgeEnv(t, reg, time.Hour)
	s := newViaShim(t, e, reg)
	for _, tag := range append(tags, "keep") {
		s.want(http.MethodGet, "/v2/team/app/manifests/"+tag, http.StatusOK, "")
	}
	s.want(http.MethodDelete, "/v2/team/app/manifests/"+img.ManifestDigest.String(), http.StatusAccepted, "")
	for _, tag := range tags {
		if rec, err := e.store.GetTag(t.Context(), "registry.test_5000", "team/app", tag); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("tag record %s: %+v, %v; want none", tag, rec, err)
		}
	}
	if rec, err := e.store.GetTag(t.Context(), "registry.test_5000", "team/app", "keep"); err != nil || rec.Digest != keep.ManifestDigest {
		t.Fatalf("tag record keep: %+v, %v; want it kept", rec, err)
	}
	s.want(http.MethodHead, "/v2/team/app/manifests/keep", http.StatusOK, mirror.CacheHit)
}

// TestNothingNegativeCachedForDigests: a digest asked for before it was
// pushed (404) is served once it is pushed through the shim; a tag pulled
// and cached is replaced by a push through the shim at once, whatever its
// TTL.
func TestNothingNegativeCachedForDigests(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	src := testreg.Start(t, testreg.Options{TLS: true})
	old := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 1<<10))
	img := src.PushImage(t, "scratch/src", "v1", testreg.RandomLayer(t, 20<<10))
	e := newPurgeEnv(t, reg, time.Hour)
	s := newViaShim(t, e, reg)
	s.want(http.MethodGet, "/v2/team/app/manifests/v1", http.StatusOK, "")
	s.want(http.MethodHead, "/v2/team/app/manifests/v1", http.StatusOK, mirror.CacheHit)
	layer := img.Layers[0]
	for _, p := range []string{"/blobs/" + layer.Digest.String(), "/manifests/" + img.ManifestDigest.String()} {
		s.want(http.MethodHead, "/v2/team/app"+p, http.StatusNotFound, "")
		s.want(http.MethodGet, "/v2/team/app"+p, http.StatusNotFound, "")
	}

	for _, b := range append([]testreg.Blob{img.Config}, img.Layers...) {
		s.pushBlob("team/app", b)
	}
	s.want(http.MethodHead, "/v2/team/app/blobs/"+layer.Digest.String(), http.StatusOK, "")
	s.want(http.MethodGet, "/v2/team/app/blobs/"+layer.Digest.String(), http.StatusOK, "")
	resp, body := s.do(http.MethodPut, "/v2/team/app/manifests/v1", img.Manifest, "Content-Type", img.MediaType)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("manifest PUT through the shim: %d %s", resp.StatusCode, body)
	}
	s.want(http.MethodHead, "/v2/team/app/manifests/"+img.ManifestDigest.String(), http.StatusOK, "")
	resp, _ = s.do(http.MethodGet, "/v2/team/app/manifests/v1", nil)
	if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode != http.StatusOK || got != img.ManifestDigest.String() {
		t.Fatalf("tag after a push of new content: %d %s, want %s (the cached %s was kept)", resp.StatusCode, got, img.ManifestDigest, old.ManifestDigest)
	}
}

// pushBlob uploads b to repo through the shim (POST, then PUT with the
// digest), as a client pushing an image does.
func (s *viaShim) pushBlob(repo string, b testreg.Blob) {
	s.t.Helper()
	resp, body := s.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusAccepted || err != nil {
		s.t.Fatalf("upload start through the shim: %d %s, Location %q", resp.StatusCode, body, resp.Header.Get("Location"))
	}
	if loc.Host != "" && loc.Host != purgeHost {
		s.t.Fatalf("upload Location %s leaves the intercepted host", loc)
	}
	q := loc.Query()
	q.Set("digest", b.Digest.String())
	resp, body = s.do(http.MethodPut, loc.Path+"?"+q.Encode(), b.Bytes, "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusCreated {
		s.t.Fatalf("upload PUT through the shim: %d %s", resp.StatusCode, body)
	}
}

// TestDeleteDuringAFill: a blob deleted (upstream accepted, the shim
// told the mirror) while a fill of it for the same repository runs: the
// client of the fill gets its bytes, a request after the delete does not
// join that fill (upstream says it is gone), and the fill commits nothing:
// afterwards the blob is neither served from the cache nor stored.
func TestDeleteDuringAFill(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 64<<10))
	layer := img.Layers[0]
	e := newPurgeEnv(t, reg, 0)
	path := "/v2/" + purgeHost + "/team/app/blobs/" + layer.Digest.String()
	reg.SetFault(testreg.FaultBlobDelay)
	got := make(chan string, 1)
	go func() {
		resp, body, err := e.try(http.MethodGet, path)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- fmt.Sprintf("%d %s", resp.StatusCode, digest.FromBytes(body))
	}()
	reg.WaitBlobsParked(t, 1)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, reg.URL+"/v2/team/app/blobs/"+layer.Digest.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upstream DELETE: %d", resp.StatusCode)
	}
	if err := e.mirror.ForgetBlob(t.Context(), purgeHost, "team/app", layer.Digest); err != nil {
		t.Fatal(err)
	}
	after, _ := e.do(http.MethodGet, path)
	if after.StatusCode != http.StatusNotFound {
		t.Fatalf("GET after the delete: %d, want 404 (it joined the fill that started before)", after.StatusCode)
	}
	reg.ReleaseBlobs()
	if g, want := <-got, fmt.Sprintf("200 %s", layer.Digest); g != want {
		t.Fatalf("the client of the fill got %q, want %q", g, want)
	}
	drain(t, e)
	if stored(t, e.store, layer.Digest) {
		t.Fatal("the fill committed a blob deleted while it ran")
	}
	resp, body := e.do(http.MethodHead, path)
	wantStatus(t, resp, body, http.StatusNotFound, "")
}

// drain waits until the env's fills have ended.
func drain(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := e.mirror.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}
