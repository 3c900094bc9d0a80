//go:build e2e

package e2e

import (
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// TestMultiArchOffline: an index is pulled for two platforms with skopeo
// (--override-arch) and crane (--platform, and the whole index); with
// upstream down, both platforms pull again from the cache.
func TestMultiArchOffline(t *testing.T) {
	t.Parallel()
	requireTools(t, "skopeo", "crane")
	u := startUpstreams(t)
	p := startProxy(t, u)
	idx := u.Hub.PushIndex(t, "library/e2e-multi", "v1",
		testreg.Platform{OS: "linux", Architecture: "amd64"},
		testreg.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"})
	amd64, arm64 := idx.Images[0], idx.Images[1]
	conf, policy := registriesConf(t, p, u), policyJSON(t)
	ref := "docker.io/library/e2e-multi:v1"
	craneRef := p.Addr + "/docker.io/library/e2e-multi:v1"

	pullBoth := func(stage string) {
		t.Helper()
		for _, c := range []struct {
			arch string
			img  testreg.Image
		}{{"arm64", arm64}, {"amd64", amd64}} {
			l := skopeoCopy(t, conf, policy, ref, "v1", "--override-os", "linux", "--override-arch", c.arch)
			l.requireImage(l.top("v1").Digest.String(), c.img)
			l = cranePullOCI(t, craneRef, "linux/"+c.arch)
			l.requireImage(l.top("").Digest.String(), c.img)
		}
		// The whole index, both children included.
		l := cranePullOCI(t, craneRef, "")
		if got := l.top("").Digest.String(); got != idx.ManifestDigest.String() {
			t.Errorf("%s: crane pulled index %s, want %s", stage, got, idx.ManifestDigest)
		}
		if got := l.blob(idx.ManifestDigest.String()); string(got) != string(idx.Manifest) {
			t.Errorf("%s: index bytes differ from the pushed ones", stage)
		}
		for _, img := range idx.Images {
			l.requireImage(img.ManifestDigest.String(), img)
		}
		if t.Failed() {
			t.FailNow()
		}
	}

	pullBoth("upstream up")
	u.Hub.Stop()
	u.resetCounts()
	pullBoth("upstream down")
}
