//go:build e2e

package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// TestSharedBlobAcrossUpstreams: one layer exists in both upstreams. After
// an image holding it was pulled from the first (docker.io), pulling an
// image holding it from the second (token auth) does not download it again
// from the second: at most one HEAD confirms that the repository has it.
func TestSharedBlobAcrossUpstreams(t *testing.T) {
	t.Parallel()
	requireTools(t, "crane")
	u := startUpstreams(t)
	p := startProxy(t, u)
	shared := testreg.RandomLayer(t, 2<<20)
	hubImg := u.Hub.PushImage(t, "library/e2e-shared", "v1", shared, testreg.RandomLayer(t, 1<<20))
	privImg := u.Priv.PushImage(t, "team/e2e-shared", "v1", shared, testreg.RandomLayer(t, 1<<20))
	sharedDigest := hubImg.Layers[0].Digest.String()
	if privImg.Layers[0].Digest.String() != sharedDigest {
		t.Fatalf("setup: shared layer digests differ")
	}

	l := cranePullOCI(t, p.Addr+"/docker.io/library/e2e-shared:v1", "")
	l.requireImage(l.top("").Digest.String(), hubImg)
	if t.Failed() {
		t.FailNow()
	}

	u.resetCounts()
	mark := p.Mark()
	l = cranePullOCI(t, p.Addr+"/"+u.PrivNS+"/team/e2e-shared:v1", "")
	l.requireImage(l.top("").Digest.String(), privImg)

	var sharedGets, sharedHeads int
	gets := map[string]int{}
	for _, r := range u.Priv.Requests() {
		if r.Kind != testreg.KindBlob {
			continue
		}
		d := r.Path[strings.LastIndex(r.Path, "/")+1:]
		switch {
		case d == sharedDigest && r.Method == http.MethodGet:
			sharedGets++
		case d == sharedDigest && r.Method == http.MethodHead:
			sharedHeads++
		case r.Method == http.MethodGet:
			gets[d]++
		}
	}
	if sharedGets != 0 {
		t.Errorf("second upstream saw %d GETs of the shared blob %s, want 0: %v", sharedGets, sharedDigest, u.Priv.Requests())
	}
	if sharedHeads > 1 {
		t.Errorf("second upstream saw %d HEADs of the shared blob, want at most 1", sharedHeads)
	}
	// The blobs only the second image has are fetched, once each.
	for _, d := range []string{privImg.Config.Digest.String(), privImg.Layers[1].Digest.String()} {
		if gets[d] != 1 {
			t.Errorf("second upstream saw %d GETs of its own blob %s, want 1", gets[d], d)
		}
	}
	if n := u.Hub.Count("", testreg.KindBlob) + u.Hub.Count("", testreg.KindManifest); n != 0 {
		t.Errorf("first upstream saw %d requests during the second pull, want 0", n)
	}
	p.requireBlobHits(t, mark, sharedDigest)
	if u.Priv.Count("", testreg.KindToken) == 0 {
		t.Errorf("the proxy never asked the second upstream's token server: %v", u.Priv.Requests())
	}
}
