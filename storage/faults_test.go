package storage

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/opencontainers/go-digest"
)

// TestCommitKeepsTheDiskErrorCause: a disk error at commit time (the move
// into place) reaches the caller wrapped, so that errors.Is finds ENOSPC,
// EDQUOT or EROFS and the mirror handles it like a disk error at write
// time; nothing is committed and no upload is left.
func TestCommitKeepsTheDiskErrorCause(t *testing.T) {
	t.Parallel()
	for _, cause := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS} {
		t.Run(cause.Error(), func(t *testing.T) {
			t.Parallel()
			d := &testutil.FaultDriver{StorageDriver: inmemory.New(), Match: "/blobs/"}
			d.Fail("Move", cause)
			s, err := New(d, Options{SpoolDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			content := randomBytes(t, 100_000)
			u := writeUpload(t, s, content)
			defer u.Close()
			err = u.Commit(t.Context(), digest.FromBytes(content), int64(len(content)))
			if !errors.Is(err, ErrStorageWrite) || !errors.Is(err, cause) {
				t.Fatalf("Commit: %v; want ErrStorageWrite wrapping %v", err, cause)
			}
			if _, err := s.StatBlob(t.Context(), digest.FromBytes(content)); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the blob was committed: %v", err)
			}
			if ups := listUploads(t, s); len(ups) != 0 {
				t.Fatalf("uploads left: %v", ups)
			}
		})
	}
}

// TestHasLinkReportsStorageErrors: a link that is not there is (false,
// nil); a storage that cannot answer is an error with its cause, not a
// silent "not linked".
func TestHasLinkReportsStorageErrors(t *testing.T) {
	t.Parallel()
	d := &testutil.FaultDriver{StorageDriver: inmemory.New(), Match: "/_links/"}
	s, err := New(d, Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	dg := digest.FromString("layer")
	if ok, err := s.HasLink(ctx, "quay.io", "org/app", dg); ok || err != nil {
		t.Fatalf("missing link: %v, %v; want false, nil", ok, err)
	}
	if err := s.Link(ctx, "quay.io", "org/app", dg, LinkInfo{Size: 5}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.HasLink(ctx, "quay.io", "org/app", dg); !ok || err != nil {
		t.Fatalf("present link: %v, %v; want true, nil", ok, err)
	}
	d.Fail("Stat", syscall.EIO)
	ok, err := s.HasLink(ctx, "quay.io", "org/app", dg)
	if ok || !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "quay.io/org/app") {
		t.Fatalf("unreadable link: %v, %v; want false and an error naming the repository and wrapping EIO", ok, err)
	}
}

// TestProbe: the readiness probe writes and removes its file; when the
// storage refuses the write it says so and leaves nothing behind. Two
// Stores on one storage (replicas sharing a bucket) probe side by side.
func TestProbe(t *testing.T) {
	t.Parallel()
	for _, b := range []backend{backends()[0], s3Backend()} {
		t.Run(b.name, func(t *testing.T) {
			d := &testutil.FaultDriver{StorageDriver: b.new(t).driver, Match: healthRoot}
			s, err := New(d, Options{SpoolDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			other, err := New(d.StorageDriver, Options{SpoolDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			left := func() []string {
				names, err := d.List(ctx, healthRoot)
				if err != nil {
					return nil // the directory is gone: nothing left
				}
				return names
			}
			for _, st := range []*Store{s, other} {
				if err := st.Probe(ctx); err != nil {
					t.Fatalf("probe of a writable storage: %v", err)
				}
			}
			if l := left(); len(l) != 0 {
				t.Fatalf("the probe left %v", l)
			}
			d.Fail("PutContent", syscall.ENOSPC)
			if err := s.Probe(ctx); !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "not writable") {
				t.Fatalf("probe of a full storage: %v", err)
			}
			if l := left(); len(l) != 0 {
				t.Fatalf("a failed probe left %v", l)
			}
		})
	}
}

// TestLockDir: one holder at a time; a second one learns that it is not
// alone; a lock that fails for another reason (a file system without
// locks) is an error naming the cause, never "held by another process".
func TestLockDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, alone, err := LockDir(dir)
	if err != nil || !alone || first == nil {
		t.Fatalf("first lock: %v %v %v", first, alone, err)
	}
	second, alone, err := LockDir(dir)
	if err != nil || alone || second != nil {
		t.Fatalf("second lock while held: %v %v %v; want nil, false, nil", second, alone, err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third, alone, err := LockDir(dir)
	if err != nil || !alone {
		t.Fatalf("lock after release: %v %v", alone, err)
	}
	if err := third.Close(); err != nil {
		t.Fatal(err)
	}
	noLocks := func(int, int) error { return syscall.ENOLCK }
	f, alone, err := lockDir(dir, noLocks)
	if f != nil || alone || !errors.Is(err, syscall.ENOLCK) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("lock on a file system without locks: %v %v %v; want an error wrapping ENOLCK", f, alone, err)
	}
}
