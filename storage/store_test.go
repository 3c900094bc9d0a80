package storage

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
)

type backend struct {
	name string
	new  func(t *testing.T) *Store
}

func backends() []backend {
	return []backend{
		{"inmemory", func(t *testing.T) *Store {
			s, err := New(inmemory.New(), Options{SpoolDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"filesystem", func(t *testing.T) *Store {
			root := t.TempDir()
			d := filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 100})
			s, err := New(d, Options{LocalRoot: root})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeUpload(t *testing.T, s *Store, content []byte) *Upload {
	t.Helper()
	u, err := s.NewUpload(t.Context(), digest.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	// Write in pieces, as a fill does.
	for off := 0; off < len(content); off += 1000 {
		end := min(off+1000, len(content))
		if _, err := u.Write(content[off:end]); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

func listUploads(t *testing.T, s *Store) []string {
	t.Helper()
	ids, err := s.driver.List(t.Context(), uploadsRoot)
	var pnf storagedriver.PathNotFoundError
	if errors.As(err, &pnf) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestUploadCommit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			content := randomBytes(t, 100_000)
			d := digest.FromBytes(content)
			u := writeUpload(t, s, content)
			// The spool is readable before the commit.
			got := make([]byte, 10)
			if _, err := u.ReadAt(got, 500); err != nil || !bytes.Equal(got, content[500:510]) {
				t.Fatalf("ReadAt before commit: %v", err)
			}
			if _, err := s.StatBlob(ctx, d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("blob visible before commit: %v", err)
			}
			if err := u.Commit(ctx, d, int64(len(content))); err != nil {
				t.Fatal(err)
			}
			u.Close()
			size, err := s.StatBlob(ctx, d)
			if err != nil || size != int64(len(content)) {
				t.Fatalf("StatBlob = %d, %v", size, err)
			}
			rc, err := s.OpenBlob(ctx, d, 0)
			if err != nil {
				t.Fatal(err)
			}
			all, _ := io.ReadAll(rc)
			rc.Close()
			if !bytes.Equal(all, content) {
				t.Fatal("committed bytes differ")
			}
			if ids := listUploads(t, s); len(ids) != 0 {
				t.Fatalf("uploads left behind: %v", ids)
			}
		})
	}
}

func TestUploadMismatchLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	content := []byte("the real content of the blob")
	want := digest.FromBytes(content)
	cases := []struct {
		name     string
		written  []byte
		wantSize int64
	}{
		{"wrong bytes", []byte("the fake content of the blob"), int64(len(content))},
		{"truncated", content[:10], int64(len(content))},
		{"size mismatch with right prefix", content[:10], -1},
	}
	for _, b := range backends() {
		for _, tc := range cases {
			t.Run(b.name+"/"+tc.name, func(t *testing.T) {
				s := b.new(t)
				u := writeUpload(t, s, tc.written)
				err := u.Commit(ctx, want, tc.wantSize)
				u.Close()
				var ve *VerifyError
				if !errors.As(err, &ve) {
					t.Fatalf("Commit error = %v, want *VerifyError", err)
				}
				if _, err := s.StatBlob(ctx, want); !errors.Is(err, ErrNotFound) {
					t.Fatalf("blob committed despite mismatch: %v", err)
				}
				if ids := listUploads(t, s); len(ids) != 0 {
					t.Fatalf("upload left behind: %v", ids)
				}
			})
		}
	}
}

func TestConcurrentUploadsOfOneDigest(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			content := randomBytes(t, 300_000)
			d := digest.FromBytes(content)
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					u, err := s.NewUpload(ctx, digest.SHA256)
					if err != nil {
						errs[i] = err
						return
					}
					defer u.Close()
					if _, err := u.Write(content); err != nil {
						errs[i] = err
						return
					}
					errs[i] = u.Commit(ctx, d, int64(len(content)))
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("upload %d: %v", i, err)
				}
			}
			rc, err := s.OpenBlob(ctx, d, 0)
			if err != nil {
				t.Fatal(err)
			}
			all, _ := io.ReadAll(rc)
			rc.Close()
			if digest.FromBytes(all) != d {
				t.Fatal("blob does not verify after concurrent commits")
			}
		})
	}
}

func TestSmallBlobsLinksTags(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			m := []byte(`{"schemaVersion":2}`)
			d := digest.FromBytes(m)
			if err := s.PutSmallBlob(ctx, d, []byte("tampered")); err == nil {
				t.Fatal("PutSmallBlob accepted content that does not match")
			}
			if err := s.PutSmallBlob(ctx, d, m); err != nil {
				t.Fatal(err)
			}
			got, err := s.ReadSmallBlob(ctx, d, 1<<20)
			if err != nil || !bytes.Equal(got, m) {
				t.Fatalf("ReadSmallBlob = %q, %v", got, err)
			}
			if _, err := s.ReadSmallBlob(ctx, d, 3); err == nil {
				t.Fatal("bound not enforced")
			}
			if _, err := s.Linked(ctx, "docker.io", "library/alpine", d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Linked before Link: %v", err)
			}
			li := LinkInfo{MediaType: "application/vnd.oci.image.manifest.v1+json", Size: int64(len(m)), LinkedAt: time.Now().UTC()}
			if err := s.Link(ctx, "docker.io", "library/alpine", d, li); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Linked(ctx, "docker.io", "library/alpine", d); err != nil || got.MediaType != li.MediaType {
				t.Fatalf("Linked = %+v, %v", got, err)
			}
			if _, err := s.Linked(ctx, "quay.io", "library/alpine", d); !errors.Is(err, ErrNotFound) {
				t.Fatal("link leaked to another upstream")
			}
			rec := TagRecord{Digest: d, MediaType: li.MediaType, Size: li.Size, FetchedAt: time.Now().UTC()}
			if err := s.PutTag(ctx, "registry.local_5000", "team/app", "v1.0", rec); err != nil {
				t.Fatal(err)
			}
			if got, err := s.GetTag(ctx, "registry.local_5000", "team/app", "v1.0"); err != nil || got.Digest != d {
				t.Fatalf("GetTag = %+v, %v", got, err)
			}
			if err := s.DeleteTag(ctx, "registry.local_5000", "team/app", "v1.0"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetTag(ctx, "registry.local_5000", "team/app", "v1.0"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("tag after delete: %v", err)
			}
			// A damaged record reads as missing.
			if err := s.driver.PutContent(ctx, tagPath("docker.io", "x/y", "t"), []byte(`{"dig`)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetTag(ctx, "docker.io", "x/y", "t"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("damaged record: %v", err)
			}
		})
	}
}

func TestPurgeUploads(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			u := writeUpload(t, s, []byte("abandoned by a crash"))
			// The process lives on in a test: release the spool and its hasher.
			defer u.Close()
			if !u.inPlace {
				// Remote drivers only show an upload once written through.
				if err := u.w.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := s.PurgeUploads(ctx, time.Hour); err != nil || n != 0 {
				t.Fatalf("young upload purged: %d, %v", n, err)
			}
			if n, err := s.PurgeUploads(ctx, 0); err != nil || n != 1 {
				t.Fatalf("PurgeUploads = %d, %v", n, err)
			}
			if ids := listUploads(t, s); len(ids) != 0 {
				t.Fatalf("uploads left: %v", ids)
			}
		})
	}
}
