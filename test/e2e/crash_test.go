//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/opencontainers/go-digest"
)

// crashBlobMiB is the size of the blob whose fill is killed (issue 5).
const crashBlobMiB = 256

// TestCrashMidFill (issue 5, crash safety): the proxy binary fills a
// 256 MiB blob from a TLS upstream and is killed with SIGKILL at a chosen
// point of the fill: right after upstream's headers (testreg parks the
// body), and after about 10%, 60% and 99% of the body (a relay in front of
// upstream holds the bytes at that offset, and the kill comes once the
// upload file holds them). After each kill no blob file exists for the
// digest; a proxy restarted on the same cache directory has cleared the
// upload area, refuses the blob while upstream is down (nothing partial is
// served), then fills it again with the right digest, and answers a HEAD
// from the cache.
func TestCrashMidFill(t *testing.T) {
	t.Parallel()
	requireProxy(t)
	reg := testreg.Start(t, testreg.Options{TLS: true})
	const repo = "library/e2e-crash"
	start := time.Now()
	dgst, size := reg.PushBigBlob(t, repo, crashBlobMiB)
	t.Logf("pushed %d MiB blob %s in %s", crashBlobMiB, dgst, time.Since(start).Round(time.Millisecond))
	relay := startRelay(t, reg.Host)

	for _, pt := range []struct {
		name string
		frac float64 // of the body in the upload file at the kill; 0: headers only
	}{
		{"after-headers", 0},
		{"10pct", 0.10},
		{"60pct", 0.60},
		{"99pct", 0.99},
	} {
		t.Run(pt.name, func(t *testing.T) {
			crashFillAt(t, reg, relay, repo, dgst, size, pt.frac)
		})
	}
}

func crashFillAt(t *testing.T, reg *testreg.Registry, relay *gatedRelay, repo string, dgst digest.Digest, size int64, frac float64) {
	began := time.Now()
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "cache")
	cfg := func(addr string) string {
		return fmt.Sprintf(`listen: %q
cacheDir: %q
caDir: %q
logFormat: text
dockerHub: true
registries:
  - host: docker.io
    endpoint: %q
    caFile: %q
`, addr, cacheDir, filepath.Join(dir, "ca"), "https://"+relay.Addr, reg.CAFile)
	}
	blobPath := filepath.Join(cacheDir, "blobs", "sha256", dgst.Encoded()[:2], dgst.Encoded(), "data")
	path := "/v2/docker.io/" + repo + "/blobs/" + dgst.String()

	// First run: start the fill and kill the proxy at the chosen point.
	p1 := startProxyIn(t, dir, "run1", cfg)
	target := int64(frac * float64(size))
	if frac == 0 {
		relay.open()
		reg.SetFault(testreg.FaultBlobDelay)
	} else {
		// TLS records and h2 frames add well under 0.5%: the upload holds
		// at least target bytes, never the whole body.
		limit := target + target/200 + 256<<10
		if limit >= size {
			t.Fatalf("relay limit %d would let the whole %d-byte body through", limit, size)
		}
		relay.hold(limit)
	}
	type result struct {
		status int
		n      int64
		err    error
	}
	res := make(chan result, 1)
	go func() {
		status, n, _, err := fetch(http.MethodGet, p1.URL+path)
		res <- result{status, n, err}
	}()
	if frac == 0 {
		reg.WaitBlobsParked(t, 1)
	}
	upload, got := waitUploadSize(t, cacheDir, target)
	p1.kill(t)
	reg.SetFault(testreg.FaultNone) // lets a parked body go (to a closed connection)
	relay.open()
	t.Logf("killed proxy with %d of %d bytes (%.1f%%) in %s", got, size, 100*float64(got)/float64(size), upload)

	select {
	case r := <-res:
		// The client saw the proxy die: never a clean, complete body.
		if r.err == nil && r.n == size {
			t.Errorf("client of the killed proxy got a complete %d-byte body (status %d) without error", r.n, r.status)
		}
		t.Logf("client of the killed proxy: status %d, %d bytes, err %v", r.status, r.n, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("client of the killed proxy still reading 30s after the kill")
	}

	// No partial blob is visible: nothing under blobs/ at all.
	if _, err := os.Stat(blobPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after SIGKILL at %.0f%%: blob file %s: err %v, want it absent", 100*frac, blobPath, err)
	}
	if files := filesUnder(t, filepath.Join(cacheDir, "blobs")); len(files) != 0 {
		t.Errorf("after SIGKILL: files under blobs/: %v", files)
	}
	if _, err := os.Stat(upload); err != nil {
		t.Errorf("the killed fill's upload %s should still be there before the restart: %v", upload, err)
	}

	// Restart on the same cache directory: the upload area is cleared.
	p2 := startProxyIn(t, dir, "run2", cfg)
	if files := filesUnder(t, filepath.Join(cacheDir, "_uploads")); len(files) != 0 {
		t.Errorf("after restart: upload area not empty: %v", files)
	}
	if lines := p2.logLines(0, "cleared uploads"); len(lines) == 0 {
		t.Errorf("restarted proxy did not log clearing the abandoned upload:\n%s", tail(p2.Log(), 20))
	}

	// Upstream down: the blob is refused, not served from what was left.
	relay.down()
	status, n, _, err := fetch(http.MethodGet, p2.URL+path)
	if status == http.StatusOK {
		t.Errorf("restarted proxy, upstream down: GET blob answered 200 (%d bytes, err %v): a partial blob was served", n, err)
	}
	relay.open()

	// Upstream back: the same pull succeeds and verifies.
	mark := p2.Mark()
	fillStart := time.Now()
	status, n, sum, err := fetch(http.MethodGet, p2.URL+path)
	if err != nil || status != http.StatusOK || n != size || sum != dgst {
		t.Fatalf("restarted proxy: GET blob: status %d, %d bytes, digest %s, err %v; want 200, %d bytes, %s", status, n, sum, err, size, dgst)
	}
	t.Logf("refill through the restarted proxy: %s", time.Since(fillStart).Round(time.Millisecond))
	if lines := p2.accessLines(mark, http.MethodGet, "/blobs/"+dgst.String()); len(lines) != 1 || !strings.Contains(lines[0], "cache=MISS") {
		t.Errorf("refill: want one access line with cache=MISS: %q", lines)
	}
	// The client gets the last byte once the content is verified; the
	// commit (fsync, move into place) follows: wait for it, bounded.
	waitFile(t, blobPath, 20*time.Second)
	if files := filesUnder(t, filepath.Join(cacheDir, "_uploads")); len(files) != 0 {
		t.Errorf("after the refill: upload area not empty: %v", files)
	}

	// And now it is a hit.
	mark = p2.Mark()
	resp, err := plainClient().Head(p2.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != size || resp.Header.Get("X-Cache") != "HIT" {
		t.Errorf("HEAD after the refill: status %d, length %d, X-Cache %q; want 200, %d, HIT", resp.StatusCode, resp.ContentLength, resp.Header.Get("X-Cache"), size)
	}
	if lines := p2.accessLines(mark, http.MethodHead, "/blobs/"+dgst.String()); len(lines) != 1 || !strings.Contains(lines[0], "cache=HIT") {
		t.Errorf("HEAD after the refill: want an access line with cache=HIT: %q", lines)
	}
	t.Logf("kill point %.0f%%: %s", 100*frac, time.Since(began).Round(time.Millisecond))
}

// waitUploadSize waits (bounded) until an upload file under
// <cacheDir>/_uploads holds at least min bytes (exists, for 0), and
// returns its path and size. Polling is measurement here: the relay or
// testreg holds the fill, so the size stops short of the whole blob.
func waitUploadSize(t *testing.T, cacheDir string, min int64) (string, int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var best int64 = -1
	for {
		matches, _ := filepath.Glob(filepath.Join(cacheDir, "_uploads", "*", "data"))
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil {
				if fi.Size() >= min {
					return m, fi.Size()
				}
				best = max(best, fi.Size())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no upload file under %s reached %d bytes in 30s (largest %d, uploads %v)", cacheDir, min, best, matches)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitFile waits until path exists, failing the test after timeout.
func waitFile(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := os.Stat(path)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not there after %s: %v", path, timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// filesUnder lists the regular files under dir (none when it is absent).
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Errorf("walking %s: %v", dir, err)
	}
	return out
}

// plainClient talks to the proxy directly, never through a proxy.
func plainClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{Proxy: nil}}
}

// fetch sends method to url and returns the status, the body's length and
// digest, and the error of the request or of reading the body.
func fetch(method, url string) (int, int64, digest.Digest, error) {
	resp, err := plainClient().Do(mustRequest(method, url))
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	return resp.StatusCode, n, digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil))), err
}

func mustRequest(method, url string) *http.Request {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		panic(err)
	}
	return req
}
