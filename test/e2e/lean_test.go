//go:build e2e

package e2e

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLeanBuildRunsFullForCloudDrivers: the container image's entrypoint
// is the lean build (filesystem and inmemory drivers). A configuration
// that names a cloud driver runs the full build beside it, in the same
// process; with no full build beside it, the lean build stops with exit
// code 2 and one line naming the key and the fix.
func TestLeanBuildRunsFullForCloudDrivers(t *testing.T) {
	t.Parallel()
	requireProxy(t)
	dir := t.TempDir()
	// S3 at a loopback port nobody listens on: the full build's s3 driver
	// reports the refused connection, which only it can do.
	// Path-style requests: the bucket must not become a host name to
	// resolve.
	s3 := func(cacheDir string) string {
		return writeFile(t, t.TempDir(), "s3.yml", "cacheDir: "+cacheDir+"\n"+
			"storage:\n  s3:\n    region: us-east-1\n    bucket: crp\n    regionendpoint: http://"+deadLocation+"\n"+
			"    forcepathstyle: true\n    accesskey: a\n    secretkey: s\n")
	}
	cfg := s3(filepath.Join(dir, "cache"))

	_, lean, _ := binCmd(t, proxyBin, "--version")
	_, full, _ := binCmd(t, proxyBin+"-full", "--version")
	if !strings.Contains(lean, "storage drivers: filesystem inmemory)") {
		t.Errorf("lean --version: %q, want only the filesystem and inmemory drivers", lean)
	}
	if !strings.Contains(full, "storage drivers: filesystem inmemory s3 gcs azure)") {
		t.Errorf("full --version: %q, want every driver", full)
	}

	// Beside the full build: du and the server are run by it.
	code, _, stderr := binCmd(t, proxyBin, "du", "--config", cfg)
	if code != 1 || !strings.Contains(stderr, "s3aws") || !strings.Contains(stderr, deadLocation) {
		t.Errorf("lean du with storage.s3, full build beside it: exit %d, stderr %q; want exit 1 and the s3 driver's error about %s", code, stderr, deadLocation)
	}
	// The server starts on an unreachable bucket (it serves and retries):
	// its log names the s3 driver; SIGTERM stops it.
	srv := exec.Command(proxyBin, "--config", cfg, "--listen", "127.0.0.1:0")
	srv.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	pipe, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var seen []string
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "cache storage ready") {
			break
		}
	}
	_ = srv.Process.Signal(syscall.SIGTERM)
	go io.Copy(io.Discard, pipe)
	werr := srv.Wait()
	if len(seen) == 0 || !strings.Contains(seen[len(seen)-1], "cache storage ready") || !strings.Contains(seen[len(seen)-1], "driver=s3") {
		t.Errorf("lean server with storage.s3, full build beside it: log\n%s\nwant \"cache storage ready\" with driver=s3", strings.Join(seen, "\n"))
	}
	if werr != nil {
		t.Errorf("after SIGTERM: %v", werr)
	}

	// Alone: a clear configuration error, nothing created.
	alone := filepath.Join(t.TempDir(), "container-registry-proxy")
	data, err := os.ReadFile(proxyBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(alone, data, 0o755); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(dir, "fresh")
	cfg = s3(fresh)
	for _, args := range [][]string{{"--config", cfg}, {"du", "--config", cfg}, {"gc", "--config", cfg}} {
		code, _, stderr := binCmd(t, alone, args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(stderr, "storage.s3:") || !strings.Contains(stderr, "container-registry-proxy-full") {
			t.Errorf("lean %v alone: exit %d, stderr %q; want exit 2 and one line naming storage.s3 and container-registry-proxy-full", args, code, stderr)
		}
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cache directory: %v; want none created by a refused configuration", err)
	}
}
