package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/opencontainers/go-digest"
)

// allFiles lists every file the driver holds under root.
func allFiles(t *testing.T, d storagedriver.StorageDriver) []string {
	t.Helper()
	var out []string
	err := d.Walk(context.Background(), "/", func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() {
			out = append(out, fi.Path())
		}
		return nil
	})
	var pnf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &pnf) {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestFailedWritesLeaveNothing: on a full disk every write of the cache
// (tag and tag-list records, links, referrers records, manifests, the
// readiness probe) fails with an error that errors.Is finds ENOSPC in,
// as the filesystem driver reports it (wrapped in its
// storagedriver.Error), and leaves no file behind: not the driver's
// "<path>.<uuid>.tmp", not the manifest's upload directory.
func TestFailedWritesLeaveNothing(t *testing.T) {
	t.Parallel()
	drivers := map[string]func(t *testing.T) (storagedriver.StorageDriver, Options){
		"inmemory": func(t *testing.T) (storagedriver.StorageDriver, Options) {
			return inmemory.New(), Options{SpoolDir: t.TempDir()}
		},
		"filesystem": func(t *testing.T) (storagedriver.StorageDriver, Options) {
			root := t.TempDir()
			return filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 100}), Options{LocalRoot: root}
		},
	}
	for name, mk := range drivers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			base, opts := mk(t)
			fd := &testutil.FaultDriver{StorageDriver: base, Match: "/"}
			s, err := New(fd, opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			before := allFiles(t, base)
			fd.Fail("PutContent", syscall.ENOSPC)
			manifest := []byte(`{"schemaVersion":2}`)
			d := digest.FromBytes(manifest)
			writes := map[string]func() error{
				"tag": func() error { return s.PutTag(ctx, "docker.io", "library/alpine", "3.20", TagRecord{Digest: d}) },
				"tag list": func() error {
					body := []byte(`{"name":"library/alpine","tags":["3.20"]}`)
					return s.PutTagList(ctx, "docker.io", "library/alpine", digest.FromBytes(body), body, time.Now())
				},
				"link": func() error { return s.Link(ctx, "docker.io", "library/alpine", d, LinkInfo{Size: 5}) },
				"referrers": func() error {
					return s.PutReferrers(ctx, "docker.io", "library/alpine", d, ReferrersRecord{Index: []byte(`{"manifests":[]}`)})
				},
				"manifest":    func() error { return s.PutSmallBlob(ctx, d, manifest) },
				"probe":       func() error { return s.Probe(ctx) },
				"probe again": func() error { return s.Probe(ctx) },
			}
			for what, write := range writes {
				if err := write(); !errors.Is(err, syscall.ENOSPC) {
					t.Errorf("%s on a full disk: %v; want an error wrapping ENOSPC", what, err)
				}
			}
			if after := allFiles(t, base); !slices.Equal(after, before) {
				t.Fatalf("failed writes left files: %v (before: %v)", after, before)
			}
		})
	}
}

// TestOutOfDescriptorsIsNamed: a blob that cannot be opened because the
// process has no file descriptor left is not "not found": the error
// matches ErrResourceExhausted and wraps EMFILE.
func TestOutOfDescriptorsIsNamed(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	fd := &testutil.FaultDriver{StorageDriver: filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 100}), Match: "/blobs/"}
	s, err := New(fd, Options{LocalRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("layer")
	d := digest.FromBytes(content)
	if err := s.PutSmallBlob(t.Context(), d, content); err != nil {
		t.Fatal(err)
	}
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE} {
		fd.Fail("Reader", errno)
		_, err := s.OpenBlob(t.Context(), d, 0)
		if !errors.Is(err, ErrResourceExhausted) || !errors.Is(err, errno) || errors.Is(err, ErrNotFound) {
			t.Errorf("OpenBlob out of descriptors (%v): %v; want ErrResourceExhausted wrapping it", errno, err)
		}
	}
	fd.Fail("Reader", syscall.EIO)
	if _, err := s.OpenBlob(t.Context(), d, 0); errors.Is(err, ErrResourceExhausted) || !errors.Is(err, syscall.EIO) {
		t.Errorf("OpenBlob with EIO: %v; want EIO, not ErrResourceExhausted", err)
	}
}

// TestPurgeTemp: the temporary files that a crash left (a driver write
// killed before its rename, a readiness probe killed before its removal)
// are removed at start when older than the bound; real content, files of
// other names and young temporary files stay.
func TestPurgeTemp(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, err := New(filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 100}), Options{LocalRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	manifest := []byte(`{"schemaVersion":2}`)
	d := digest.FromBytes(manifest)
	if err := s.PutSmallBlob(ctx, d, manifest); err != nil {
		t.Fatal(err)
	}
	if err := s.Link(ctx, "docker.io", "library/alpine", d, LinkInfo{Size: int64(len(manifest))}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(ctx, "docker.io", "library/alpine", "3.20", TagRecord{Digest: d}); err != nil {
		t.Fatal(err)
	}
	uuid := "0f8fad5b-d9cb-469f-a165-70867728950e"
	repo := filepath.Join(root, "repositories", "docker.io", "library", "alpine")
	stale := []string{
		filepath.Join(repo, "_links", "sha256", d.Encoded()+"."+uuid+".tmp"),
		filepath.Join(repo, "_tags", "3.20."+uuid+".tmp"),
		filepath.Join(repo, "_taglist."+uuid+".tmp"),
		filepath.Join(root, "_health", "probe-0123abcd"),
		filepath.Join(root, "_health", "probe-0123abcd."+uuid+".tmp"),
	}
	young := filepath.Join(repo, "_tags", "latest."+uuid+".tmp")
	kept := []string{
		young,
		filepath.Join(repo, "_tags", "v1.tmp"), // a tag named v1.tmp
		filepath.Join(repo, "_tags", "v1."+uuid),
	}
	old := time.Now().Add(-time.Hour)
	for _, p := range append(slices.Clone(stale), kept...) {
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if p != young {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := s.PurgeTemp(ctx, time.Minute)
	if err != nil || n != len(stale) {
		t.Fatalf("PurgeTemp: %d, %v; want %d removed", n, err, len(stale))
	}
	for _, p := range stale {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
	for _, p := range kept {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	if b, err := s.ReadSmallBlob(ctx, d, 1<<20); err != nil || string(b) != string(manifest) {
		t.Fatalf("the manifest: %q, %v", b, err)
	}
	if ok, err := s.HasLink(ctx, "docker.io", "library/alpine", d); !ok || err != nil {
		t.Fatalf("the link: %v, %v", ok, err)
	}
	if rec, err := s.GetTag(ctx, "docker.io", "library/alpine", "3.20"); err != nil || rec.Digest != d {
		t.Fatalf("the tag record: %v, %v", rec, err)
	}
	if n, err := s.PurgeTemp(ctx, 0); err != nil || n != 1 {
		t.Fatalf("PurgeTemp(0): %d, %v; want the young one removed too", n, err)
	}
}

// TestPurgeTempSpool: a spool file that a crash left before it was
// unlinked (remote drivers) is removed at start.
func TestPurgeTempSpool(t *testing.T) {
	t.Parallel()
	spool := t.TempDir()
	s, err := New(inmemory.New(), Options{SpoolDir: spool})
	if err != nil {
		t.Fatal(err)
	}
	left := filepath.Join(spool, spoolPrefix+"12345")
	other := filepath.Join(spool, "notes.txt")
	for _, p := range []string{left, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.PurgeTemp(t.Context(), 0); err != nil || n != 1 {
		t.Fatalf("PurgeTemp: %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the spool file is still there: %v", err)
	}
	if _, err := os.Stat(other); err != nil || !strings.HasSuffix(other, ".txt") {
		t.Errorf("another file was removed: %v", err)
	}
}
