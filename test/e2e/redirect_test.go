//go:build e2e

package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestRedirectHitsToBucket: the proxy binary on S3 (versitygw) with
// storage.redirect: true. crane pulls an image twice through the mirror
// path: the first pull fills the cache (every blob 200, MISS); on the
// second, every blob GET is answered 307 (cache=HIT, redirect=true) and
// crane follows it to the bucket, the image is verified byte for byte,
// upstream serves no blob, the redirects count as blob hits without
// served bytes, and no signed URL is logged.
func TestRedirectHitsToBucket(t *testing.T) {
	t.Parallel()
	requireTools(t, "crane")
	e := newClusterEnv(t, false)
	e.redirect = true
	img := smallImage(t, e.up, "team/app", "v1")
	p := e.start(1, "")[0]
	ref := p.Addr + "/registry.test/team/app:v1"
	pull := func(what string) {
		t.Helper()
		tarball := filepath.Join(t.TempDir(), "out.tar")
		crane(t, "pull", "--insecure", ref, tarball)
		requireTarball(t, tarball, img)
		if t.Failed() {
			t.Fatalf("%s: the image pulled is not the one pushed", what)
		}
	}

	mark := p.Mark()
	pull("first pull")
	for _, d := range imageBlobs(img) {
		requireAccessLine(t, p, mark, d, "status=200", "cache=MISS")
	}
	e.up.ResetCounts()
	before := scrape(t, p)
	mark = p.Mark()
	pull("second pull")
	for _, d := range imageBlobs(img) {
		requireAccessLine(t, p, mark, d, "status=307", "cache=HIT", "redirect=true", "bytes=0")
	}
	requireUpstreamBlobGets(t, e.up, 0, "second pull")
	after := scrape(t, p)
	const hits = `crp_requests_total{cache="hit",kind="blob",upstream="registry.test"}`
	const served = `crp_served_bytes_total{source="cache",upstream="registry.test"}`
	if n := after[hits] - before[hits]; n != float64(len(imageBlobs(img))) {
		t.Errorf("%s grew by %v on the second pull, want %d (every blob a redirected hit)", hits, n, len(imageBlobs(img)))
	}
	// Only manifests went through the proxy: far less than the smallest
	// layer (1 MiB).
	if n := after[served] - before[served]; n >= 1<<20 {
		t.Errorf("%s grew by %v on the second pull: the layers' bytes went through the proxy", served, n)
	}
	if log := p.Log(); strings.Contains(log, "X-Amz-Signature") || strings.Contains(log, "X-Amz-Credential") {
		t.Errorf("the proxy logged a signed URL:\n%s", tail(log, 40))
	}
}

// requireAccessLine fails unless, after mark, the proxy's access line of
// a GET of blob d holds every one of parts.
func requireAccessLine(t *testing.T, p *proxy, mark int, d string, parts ...string) {
	t.Helper()
	lines := p.accessLines(mark, http.MethodGet, "/blobs/"+d)
	for _, l := range lines {
		ok := true
		for _, part := range parts {
			ok = ok && strings.Contains(l, " "+part)
		}
		if ok {
			return
		}
	}
	t.Errorf("no access line of GET /blobs/%s with %v after the mark; lines for it:\n%s", d, parts, strings.Join(lines, "\n"))
}
