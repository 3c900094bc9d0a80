//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/opencontainers/go-digest"
)

// renameSyscalls are the system calls os.Rename may use (amd64 renameat,
// arm64 renameat2).
const renameSyscalls = "rename,renameat,renameat2"

// TestCrashAroundCommit (issue 14, faults): SIGKILL at the two points of a
// fill that TestCrashMidFill cannot reach by holding bytes: after the
// content was verified (and synced) but before the rename that moves it
// into place, and right after that rename, before the repository link and
// the index entry are written. strace (a test tool; nothing in the binary)
// makes the points deterministic: it follows only the rename whose
// destination is the blob's path (-P) and either fails that system call
// and kills the process as it starts, or holds the call's return while the
// test kills the process.
//
// Before the rename: no blob file; the restarted proxy clears the upload
// and fetches the blob once more, verified. After the rename: the blob file
// is complete and right; the restarted proxy adds it to its index, serves
// it from the cache with no upstream GET, and answers a HEAD as a hit.
func TestCrashAroundCommit(t *testing.T) {
	t.Parallel()
	requireProxy(t)
	requireTools(t, "strace")
	reg := testreg.Start(t, testreg.Options{TLS: true})
	const repo = "library/e2e-commit"
	dgst, size := reg.PushBigBlob(t, repo, 4)
	for _, tc := range []struct {
		name   string
		inject string // strace's -e inject= action on the blob's rename
	}{
		// The rename is not made (error=) and the process is killed.
		{"after verification, before the rename", "error=EIO:signal=SIGKILL"},
		{"right after the rename", "delay_exit=60s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crashAtRename(t, reg, repo, dgst, size, tc.inject)
		})
	}
}

func crashAtRename(t *testing.T, reg *testreg.Registry, repo string, dgst digest.Digest, size int64, inject string) {
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "cache")
	cfg := func(addr string) string {
		return fmt.Sprintf("listen: %q\ncacheDir: %q\ncaDir: %q\nlogFormat: text\nregistries:\n  - host: docker.io\n    endpoint: %q\n    caFile: %q\n",
			addr, cacheDir, filepath.Join(dir, "ca"), reg.URL, reg.CAFile)
	}
	blobPath := filepath.Join(cacheDir, "blobs", "sha256", dgst.Encoded()[:2], dgst.Encoded(), "data")
	path := "/v2/docker.io/" + repo + "/blobs/" + dgst.String()
	killedBefore := strings.Contains(inject, "signal=SIGKILL")

	straceLog := filepath.Join(dir, "strace.log")
	p1 := startTracedProxy(t, dir, cfg, []string{"-o", straceLog, "-e", "trace=" + renameSyscalls, "-P", blobPath,
		"-e", "inject=" + renameSyscalls + ":" + inject})
	reg.ResetCounts()
	res := make(chan fetchResult, 1)
	go func() {
		status, n, sum, err := fetch(http.MethodGet, p1.URL+path)
		res <- fetchResult{status, n, sum, err}
	}()
	if killedBefore {
		// strace kills the proxy as the rename starts.
		select {
		case <-p1.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("the proxy was not killed at the blob's rename within 60s; strace log:\n%s", readFile(straceLog))
		}
		p1.killed = true
	} else {
		// The rename returned; its thread is held: kill the proxy there.
		waitFile(t, blobPath, 60*time.Second)
		killTraced(t, p1)
	}
	trace := readFile(straceLog)
	if !strings.Contains(trace, blobPath) || !strings.Contains(trace, "killed by SIGKILL") {
		t.Fatalf("strace did not see the blob's rename and the kill:\n%s", trace)
	}
	for _, l := range strings.Split(trace, "\n") {
		if strings.Contains(l, "rename") {
			t.Logf("strace: %s", l)
		}
	}
	if r := <-res; r.err == nil && r.status == http.StatusOK && r.n == size && r.sum != dgst {
		t.Errorf("client of the killed proxy got a complete body with the wrong digest %s", r.sum)
	}

	// What the kill left.
	if killedBefore {
		if _, err := os.Stat(blobPath); !os.IsNotExist(err) {
			t.Fatalf("killed before the rename: blob file: %v, want none", err)
		}
		if files := filesUnder(t, filepath.Join(cacheDir, "_uploads")); len(files) != 1 {
			t.Errorf("killed before the rename: want the verified upload left behind, got %v", files)
		}
	} else {
		if got := fileDigest(t, blobPath); got != dgst.String() {
			t.Fatalf("killed after the rename: blob file digest %s, want %s", got, dgst)
		}
		// The kill came before the repository's link was written.
		for _, f := range filesUnder(t, cacheDir) {
			if strings.Contains(f, "_links") && strings.Contains(f, dgst.Encoded()) {
				t.Errorf("killed right after the rename, yet the link is there: %s", f)
			}
		}
	}
	if n := reg.Count(http.MethodGet, testreg.KindBlob); n != 1 {
		t.Errorf("first run: %d upstream blob GETs, want 1", n)
	}

	// Restart on the same cache, untraced.
	p2 := startProxyIn(t, dir, "run2", cfg)
	if files := filesUnder(t, filepath.Join(cacheDir, "_uploads")); len(files) != 0 {
		t.Errorf("after restart: upload area not empty: %v", files)
	}
	reg.ResetCounts()
	mark := p2.Mark()
	status, n, sum, err := fetch(http.MethodGet, p2.URL+path)
	if err != nil || status != http.StatusOK || n != size || sum != dgst {
		t.Fatalf("restarted proxy: GET blob: status %d, %d bytes, %s, %v; want 200, %d bytes, %s", status, n, sum, err, size, dgst)
	}
	wantGets, wantCache := int64(1), "cache=MISS"
	if !killedBefore {
		wantGets, wantCache = 0, "cache=HIT"
		if lines := p2.logLines(0, "cache index repaired", "added=1"); len(lines) != 1 {
			t.Errorf("restart after the rename: want one line about the index repaired (added=1):\n%s", tail(p2.Log(), 20))
		}
	}
	if got := reg.Count(http.MethodGet, testreg.KindBlob); got != wantGets {
		t.Errorf("restarted proxy: %d upstream blob GETs, want %d", got, wantGets)
	}
	if lines := p2.accessLines(mark, http.MethodGet, "/blobs/"+dgst.String()); len(lines) != 1 || !strings.Contains(lines[0], wantCache) {
		t.Errorf("restarted proxy: want one access line with %s: %q", wantCache, lines)
	}
	waitFile(t, blobPath, 20*time.Second)
	resp, err := plainClient().Head(p2.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != size || resp.Header.Get("X-Cache") != "HIT" {
		t.Errorf("HEAD after the restart: status %d, length %d, X-Cache %q; want 200, %d, HIT", resp.StatusCode, resp.ContentLength, resp.Header.Get("X-Cache"), size)
	}
	if got := fileDigest(t, blobPath); got != dgst.String() {
		t.Errorf("committed blob digest %s, want %s", got, dgst)
	}
}

// fetchResult is what fetch returned, passed from a goroutine.
type fetchResult struct {
	status int
	n      int64
	sum    digest.Digest
	err    error
}

// startTracedProxy starts the proxy under strace -f with the given strace
// arguments, on a free port, and waits until it serves. Not
// --seccomp-bpf: a signal strace injects at a seccomp stop may be lost,
// at a syscall-entry stop the kernel delivers it before the call runs.
// The process of the returned proxy is strace's; killTraced kills the
// proxy itself.
func startTracedProxy(t *testing.T, dir string, cfg func(addr string) string, straceArgs []string) *proxy {
	t.Helper()
	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "config-traced.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg(addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "proxy-traced.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	args := append([]string{"-f", "-qq"}, straceArgs...)
	args = append(args, "--", proxyBin, "--config", cfgPath)
	cmd := exec.Command("strace", args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proxy{Addr: addr, URL: "http://" + addr, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.killed {
			killTraced(t, p)
		}
		if t.Failed() {
			t.Logf("traced proxy log (%s):\n%s", logPath, tail(p.Log(), 100))
		}
	})
	if err := p.waitReady(30 * time.Second); err != nil {
		t.Fatalf("traced proxy: %v\n%s", err, tail(p.Log(), 50))
	}
	return p
}

// killTraced sends SIGKILL to the proxy strace runs (strace's child, by
// PID), waits until it is gone, and until strace has exited. strace 6.1
// may hang on a tracee killed while it holds a system call's return
// (delay_exit: "has delayed wait data set already"): it is killed then.
func killTraced(t *testing.T, p *proxy) {
	t.Helper()
	p.killed = true
	pid := tracedChild(p.cmd.Process.Pid)
	if pid == 0 {
		_ = p.cmd.Process.Kill()
	} else if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Errorf("SIGKILL pid %d: %v", pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		_ = p.cmd.Process.Kill() // strace, hung (see above)
		<-p.done
	}
	if pid == 0 {
		return
	}
	deadline := time.Now().Add(15 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("proxy pid %d still running 15s after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processAlive reports whether pid runs (exists and is not a zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(string(b[i+1:]), " Z")
}

// tracedChild returns the first child of pid (strace's tracee), or 0.
func tracedChild(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	c, _ := strconv.Atoi(f[0])
	return c
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}
