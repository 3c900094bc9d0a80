package mirror_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
