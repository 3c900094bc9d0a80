package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
)

// FuzzIndexEntry: whatever an index file (or another replica) holds for
// an entry, the index stores it only when Validate accepts it, and then
// as its normalized form: idempotent, the same after a JSON round trip,
// what Get returns, and with an access order that puts LastAccess no
// earlier than Added (the eviction order compares those keys).
func FuzzIndexEntry(f *testing.F) {
	d := digest.FromString("x").String()
	for _, s := range []string{
		`{"digest":"` + d + `","size":3,"kind":"blob","added":"2026-01-01T00:00:00Z","lastAccess":"2026-01-02T00:00:00Z"}`,
		`{"digest":"` + d + `","size":3,"kind":"manifest","repos":["docker.io/library/a","docker.io/library/a"],"children":["` + d + `"]}`,
		`{"digest":"` + d + `","size":-1,"kind":"blob"}`, `{"digest":"sha256:x","kind":"blob"}`, `{"digest":"` + d + `","kind":"layer"}`,
		`{"digest":"` + d + `","kind":"blob","added":"2026-01-02T00:00:00+05:00","lastAccess":"2026-01-01T00:00:00-05:00"}`,
		`{"digest":"` + d + `","kind":"blob","added":"1600-01-01T00:00:00Z","lastAccess":"1969-12-31T23:59:59.999999999Z"}`,
		// Found by this target: a time after 2262 overflowed UnixNano in
		// the access order, sorting it before everything.
		`{"digest":"` + d + `","kind":"blob","added":"2026-01-01T00:00:00Z","lastAccess":"2600-01-01T00:00:00Z"}`,
		`{"digest":"` + d + `","kind":"blob","added":"9999-12-31T23:59:59Z"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var e IndexEntry
		if json.Unmarshal(data, &e) != nil {
			return
		}
		idx := NewMemIndex()
		putErr := idx.Put(t.Context(), e)
		if (putErr != nil) != (e.Validate() != nil) {
			t.Fatalf("Put: %v, Validate: %v", putErr, e.Validate())
		}
		if putErr != nil {
			return
		}
		n := e.Normalized()
		if !sameEntry(n, n.Normalized()) {
			t.Fatalf("Normalized is not idempotent: %+v", n)
		}
		b, err := json.Marshal(n)
		if err != nil {
			return // a time json cannot write (year past 9999): never read from a file
		}
		var again IndexEntry
		if err := json.Unmarshal(b, &again); err != nil || !sameEntry(n, again) || again.Validate() != nil {
			t.Fatalf("%+v written as %s reads back as %+v (%v)", n, b, again, err)
		}
		got, ok, err := idx.Get(t.Context(), e.Digest)
		if err != nil || !ok || !sameEntry(got, n) {
			t.Fatalf("Get = %+v, %v, %v; want %+v", got, ok, err, n)
		}
		if accessNanos(n.LastAccess) < accessNanos(n.Added) {
			t.Fatalf("access order: LastAccess %v (%d) before Added %v (%d)", n.LastAccess, accessNanos(n.LastAccess), n.Added, accessNanos(n.Added))
		}
	})
}

func sameEntry(a, b IndexEntry) bool {
	return a.Digest == b.Digest && a.Size == b.Size && a.Kind == b.Kind && a.Added.Equal(b.Added) &&
		a.LastAccess.Equal(b.LastAccess) && slices.Equal(a.Repos, b.Repos) && slices.Equal(a.Children, b.Children)
}

// FuzzTagRecord: whatever a tag record file holds (cut short by a crash,
// damaged, written by an older version), reading it yields a record whose
// digest is valid and that is written and read back unchanged, or a miss
// (ErrNotFound: the tag is fetched again), never an error that fails the
// pull.
func FuzzTagRecord(f *testing.F) {
	d := digest.FromString("m").String()
	for _, s := range []string{
		`{"digest":"` + d + `","mediaType":"application/vnd.oci.image.manifest.v1+json","size":7,"fetchedAt":"2026-01-01T00:00:00Z"}`,
		`{"digest":"` + d[:20], `{"digest":"sha256:abc"}`, `{"digest":"md5:` + strings.Repeat("0", 32) + `"}`, ``, `null`, `[]`,
		`{"digest":"` + d + `"} {"digest":"x"}`, `{"digest":"` + d + `","size":-5,"fetchedAt":"0001-01-01T00:00:00Z"}`,
		`{"digest":"sha384:` + strings.Repeat("0", 96) + `"}`,
	} {
		f.Add([]byte(s))
	}
	store, err := New(inmemory.New(), Options{SpoolDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := t.Context()
		if err := store.driver.PutContent(ctx, tagPath("docker.io", "library/a", "latest"), data); err != nil {
			t.Fatal(err)
		}
		r, err := store.GetTag(ctx, "docker.io", "library/a", "latest")
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("record %q: %v, not a miss", data, err)
			}
			return
		}
		if r.Digest.Validate() != nil {
			t.Fatalf("record %q: digest %q", data, r.Digest)
		}
		if err := store.PutTag(ctx, "docker.io", "library/a", "latest", r); err != nil {
			return // a time json cannot write (year past 9999)
		}
		again, err := store.GetTag(ctx, "docker.io", "library/a", "latest")
		if err != nil || again.Digest != r.Digest || again.MediaType != r.MediaType || again.Size != r.Size || !again.FetchedAt.Equal(r.FetchedAt) {
			t.Fatalf("record %+v written and read back as %+v (%v)", r, again, err)
		}
	})
}

// FuzzManifestChildren: whatever a stored manifest holds, the children the
// index records are valid digests, sorted, unique, each named in the
// manifest, and no more than it could name.
func FuzzManifestChildren(f *testing.F) {
	d1, d2 := digest.FromString("a").String(), digest.FromString("b").String()
	for _, s := range []string{
		`{"schemaVersion":2,"config":{"digest":"` + d1 + `"},"layers":[{"digest":"` + d2 + `"},{"digest":"` + d2 + `"}]}`,
		`{"schemaVersion":2,"manifests":[{"digest":"` + d2 + `"},{"digest":"bad"}]}`, `{"schemaVersion":2,"manifests":null}`,
		`{"schemaVersion":1,"fsLayers":[{"blobSum":"` + d1 + `"}]}`, `{"schemaVersion":2}`, `{"architecture":"amd64","os":"linux"}`,
		`{"schemaVersion":2,"config":null,"layers":[{"digest":"` + d1 + `"}]}`, `{"schemaVersion":"2"}`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		children, ok := ManifestChildren(body)
		if !ok {
			if children != nil {
				t.Fatalf("not a manifest, yet children %v", children)
			}
			return
		}
		if !slices.IsSorted(children) || len(slices.Compact(slices.Clone(children))) != len(children) {
			t.Fatalf("children %v: not sorted and unique", children)
		}
		if len(children) > len(body)/(len(`{"digest":""}`)+71) {
			t.Fatalf("%d children from %d bytes", len(children), len(body))
		}
		for _, c := range children {
			if c.Validate() != nil || !bytes.Contains(body, []byte(c.Encoded())) {
				t.Fatalf("child %q of %q", c, body)
			}
		}
	})
}

// FuzzBlobPath: a path met while walking the storage is taken for a blob
// exactly when it is the path BlobPath writes for that digest.
func FuzzBlobPath(f *testing.F) {
	d := digest.FromString("x")
	for _, s := range []string{
		BlobPath(d), BlobPath(digest.SHA512.FromString("x")), "/blobs/sha256/ab/abc/data", "/blobs/sha256/" + d.Encoded()[:2] + "/" + d.Encoded() + "/data/x",
		"/blobs/sha256/../" + d.Encoded() + "/data", "/blobs/SHA256/" + d.Encoded()[:2] + "/" + d.Encoded() + "/data", "/_uploads/x/data",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, ok := blobPathDigest(p)
		if !ok {
			parts := strings.Split(strings.TrimPrefix(p, "/blobs/"), "/")
			if len(parts) == 4 {
				if pd, err := digest.Parse(parts[0] + ":" + parts[2]); err == nil && BlobPath(pd) == p {
					t.Fatalf("blobPathDigest(%q) refused the path of %s", p, pd)
				}
			}
			return
		}
		if got.Validate() != nil || BlobPath(got) != p {
			t.Fatalf("blobPathDigest(%q) = %s, whose path is %s", p, got, BlobPath(got))
		}
	})
}
