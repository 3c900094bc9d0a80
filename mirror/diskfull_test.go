package mirror_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// mountTmpfs mounts a small tmpfs (CI runs as root; the test needs it).
func mountTmpfs(t *testing.T, size string, readOnly bool) string {
	t.Helper()
	dir := t.TempDir()
	opts := "size=" + size
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs needs root (CI runs as root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	if err := os.MkdirAll(filepath.Join(dir, "_uploads"), 0o755); err != nil {
		t.Fatal(err)
	}
	if readOnly {
		if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
			t.Fatalf("remount ro: %v: %s", err, out)
		}
	}
	return dir
}

func TestDiskErrorsStillServeUpstreamBytes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		size     string
		readOnly bool
		cause    string
	}{
		{"disk fills mid-blob", "3m", false, "disk full"},
		{"read-only cache", "3m", true, "read-only file system"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := testreg.Start(t, testreg.Options{TLS: true})
			big, bigSize := reg.PushBigBlob(t, "app", 8)
			small := reg.PushImage(t, "app", "v1", testreg.RandomLayer(t, 1000))
			root := mountTmpfs(t, tc.size, false)
			e := newEnv(t, envOptions{backend: "filesystem", root: root}, upstreamSpec{host: "registry.test", reg: reg})
			// A small blob cached while the disk is fine stays a hit.
			smallPath := "/v2/registry.test/app/blobs/" + small.Layers[0].Digest.String()
			e.do("GET", smallPath)
			e.drain() // its spool closed: a read-only remount finds no file open for writing
			if tc.readOnly {
				if out, err := exec.Command("mount", "-o", "remount,ro", root).CombinedOutput(); err != nil {
					t.Fatalf("remount ro: %v: %s", err, out)
				}
			}
			bigPath := "/v2/registry.test/app/blobs/" + big.String()
			for i := range 3 {
				status, sum, n, err := hashGET(e, bigPath)
				if err != nil || status != 200 || sum != big.String() || n != bigSize {
					t.Fatalf("GET %d of the big blob: status %d, %d bytes, err %v", i, status, n, err)
				}
			}
			if _, err := e.store.StatBlob(t.Context(), big); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("the big blob was kept: %v", err)
			}
			if ents, _ := os.ReadDir(filepath.Join(root, "_uploads")); len(ents) != 0 {
				t.Fatalf("%d partial uploads left on the full disk", len(ents))
			}
			resp, body := e.do("GET", smallPath)
			if resp.Header.Get("X-Cache") != "HIT" || sha(body) != small.Layers[0].Digest.String() {
				t.Fatalf("hits must keep working: %q", resp.Header.Get("X-Cache"))
			}
			if n := strings.Count(e.logs.String(), "cache cannot store blobs"); n != 1 {
				t.Fatalf("%d disk error lines, want exactly one per cause", n)
			}
			if !strings.Contains(e.logs.String(), `cause="`+tc.cause+`"`) {
				t.Fatalf("the log does not name the cause %q", tc.cause)
			}
		})
	}
}

// TestDiskFullMidFillSharesOneUpstreamStream: when the disk fills in the
// middle of a fill that 4 clients read, the fill goes on relaying the
// rest of that same upstream download to all of them: each gets the
// verified blob, upstream sends it once, nothing is kept, and the access
// log says cache=PASS for each (the bytes were not cached). Two more
// clients read ranges that end long before the blob does, one within the
// spooled bytes and one within the relayed ones: their last byte waits
// for the verification without holding the others up.
func TestDiskFullMidFillSharesOneUpstreamStream(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	d, size := reg.PushBigBlob(t, "app", 8)
	root := mountTmpfs(t, "3m", false)
	e := newEnv(t, envOptions{backend: "filesystem", root: root}, upstreamSpec{host: "registry.test", reg: reg})
	reg.SetFault(testreg.FaultBlobDelay)
	path := "/v2/registry.test/app/blobs/" + d.String()
	var wg sync.WaitGroup
	ranges := []string{"bytes=0-99", "bytes=4000000-4000099"}
	rangeBodies := make([][]byte, len(ranges))
	errs := make([]error, 4+len(ranges))
	for i, rng := range ranges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, err := e.try("GET", path, "Range", rng)
			if err == nil && (resp.StatusCode != 206 || len(body) != 100) {
				err = fmt.Errorf("%s: status %d, %d bytes", rng, resp.StatusCode, len(body))
			}
			rangeBodies[i], errs[4+i] = body, err
		}()
	}
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, sum, n, err := hashGET(e, path)
			if err == nil && (status != 200 || sum != d.String() || n != size) {
				err = fmt.Errorf("status %d, %d bytes, %s", status, n, sum)
			}
			errs[i] = err
		}()
	}
	reg.WaitBlobsParked(t, 1)
	waitFillClients(t, e, len(errs))
	reg.ReleaseBlobs()
	wg.Wait()
	e.drain()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	if n := served(reg, "GET", "blob"); n != 1 {
		t.Fatalf("upstream was asked for the blob %d times, want 1", n)
	}
	if _, err := e.store.StatBlob(t.Context(), d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the blob was kept: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "_uploads")); len(ents) != 0 {
		t.Fatalf("%d partial uploads left on the full disk", len(ents))
	}
	waitLogCount(t, e, "cache=PASS", len(errs))
	for i, rng := range ranges {
		if want := upstreamRange(t, reg, "app", d.String(), rng); !bytes.Equal(rangeBodies[i], want) {
			t.Fatalf("%s: the bytes differ from upstream's", rng)
		}
	}
}

// upstreamRange reads a range of a blob straight from the test registry.
func upstreamRange(t *testing.T, reg *testreg.Registry, repo, d, rng string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", reg.URL+"/v2/"+repo+"/blobs/"+d, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", rng)
	resp, err := reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 206 {
		t.Fatalf("upstream %s: %d %v", rng, resp.StatusCode, err)
	}
	return body
}

// waitLogCount waits (bounded) until the log holds n lines with s: the
// access line is written once the handler returned, after the client
// read the end of its answer.
func waitLogCount(t *testing.T, e *env, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(e.logs.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d log lines with %s, want %d", strings.Count(e.logs.String(), s), s, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := strings.Count(e.logs.String(), s); got != n {
		t.Fatalf("%d log lines with %s, want %d", got, s, n)
	}
}

// TestLowDiskMidSpoolStopsSpooling: when the disk's free space falls
// under the cache's floor (minFree) while a fill spools, the fill stops
// spooling: its client still gets the verified blob, relayed from the
// same upstream download, nothing is committed, and the log names the
// cause.
func TestLowDiskMidSpoolStopsSpooling(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	d, size := reg.PushBigBlob(t, "app", 4)
	var low atomic.Bool
	free := func() (int64, error) {
		if low.Load() {
			return 10 << 20, nil
		}
		return 1 << 40, nil
	}
	e := newEnv(t, envOptions{backend: "filesystem", lifecycle: true, evict: storage.EvictOptions{MinFree: 100 << 20, FreeSpace: free}},
		upstreamSpec{host: "registry.test", reg: reg})
	reg.SetFault(testreg.FaultStallMidBlob)
	type result struct {
		status int
		sum    string
		n      int64
		err    error
	}
	done := make(chan result, 1)
	go func() {
		s, sum, n, err := hashGET(e, "/v2/registry.test/app/blobs/"+d.String())
		done <- result{s, sum, n, err}
	}()
	reg.WaitBlobsParked(t, 1) // half the blob spooled
	low.Store(true)
	reg.ReleaseBlobs()
	if r := <-done; r.err != nil || r.status != 200 || r.sum != d.String() || r.n != size {
		t.Fatalf("GET: %d %s %d %v", r.status, r.sum, r.n, r.err)
	}
	e.drain()
	if _, err := e.store.StatBlob(t.Context(), d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the blob was committed under the free-space floor: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.root, "_uploads")); len(ents) != 0 {
		t.Fatalf("%d uploads left", len(ents))
	}
	waitLogCount(t, e, "cache=PASS", 1)
	if logs := e.logs.String(); !strings.Contains(logs, `cause="free space under the cache's floor"`) {
		t.Fatalf("the log does not name the cause:\n%s", logs)
	}
	if n := served(reg, "GET", "blob"); n != 1 {
		t.Fatalf("upstream was asked for the blob %d times, want 1", n)
	}
}
