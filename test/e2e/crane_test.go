//go:build e2e

package e2e

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// crane runs crane with the given arguments (plain HTTP to the proxy).
func crane(t *testing.T, args ...string) string {
	t.Helper()
	// An empty Docker config: no credentials from the machine.
	return strings.TrimSpace(run(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, "crane", args...))
}

// cranePullOCI pulls ref into a fresh OCI layout (optionally one platform).
func cranePullOCI(t *testing.T, ref, platform string) ociLayout {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	args := []string{"pull", "--insecure", "--format", "oci"}
	if platform != "" {
		args = append(args, "--platform", platform)
	}
	crane(t, append(args, ref, dir)...)
	return ociLayout{t: t, dir: dir}
}

// requireTarball checks a `crane pull` tarball (docker save format): its
// config and layers are exactly img's and every file hashes right.
func requireTarball(t *testing.T, path string, img testreg.Image) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]string{} // file name → sha256 digest
	var manifestJSON []byte
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Name == "manifest.json" {
			if manifestJSON, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
			continue
		}
		hsh := sha256.New()
		if _, err := io.Copy(hsh, tr); err != nil {
			t.Fatal(err)
		}
		sums[h.Name] = "sha256:" + hex.EncodeToString(hsh.Sum(nil))
	}
	var m []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(manifestJSON, &m); err != nil || len(m) != 1 {
		t.Fatalf("%s: manifest.json %q: %v", path, manifestJSON, err)
	}
	if got := sums[m[0].Config]; got != img.Config.Digest.String() {
		t.Errorf("tarball config %s hashes to %s, want %s", m[0].Config, got, img.Config.Digest)
	}
	var layers []string
	for _, l := range m[0].Layers {
		layers = append(layers, sums[l])
	}
	if want := blobDigests(img.Layers); !equal(layers, want) {
		t.Errorf("tarball layers hash to %v, want %v", layers, want)
	}
}

// TestCrane: crane pulls a single-platform image (tarball) and both
// platforms of a multi-arch index through the mirror path
// /v2/docker.io/…; second pulls cause no upstream blob GETs.
func TestCrane(t *testing.T) {
	t.Parallel()
	requireTools(t, "crane")
	u := startUpstreams(t)
	p := startProxy(t, u)
	img := smallImage(t, u.Hub, "library/e2e-crane", "v1")
	idx := u.Hub.PushIndex(t, "library/e2e-crane", "multi")
	ref := p.Addr + "/docker.io/library/e2e-crane:v1"
	multi := p.Addr + "/docker.io/library/e2e-crane:multi"
	amd64, arm64 := idx.Images[0], idx.Images[1]

	pullAll := func() {
		t.Helper()
		tarball := filepath.Join(t.TempDir(), "out.tar")
		crane(t, "pull", "--insecure", ref, tarball)
		requireTarball(t, tarball, img)
		if got := crane(t, "digest", "--insecure", ref); got != img.ManifestDigest.String() {
			t.Errorf("crane digest %s = %s, want %s", ref, got, img.ManifestDigest)
		}
		if got := crane(t, "digest", "--insecure", multi); got != idx.ManifestDigest.String() {
			t.Errorf("crane digest %s = %s, want the index %s", multi, got, idx.ManifestDigest)
		}
		for _, c := range []struct {
			platform string
			img      testreg.Image
		}{{"linux/arm64", arm64}, {"linux/amd64", amd64}} {
			if got := crane(t, "digest", "--insecure", "--platform", c.platform, multi); got != c.img.ManifestDigest.String() {
				t.Errorf("crane digest --platform %s = %s, want %s", c.platform, got, c.img.ManifestDigest)
			}
			l := cranePullOCI(t, multi, c.platform)
			l.requireImage(l.top("").Digest.String(), c.img)
		}
	}

	pullAll()
	if t.Failed() {
		t.FailNow()
	}
	u.resetCounts()
	mark := p.Mark()
	pullAll()
	requireNoUpstreamGets(t, u.Hub, "second pulls")
	p.requireBlobHits(t, mark, imageBlobs(img)...)
	p.requireBlobHits(t, mark, imageBlobs(amd64)...)
	p.requireBlobHits(t, mark, imageBlobs(arm64)...)
}

// TestCorruptUpstreamBlobNotCached: while upstream serves a layer with one
// byte flipped, the pull fails (no client gets a complete-looking wrong
// blob) and nothing is cached; once upstream is healthy the same pull
// succeeds with the right bytes.
func TestCorruptUpstreamBlobNotCached(t *testing.T) {
	t.Parallel()
	requireTools(t, "crane")
	u := startUpstreams(t)
	p := startProxy(t, u)
	img := smallImage(t, u.Hub, "library/e2e-corrupt", "v1")
	ref := p.Addr + "/docker.io/library/e2e-corrupt:v1"

	u.Hub.SetFault(testreg.FaultWrongBytes)
	dir := filepath.Join(t.TempDir(), "oci")
	out, err := tryRun(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, "crane", "pull", "--insecure", "--format", "oci", ref, dir)
	if err == nil {
		t.Fatalf("crane pull succeeded while upstream served corrupt blobs:\n%s", out)
	}
	t.Logf("pull failed as it should:\n%s", tail(out, 5))

	u.Hub.SetFault(testreg.FaultNone)
	u.resetCounts()
	l := cranePullOCI(t, ref, "")
	l.requireImage(l.top("").Digest.String(), img)
	if n := u.Hub.Count("GET", testreg.KindBlob); n == 0 {
		t.Errorf("healthy pull fetched no blob from upstream: the corrupt bytes were cached?")
	}
}
