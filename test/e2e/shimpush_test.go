//go:build e2e

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// startAnonUpstreams is startUpstreams with an anonymous registry behind
// registry.test:<port>: pushes through the shim carry the client's own
// credentials, and these clients have none.
func startAnonUpstreams(t *testing.T) *upstreams {
	t.Helper()
	u := &upstreams{
		Hub:  testreg.Start(t, testreg.Options{TLS: true}),
		Priv: testreg.Start(t, testreg.Options{TLS: true}),
	}
	_, port, err := net.SplitHostPort(u.Priv.Host)
	if err != nil {
		t.Fatal(err)
	}
	u.PrivHost = "registry.test:" + port
	u.PrivNS = "registry.test_" + port
	return u
}

// writeOCILayout writes img (already pushed somewhere, so its blobs' bytes
// are known) as an OCI image layout with one manifest tagged tag.
func writeOCILayout(t *testing.T, img testreg.Image, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	put := func(d string, b []byte) {
		alg, hexd, _ := strings.Cut(d, ":")
		writeFile(t, filepath.Join(dir, "blobs", alg), hexd, string(b))
	}
	put(img.ManifestDigest.String(), img.Manifest)
	put(img.Config.Digest.String(), img.Config.Bytes)
	for _, l := range img.Layers {
		if int64(len(l.Bytes)) != l.Size {
			t.Fatalf("layer %s: %d bytes known, size %d", l.Digest, len(l.Bytes), l.Size)
		}
		put(l.Digest.String(), l.Bytes)
	}
	idx := ocispec.Index{
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{
			MediaType:   img.MediaType,
			Digest:      img.ManifestDigest,
			Size:        int64(len(img.Manifest)),
			Annotations: map[string]string{ocispec.AnnotationRefName: tag},
		}},
	}
	idx.SchemaVersion = 2
	b, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "index.json", string(b))
	writeFile(t, dir, "oci-layout", `{"imageLayoutVersion":"1.0.0"}`)
	return dir
}

// skopeoPush copies an OCI layout to docker://ref through the shim,
// anonymously, trusting the proxy's CA with --dest-cert-dir.
func (s *viaShim) skopeoPush(t *testing.T, layout, tag, ref string) (string, error) {
	t.Helper()
	return tryRun(t, s.env(), "skopeo", "--registries-conf", noMirrorsConf(t), "--policy", policyJSON(t),
		"copy", "--retry-times", "0", "--dest-no-creds", "--dest-cert-dir", s.CertDir,
		"oci:"+layout+":"+tag, "docker://"+ref)
}

// upstreamDigest asks reg itself (not through the proxy) which manifest
// digest repo:tag names.
func upstreamDigest(t *testing.T, reg *testreg.Registry, repo, tag string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: reg.CAPool}}}
	req, _ := http.NewRequest(http.MethodHead, reg.URL+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		testreg.MediaTypeDockerManifest, testreg.MediaTypeDockerManifestList}, ", "))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.Status
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// TestShimPush: skopeo pushes to registry.test:<port> through HTTPS_PROXY.
// With allowPush off the proxy answers 405 UNSUPPORTED naming ALLOW_PUSH
// and nothing reaches upstream. With allowPush on (and tag caching on, so
// a stale tag would show) the push lands upstream; a pull through the
// proxy caches the tag; a push of different content to the same tag
// through the proxy drops the cached tag, so the next pull gets the new
// digest, while a change made upstream behind the proxy's back stays
// hidden until the tag's TTL.
func TestShimPush(t *testing.T) {
	t.Parallel()
	requireTools(t, "skopeo")
	u := startAnonUpstreams(t)
	// Source images, pushed to a scratch repository only to get their bytes.
	imgA := u.Hub.PushImage(t, "scratch/src", "a", testreg.RandomLayer(t, 200<<10), testreg.RandomLayer(t, 300<<10))
	imgB := u.Hub.PushImage(t, "scratch/src", "b", testreg.RandomLayer(t, 250<<10))
	layoutA, layoutB := writeOCILayout(t, imgA, "v1"), writeOCILayout(t, imgB, "v1")
	const repo = "pushed/app"
	ref := u.PrivHost + "/" + repo + ":v1"

	t.Run("allowPush off", func(t *testing.T) {
		p := startProxy(t, u)
		s := newViaShim(t, p)
		u.resetCounts()
		mark := p.Mark()
		out, err := s.skopeoPush(t, layoutA, "v1", ref)
		if err == nil {
			t.Fatalf("push with allowPush off succeeded:\n%s", out)
		}
		t.Logf("push refused:\n%s", tail(out, 5))
		if !strings.Contains(out, "405") && !strings.Contains(out, "UNSUPPORTED") && !strings.Contains(strings.ToLower(out), "allow_push") {
			t.Errorf("skopeo's error names neither 405, UNSUPPORTED nor ALLOW_PUSH:\n%s", out)
		}
		p.waitLogLines(t, mark, "msg=request", connectField(u.PrivHost), "status=405")
		if !strings.Contains(p.LogSince(mark), "ALLOW_PUSH") && !strings.Contains(out, "ALLOW_PUSH") {
			t.Errorf("neither skopeo's output nor the proxy log names ALLOW_PUSH:\n%s", p.LogSince(mark))
		}
		for _, r := range u.Priv.Requests() {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				t.Errorf("upstream saw %s %s with allowPush off", r.Method, r.Path)
			}
		}
		if d := upstreamDigest(t, u.Priv, repo, "v1"); strings.HasPrefix(d, "sha256:") {
			t.Errorf("upstream has %s:v1 = %s after a refused push", repo, d)
		}
	})

	t.Run("allowPush on", func(t *testing.T) {
		p := startProxyWith(t, u, "allowPush: true\nmanifestCache:\n  enabled: true\n  defaultTime: 1h\n")
		s := newViaShim(t, p)
		pullDigest := func() string {
			t.Helper()
			l := s.skopeo(t, ref, "v1")
			return l.top("v1").Digest.String()
		}

		if out, err := s.skopeoPush(t, layoutA, "v1", ref); err != nil {
			t.Fatalf("push with allowPush on: %v\n%s", err, out)
		}
		if d := upstreamDigest(t, u.Priv, repo, "v1"); d != imgA.ManifestDigest.String() {
			t.Fatalf("upstream %s:v1 = %s after the push, want %s", repo, d, imgA.ManifestDigest)
		}
		if d := pullDigest(); d != imgA.ManifestDigest.String() {
			t.Fatalf("pull after the first push: %s, want %s", d, imgA.ManifestDigest)
		}

		// Behind the proxy's back: the cached tag (1h) hides the change.
		hidden := u.Priv.PushImage(t, repo, "v1", testreg.RandomLayer(t, 1024))
		u.resetCounts()
		if d := pullDigest(); d != imgA.ManifestDigest.String() {
			t.Fatalf("pull after an upstream-only change: %s, want the cached %s (hidden %s): is tag caching on?", d, imgA.ManifestDigest, hidden.ManifestDigest)
		}
		requireNoUpstreamGets(t, u.Priv, "pull of a cached tag")

		// Through the proxy: the manifest PUT drops the cached tag.
		mark := p.Mark()
		if out, err := s.skopeoPush(t, layoutB, "v1", ref); err != nil {
			t.Fatalf("second push: %v\n%s", err, out)
		}
		p.waitLogLines(t, mark, "msg=request", "method=PUT ", connectField(u.PrivHost), "/manifests/v1", "status=201")
		if d := upstreamDigest(t, u.Priv, repo, "v1"); d != imgB.ManifestDigest.String() {
			t.Fatalf("upstream %s:v1 = %s after the second push, want %s", repo, d, imgB.ManifestDigest)
		}
		if d := pullDigest(); d != imgB.ManifestDigest.String() {
			t.Errorf("pull through the proxy after pushing new content to the tag: %s, want the new %s (the cached tag was not dropped)", d, imgB.ManifestDigest)
		}

		// Docker Hub: skopeo pushes to registry-1.docker.io; the upload
		// Location must bring it back through the tunnel.
		if out, err := s.skopeoPush(t, layoutA, "v1", "docker.io/library/e2e-pushed:v1"); err != nil {
			t.Fatalf("push to docker.io: %v\n%s", err, out)
		}
		if d := upstreamDigest(t, u.Hub, "library/e2e-pushed", "v1"); d != imgA.ManifestDigest.String() {
			t.Errorf("Docker Hub upstream library/e2e-pushed:v1 = %s after the push, want %s", d, imgA.ManifestDigest)
		}
	})
}
