//go:build e2e

// Package e2e drives the proxy binary with real clients (skopeo, podman,
// containerd's ctr, crane) against real in-process upstream registries
// (internal/testreg). Every byte stays on loopback: clients are configured
// so that a failing mirror falls back to an unused loopback port, never to
// a real registry. Run with: go test -tags e2e ./test/e2e/...
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// proxyBin is the proxy binary TestMain builds once for every test: the
// lean build, with the full build beside it, as in the container image.
var proxyBin string

// buildErr is why the build failed; every test then fails with it.
var buildErr error

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "crp-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	// crane is installed into $(go env GOPATH)/bin by install-test-deps.sh.
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		if gp := strings.TrimSpace(string(out)); gp != "" {
			gobin := filepath.Join(strings.Split(gp, string(os.PathListSeparator))[0], "bin")
			os.Setenv("PATH", gobin+string(os.PathListSeparator)+os.Getenv("PATH"))
		}
	}

	proxyBin = filepath.Join(dir, "container-registry-proxy")
	start := time.Now()
	for _, b := range []struct{ out, tags string }{
		{proxyBin, "lean"},
		{proxyBin + "-full", ""},
	} {
		cmd := exec.Command("go", "build", "-tags", b.tags, "-o", b.out, "github.com/gmarcy/container-registry-proxy/cmd/container-registry-proxy")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build -tags %q ./cmd/container-registry-proxy: %w\n%s", b.tags, err, out)
			break
		}
	}
	if buildErr == nil {
		fmt.Fprintf(os.Stderr, "e2e: built the lean and the full proxy in %s\n", time.Since(start).Round(time.Millisecond))
	}
	defer sharedS3.Stop()
	return m.Run()
}

// requireProxy fails the test when the proxy binary could not be built.
func requireProxy(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// requireTools fails (never skips) the test when a client is missing.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s not found in PATH (%v): run scripts/install-test-deps.sh (crane goes to $(go env GOPATH)/bin)", n, err)
		}
	}
}
