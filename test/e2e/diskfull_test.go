//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// TestDiskFullAgainstTheBinary (issue 14, faults): the proxy binary with
// its cache on an 8 MiB tmpfs (CI runs as root; mounting needs it) and
// cache.minFree 0, so that the disk itself runs out:
//
//   - mid-fill: a 16 MiB blob does not fit. Its client still gets every
//     byte, verified; nothing of it stays in the cache (no blob, no
//     upload), and content cached before keeps answering from the cache.
//   - at zero bytes: the file system is filled to the last byte first. A
//     new blob and a new manifest are still served, right, and nothing is
//     left in the upload area; once space is freed the same blob is
//     cached with one upstream GET and answers as a hit.
func TestDiskFullAgainstTheBinary(t *testing.T) {
	t.Parallel()
	requireProxy(t)
	reg := testreg.Start(t, testreg.Options{TLS: true})
	const repo = "library/e2e-full"
	before := reg.PushImage(t, repo, "before", testreg.RandomLayer(t, 10<<10))
	big, bigSize := reg.PushBigBlob(t, repo, 16)
	later := reg.PushImage(t, repo, "later", testreg.RandomLayer(t, 1<<20))

	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "cache")
	mountTmpfs(t, cacheDir, "8m")
	p := startProxyIn(t, dir, "full", func(addr string) string {
		return fmt.Sprintf("listen: %q\ncacheDir: %q\ncaDir: %q\nlogFormat: text\ncache:\n  minFree: 0\nregistries:\n  - host: docker.io\n    endpoint: %q\n    caFile: %q\n",
			addr, cacheDir, filepath.Join(dir, "ca"), reg.URL, reg.CAFile)
	})
	base := p.URL + "/v2/docker.io/" + repo
	layerURL := func(img testreg.Image) string { return base + "/blobs/" + img.Layers[0].Digest.String() }
	blobFile := func(d string) string {
		alg, hex, _ := strings.Cut(d, ":")
		return filepath.Join(cacheDir, "blobs", alg, hex[:2], hex, "data")
	}

	// Cached while there is room.
	getManifest(t, base+"/manifests/before", before)
	if status, _, sum, err := fetch(http.MethodGet, layerURL(before)); status != 200 || sum != before.Layers[0].Digest || err != nil {
		t.Fatalf("caching a layer: %d %s %v", status, sum, err)
	}
	waitFile(t, blobFile(before.Layers[0].Digest.String()), 20*time.Second)
	requireHit := func(what string) {
		t.Helper()
		reg.ResetCounts()
		resp, err := plainClient().Do(mustRequest(http.MethodGet, layerURL(before)))
		if err != nil {
			t.Fatalf("%s: cached layer: %v", what, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "HIT" || reg.Count(http.MethodGet, testreg.KindBlob) != 0 {
			t.Errorf("%s: cached layer: status %d, X-Cache %q, %d upstream blob GETs; want a hit", what, resp.StatusCode, resp.Header.Get("X-Cache"), reg.Count(http.MethodGet, testreg.KindBlob))
		}
	}

	t.Run("mid-fill", func(t *testing.T) {
		for i := range 2 {
			status, n, sum, err := fetch(http.MethodGet, base+"/blobs/"+big.String())
			if err != nil || status != 200 || n != bigSize || sum != big {
				t.Fatalf("GET %d of the 16 MiB blob on an 8 MiB disk: status %d, %d bytes, %s, %v; want the whole blob", i+1, status, n, sum, err)
			}
		}
		if _, err := os.Stat(blobFile(big.String())); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("blob file of the blob that did not fit: %v, want none", err)
		}
		waitNoFiles(t, filepath.Join(cacheDir, "_uploads"))
		requireHit("after the disk filled mid-fill")
	})

	t.Run("zero bytes", func(t *testing.T) {
		filler := fillDisk(t, cacheDir)
		getManifest(t, base+"/manifests/later", later)
		status, n, sum, err := fetch(http.MethodGet, layerURL(later))
		if err != nil || status != 200 || n != later.Layers[0].Size || sum != later.Layers[0].Digest {
			t.Fatalf("GET a new layer on a full disk: status %d, %d bytes, %s, %v; want the layer", status, n, sum, err)
		}
		if _, err := os.Stat(blobFile(later.Layers[0].Digest.String())); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("blob file on a full disk: %v, want none", err)
		}
		waitNoFiles(t, filepath.Join(cacheDir, "_uploads"))
		requireHit("on a full disk")

		// Room again: the same layer is cached with one upstream GET.
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		reg.ResetCounts()
		status, n, sum, err = fetch(http.MethodGet, layerURL(later))
		if err != nil || status != 200 || n != later.Layers[0].Size || sum != later.Layers[0].Digest {
			t.Fatalf("GET the layer once there is room: status %d, %d bytes, %s, %v", status, n, sum, err)
		}
		if got := reg.Count(http.MethodGet, testreg.KindBlob); got != 1 {
			t.Errorf("once there is room: %d upstream blob GETs, want 1", got)
		}
		waitFile(t, blobFile(later.Layers[0].Digest.String()), 20*time.Second)
		if got := fileDigest(t, blobFile(later.Layers[0].Digest.String())); got != later.Layers[0].Digest.String() {
			t.Errorf("cached layer digest %s, want %s", got, later.Layers[0].Digest)
		}
	})
}

// mountTmpfs mounts a tmpfs of size at dir for the life of the test (CI
// runs as root; the test needs it).
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs needs root (CI runs as root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
}

// fillDisk writes a file under dir until the file system has no byte
// left, and returns its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	// Then byte by byte, for what a partial block left.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Bavail != 0 {
		t.Fatalf("disk not full: %d blocks free", st.Bavail)
	}
	return path
}
