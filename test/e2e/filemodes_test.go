//go:build e2e

package e2e

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCacheFilesArePrivate (issue 14): started with the common umask 022,
// the proxy still writes its cache readable by its user only — blobs,
// manifests, links, tag records, the index and their directories — so
// that private layers are not world-readable on a shared host; with
// cache.groupReadable its group may read them too, others never.
func TestCacheFilesArePrivate(t *testing.T) {
	requireTools(t, "crane")
	if os.Getenv("E2E_STORAGE") == "s3" {
		t.Skip("file modes are the filesystem driver's; the S3 run checks pulls only")
	}
	old := syscall.Umask(0o022) // what the child inherits; restored after
	t.Cleanup(func() { syscall.Umask(old) })
	for _, tc := range []struct {
		name   string
		extra  string
		forbid fs.FileMode // permission bits no file or directory may have
		want   fs.FileMode // bits every blob file must have
	}{
		{"private", "", 0o077, 0o600},
		{"group-readable", "cache:\n  groupReadable: true\n", 0o027, 0o640},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := startUpstreams(t)
			p := startProxyWith(t, u, tc.extra)
			img := smallImage(t, u.Hub, "library/e2e-modes", "v1")
			crane(t, "pull", "--insecure", p.Addr+"/docker.io/library/e2e-modes:v1", filepath.Join(t.TempDir(), "out.tar"))
			cache := filepath.Join(filepath.Dir(p.LogPath), "cache")
			// The last commits may land just after crane is done.
			want := len(img.Layers) + 2
			for deadline := time.Now().Add(10 * time.Second); countBlobs(t, cache) < want && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
			blobs := 0
			err := filepath.WalkDir(cache, func(path string, d fs.DirEntry, err error) error {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // an upload directory removed meanwhile
				}
				if err != nil {
					return err
				}
				info, err := d.Info()
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				if err != nil {
					return err
				}
				if perm := info.Mode().Perm(); perm&tc.forbid != 0 {
					t.Errorf("%s: mode %v; no bit of %v may be set", strings.TrimPrefix(path, cache), info.Mode(), tc.forbid)
				}
				if !d.IsDir() && filepath.Base(path) == "data" {
					blobs++
					if perm := info.Mode().Perm(); perm&tc.want != tc.want {
						t.Errorf("blob %s: mode %v, want %v", strings.TrimPrefix(path, cache), info.Mode(), tc.want)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if blobs < want {
				t.Fatalf("%d blob files in the cache, want at least %d (config, layers, manifest)", blobs, want)
			}
		})
	}
}

// countBlobs counts the committed blob files under cache (…/blobs/…/data).
func countBlobs(t *testing.T, cache string) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(cache, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "data" && strings.Contains(path, "/blobs/") {
			n++
		}
		return nil // best effort: uploads come and go
	})
	return n
}
