package storage

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/service/s3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
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

// s3MinPart is S3's smallest part (5 MiB): the S3 backend's part size
// and multipart copy threshold, so that a blob of a few MiB already goes
// up in several parts and into place by a multipart copy.
const s3MinPart = 5 << 20

// s3Root is the S3 backend's root directory in its bucket.
const s3Root = "/cache"

// s3Backend is the cache on distribution's s3 driver against a real S3
// server (versitygw), in a bucket of the test's own under a root
// directory, as a deployment configures it.
func s3Backend() backend {
	return backend{"s3", func(t *testing.T) *Store {
		srv := s3Server.Get(t)
		params := srv.DriverParams(s3Root)
		params["chunksize"] = s3MinPart
		params["multipartcopythresholdsize"] = s3MinPart
		params["multipartcopychunksize"] = s3MinPart
		d, err := factory.Create(t.Context(), "s3", params)
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(d, Options{SpoolDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		s3Buckets.Store(s, srv)
		t.Cleanup(func() { s3Buckets.Delete(s) })
		return s
	}}
}

// s3Buckets maps the Stores of s3Backend to their server and bucket.
var s3Buckets sync.Map

// allBackends are backends and S3: for what a bucket shared by replicas
// relies on (verified commit, links and records, walks, eviction).
func allBackends() []backend {
	return append(backends(), s3Backend())
}

// pendingMultipart returns the keys of the multipart uploads that the S3
// bucket of s keeps (they cost money, and List never shows them); nil for
// the other backends.
func pendingMultipart(t *testing.T, s *Store) []string {
	t.Helper()
	v, ok := s3Buckets.Load(s)
	if !ok {
		return nil
	}
	srv := v.(*testutil.S3Server)
	resp, err := srv.Client().ListMultipartUploadsWithContext(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(srv.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, u := range resp.Uploads {
		keys = append(keys, aws.StringValue(u.Key))
	}
	return keys
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
	u, err := s.NewUpload(t.Context(), digest.SHA256, UploadOptions{})
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
	sizes := []struct {
		name string
		n    int
	}{
		{"small", 100_000},
		// Two remote driver writes, S3 parts and copied parts, the last
		// ragged.
		{"multipart", s3MinPart + 12345},
	}
	for _, b := range allBackends() {
		for _, size := range sizes {
			t.Run(b.name+"/"+size.name, func(t *testing.T) {
				testUploadCommit(t, b.new(t), randomBytes(t, size.n))
			})
		}
	}
}

// testUploadCommit uploads content in pieces, checks that nothing is
// visible before the commit, and that exactly content is after it.
func testUploadCommit(t *testing.T, s *Store, content []byte) {
	t.Helper()
	ctx := t.Context()
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
	noUploadsLeft(t, s)
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
	for _, b := range allBackends() {
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
				noUploadsLeft(t, s)
			})
		}
	}
}

func TestConcurrentUploadsOfOneDigest(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range allBackends() {
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
					u, err := s.NewUpload(ctx, digest.SHA256, UploadOptions{})
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
			noUploadsLeft(t, s)
		})
	}
}

func TestSmallBlobsLinksTags(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range allBackends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			m := []byte(`{"schemaVersion":2}`)
			d := digest.FromBytes(m)
			if err := s.PutSmallBlob(ctx, d, []byte("tampered")); err == nil {
				t.Fatal("PutSmallBlob accepted content that does not match")
			}
			// Storing it again (a refetch, another replica) is harmless.
			for range 2 {
				if err := s.PutSmallBlob(ctx, d, m); err != nil {
					t.Fatal(err)
				}
			}
			noUploadsLeft(t, s)
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
			testUnlink(t, s, d)
			testTagList(t, s)
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
			if err := s.DeleteTag(ctx, "registry.local_5000", "team/app", "v1.0"); err != nil {
				t.Fatalf("deleting a missing tag: %v", err)
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

// testUnlink: a link stats as present, and once unlinked as missing; a
// second unlink is no error.
func testUnlink(t *testing.T, s *Store, d digest.Digest) {
	t.Helper()
	ctx := t.Context()
	if ok, err := s.HasLink(ctx, "docker.io", "library/alpine", d); !ok || err != nil {
		t.Fatalf("HasLink = %v, %v; want true", ok, err)
	}
	for range 2 {
		if err := s.Unlink(ctx, "docker.io", "library/alpine", d); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := s.HasLink(ctx, "docker.io", "library/alpine", d); ok || err != nil {
		t.Fatalf("HasLink after Unlink = %v, %v; want false", ok, err)
	}
}

// testTagList: a repository's tag list is missing until stored, then
// reads back as stored and is replaced by the next one. It is a blob of
// its own (two repositories with the same tags store two), read back
// within the bound given; once the blob is gone (evicted) the list reads
// as missing. A record of an older version, holding the tags itself,
// still reads.
func testTagList(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	if _, err := s.GetTagList(ctx, "quay.io", "org/app", 1<<20); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tag list before PutTagList: %v", err)
	}
	var last digest.Digest
	for _, tags := range [][]string{{"latest", "v1"}, {"v2"}} {
		at := time.Now().UTC().Truncate(time.Second)
		body, d, err := EncodeTagList("quay.io", "org/app", tags)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutTagList(ctx, "quay.io", "org/app", d, body, at); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetTagList(ctx, "quay.io", "org/app", 1<<20)
		if err != nil || !slices.Equal(got.Tags, tags) || !got.FetchedAt.Equal(at) || got.Digest != d {
			t.Fatalf("GetTagList = %+v, %v; want %v at %v in %s", got, err, tags, at, d)
		}
		if size, err := s.StatBlob(ctx, d); err != nil || size != int64(len(body)) {
			t.Fatalf("the list's blob: %d bytes, %v; want %d", size, err, len(body))
		}
		last = d
	}
	if _, other, _ := EncodeTagList("quay.io", "org/other", []string{"v2"}); other == last {
		t.Fatal("two repositories with the same tags share one blob")
	}
	if _, err := s.GetTagList(ctx, "quay.io", "org/app", 10); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("a list over the bound read back: %v", err)
	}
	if err := s.DeleteBlob(ctx, last); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetTagList(ctx, "quay.io", "org/app", 1<<20); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tag list whose blob was evicted: %v, want ErrNotFound", err)
	}
	old := []byte(`{"tags":["b","a"],"fetchedAt":"2025-01-01T00:00:00Z"}`)
	if err := s.driver.PutContent(ctx, tagListPath("quay.io", "org/app"), old); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetTagList(ctx, "quay.io", "org/app", 1<<20); err != nil || !slices.Equal(got.Tags, []string{"b", "a"}) || got.Digest != "" {
		t.Fatalf("record of an older version: %+v, %v", got, err)
	}
}

func TestPurgeUploads(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range allBackends() {
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
			noUploadsLeft(t, s)
		})
	}
}
