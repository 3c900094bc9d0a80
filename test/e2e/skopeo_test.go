//go:build e2e

package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// skopeoCopy copies docker://ref into a fresh OCI layout through the
// registries.conf at conf and returns the layout.
func skopeoCopy(t *testing.T, conf, policy, ref, tag string, extra ...string) ociLayout {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	args := append([]string{"--registries-conf", conf, "--policy", policy}, extra...)
	args = append(args, "copy", "--retry-times", "0", "docker://"+ref, "oci:"+dir+":"+tag)
	run(t, nil, "skopeo", args...)
	return ociLayout{t: t, dir: dir}
}

// TestSkopeoMirror: skopeo copies an image through the registries.conf
// mirror; a second copy is served from the cache (no upstream GETs); with
// upstream down a third copy still succeeds from the cache.
func TestSkopeoMirror(t *testing.T) {
	t.Parallel()
	requireTools(t, "skopeo")
	u := startUpstreams(t)
	p := startProxy(t, u)
	img := smallImage(t, u.Hub, "library/e2e-skopeo", "v1")
	conf, policy := registriesConf(t, p, u), policyJSON(t)
	ref := "docker.io/library/e2e-skopeo:v1"

	l := skopeoCopy(t, conf, policy, ref, "v1")
	l.requireImage(l.top("v1").Digest.String(), img)
	if t.Failed() {
		t.FailNow()
	}
	// Fetched once from upstream: one GET per blob.
	if got, want := u.Hub.Count("GET", "blob"), int64(len(imageBlobs(img))); got != want {
		t.Errorf("first copy: upstream saw %d blob GETs, want %d", got, want)
	}

	u.resetCounts()
	mark := p.Mark()
	l = skopeoCopy(t, conf, policy, ref, "v1")
	l.requireImage(l.top("v1").Digest.String(), img)
	requireNoUpstreamGets(t, u.Hub, "second copy")
	// Without tag caching the tag is revalidated with one HEAD per pull.
	if n := u.Hub.Count("HEAD", "manifest"); n > 1 {
		t.Errorf("second copy: upstream saw %d manifest HEADs, want at most 1: %v", n, u.Hub.Requests())
	}
	p.requireBlobHits(t, mark, imageBlobs(img)...)

	// Upstream down: the tag is answered from the cache (stale).
	u.Hub.Stop()
	mark = p.Mark()
	l = skopeoCopy(t, conf, policy, ref, "v1")
	l.requireImage(l.top("v1").Digest.String(), img)
	if lines := p.accessLines(mark, "GET", "/manifests/v1"); len(lines) == 0 || !strings.Contains(lines[0], "cache=STALE") {
		t.Errorf("upstream down: want the tag served with cache=STALE, access lines: %q", lines)
	}
}
