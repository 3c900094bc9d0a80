package storage

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

type indexImpl struct {
	name string
	open func(t *testing.T) Index
}

func indexImpls() []indexImpl {
	return []indexImpl{
		{"mem", func(t *testing.T) Index {
			m := NewMemIndex()
			t.Cleanup(func() { m.Close() })
			return m
		}},
		{"bolt", func(t *testing.T) Index {
			b, err := OpenBoltIndex(filepath.Join(t.TempDir(), "index.db"), BoltOptions{FlushInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		}},
	}
}

// t0 is the fake clock's origin in every lifecycle test.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func dig(name string) digest.Digest { return digest.FromString(name) }

func entry(name string, size int64, access time.Time, repos ...string) IndexEntry {
	return IndexEntry{Digest: dig(name), Size: size, Kind: KindBlob, Added: access, LastAccess: access, Repos: repos}
}

func manifestEntry(name string, size int64, access time.Time, children ...digest.Digest) IndexEntry {
	e := entry(name, size, access)
	e.Kind, e.Children = KindManifest, children
	return e
}

func mustPut(t *testing.T, idx Index, es ...IndexEntry) {
	t.Helper()
	for _, e := range es {
		if err := idx.Put(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
}

func mustGet(t *testing.T, idx Index, d digest.Digest) IndexEntry {
	t.Helper()
	e, ok, err := idx.Get(t.Context(), d)
	if err != nil || !ok {
		t.Fatalf("Get(%s) = %v, %v", d, ok, err)
	}
	return e
}

func walkDigests(t *testing.T, idx Index, order Order) []digest.Digest {
	t.Helper()
	var out []digest.Digest
	err := idx.Walk(t.Context(), order, func(e IndexEntry) (bool, error) {
		out = append(out, e.Digest)
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func digests(names ...string) []digest.Digest {
	out := make([]digest.Digest, len(names))
	for i, n := range names {
		out[i] = dig(n)
	}
	return out
}

func TestIndexPutGetUsage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cases := []struct {
		name      string
		puts      []IndexEntry
		removes   []string
		check     string
		want      IndexEntry
		wantBytes int64
		wantCount int64
	}{
		{
			name:      "single entry",
			puts:      []IndexEntry{entry("a", 10, t0, "docker.io/library/alpine")},
			check:     "a",
			want:      entry("a", 10, t0, "docker.io/library/alpine"),
			wantBytes: 10, wantCount: 1,
		},
		{
			name: "put merges: repos united, earliest added, latest access",
			puts: []IndexEntry{
				entry("a", 10, t0.Add(time.Hour), "quay.io/x/y"),
				{Digest: dig("a"), Size: 10, Kind: KindBlob, Added: t0, LastAccess: t0, Repos: []string{"docker.io/library/alpine", "quay.io/x/y"}},
			},
			check: "a",
			want: IndexEntry{Digest: dig("a"), Size: 10, Kind: KindBlob, Added: t0, LastAccess: t0.Add(time.Hour),
				Repos: []string{"docker.io/library/alpine", "quay.io/x/y"}},
			wantBytes: 10, wantCount: 1,
		},
		{
			name:      "size replaced counts once",
			puts:      []IndexEntry{entry("a", 10, t0), entry("a", 15, t0), entry("b", 5, t0)},
			check:     "a",
			want:      entry("a", 15, t0),
			wantBytes: 20, wantCount: 2,
		},
		{
			name:      "remove lowers usage; removing a missing digest is fine",
			puts:      []IndexEntry{entry("a", 10, t0), entry("b", 5, t0)},
			removes:   []string{"a", "never-stored"},
			check:     "b",
			want:      entry("b", 5, t0),
			wantBytes: 5, wantCount: 1,
		},
	}
	for _, impl := range indexImpls() {
		for _, tc := range cases {
			t.Run(impl.name+"/"+tc.name, func(t *testing.T) {
				idx := impl.open(t)
				mustPut(t, idx, tc.puts...)
				for _, r := range tc.removes {
					if err := idx.Remove(ctx, dig(r)); err != nil {
						t.Fatal(err)
					}
					if _, ok, _ := idx.Get(ctx, dig(r)); ok {
						t.Fatalf("%s still there after Remove", r)
					}
				}
				got := mustGet(t, idx, dig(tc.check))
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Fatalf("Get = %+v\nwant  %+v", got, tc.want)
				}
				b, c, err := idx.Usage(ctx)
				if err != nil || b != tc.wantBytes || c != tc.wantCount {
					t.Fatalf("Usage = %d bytes, %d entries, %v; want %d, %d", b, c, err, tc.wantBytes, tc.wantCount)
				}
			})
		}
	}
}

func TestIndexRejectsBadEntries(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		e    IndexEntry
	}{
		{"bad digest", IndexEntry{Digest: "sha256:nope", Kind: KindBlob}},
		{"unknown kind", IndexEntry{Digest: dig("a"), Kind: "tag"}},
		{"negative size", IndexEntry{Digest: dig("a"), Kind: KindBlob, Size: -1}},
	}
	for _, impl := range indexImpls() {
		for _, tc := range cases {
			t.Run(impl.name+"/"+tc.name, func(t *testing.T) {
				if err := impl.open(t).Put(t.Context(), tc.e); err == nil {
					t.Fatal("Put accepted a bad entry")
				}
			})
		}
	}
}

func TestIndexTouchBatching(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cases := []struct {
		name    string
		touches []struct {
			name string
			at   time.Time
		}
		wantOrderBefore []string // ByLastAccess before Flush
		wantOrderAfter  []string // after Flush
		wantAccessOfA   time.Time
	}{
		{
			name: "touch moves an entry to the back after Flush only",
			touches: []struct {
				name string
				at   time.Time
			}{{"a", t0.Add(10 * time.Hour)}},
			wantOrderBefore: []string{"a", "b", "c"},
			wantOrderAfter:  []string{"b", "c", "a"},
			wantAccessOfA:   t0.Add(10 * time.Hour),
		},
		{
			name: "the latest of several touches wins",
			touches: []struct {
				name string
				at   time.Time
			}{{"a", t0.Add(5 * time.Hour)}, {"a", t0.Add(3 * time.Hour)}, {"b", t0.Add(4 * time.Hour)}},
			wantOrderBefore: []string{"a", "b", "c"},
			wantOrderAfter:  []string{"c", "b", "a"},
			wantAccessOfA:   t0.Add(5 * time.Hour),
		},
		{
			name: "an older touch does not move an entry back; unknown digests are dropped",
			touches: []struct {
				name string
				at   time.Time
			}{{"c", t0.Add(-time.Hour)}, {"unknown", t0.Add(time.Hour)}},
			wantOrderBefore: []string{"a", "b", "c"},
			wantOrderAfter:  []string{"a", "b", "c"},
			wantAccessOfA:   t0,
		},
	}
	for _, impl := range indexImpls() {
		for _, tc := range cases {
			t.Run(impl.name+"/"+tc.name, func(t *testing.T) {
				idx := impl.open(t)
				mustPut(t, idx, entry("a", 1, t0), entry("b", 1, t0.Add(time.Hour)), entry("c", 1, t0.Add(2*time.Hour)))
				for _, tt := range tc.touches {
					idx.Touch(dig(tt.name), tt.at)
				}
				if got := walkDigests(t, idx, ByLastAccess); !slices.Equal(got, digests(tc.wantOrderBefore...)) {
					t.Fatalf("before Flush: order %v, want %v", got, digests(tc.wantOrderBefore...))
				}
				if got := mustGet(t, idx, dig("a")).LastAccess; !got.Equal(t0) {
					t.Fatalf("touch visible before Flush: %v", got)
				}
				if err := idx.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				if got := walkDigests(t, idx, ByLastAccess); !slices.Equal(got, digests(tc.wantOrderAfter...)) {
					t.Fatalf("after Flush: order %v, want %v", got, digests(tc.wantOrderAfter...))
				}
				if got := mustGet(t, idx, dig("a")).LastAccess; !got.Equal(tc.wantAccessOfA) {
					t.Fatalf("LastAccess of a = %v, want %v", got, tc.wantAccessOfA)
				}
				if _, ok, _ := idx.Get(ctx, dig("unknown")); ok {
					t.Fatal("a touch created an entry")
				}
			})
		}
	}
}

func TestIndexWalk(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, impl := range indexImpls() {
		t.Run(impl.name+"/orders and early stop", func(t *testing.T) {
			idx := impl.open(t)
			// Same access time for b and c: ties go by digest.
			es := []IndexEntry{entry("a", 1, t0.Add(3*time.Hour)), entry("b", 1, t0), entry("c", 1, t0), entry("d", 1, t0.Add(time.Hour))}
			mustPut(t, idx, es...)
			byAccess := digests("d")
			if dig("b") < dig("c") {
				byAccess = append(digests("b", "c"), byAccess...)
			} else {
				byAccess = append(digests("c", "b"), byAccess...)
			}
			byAccess = append(byAccess, dig("a"))
			if got := walkDigests(t, idx, ByLastAccess); !slices.Equal(got, byAccess) {
				t.Fatalf("ByLastAccess = %v, want %v", got, byAccess)
			}
			byDigest := digests("a", "b", "c", "d")
			slices.Sort(byDigest)
			if got := walkDigests(t, idx, ByDigest); !slices.Equal(got, byDigest) {
				t.Fatalf("ByDigest = %v, want %v", got, byDigest)
			}
			n := 0
			if err := idx.Walk(ctx, ByLastAccess, func(IndexEntry) (bool, error) { n++; return n < 2, nil }); err != nil || n != 2 {
				t.Fatalf("early stop: visited %d, %v", n, err)
			}
			boom := errors.New("boom")
			if err := idx.Walk(ctx, ByDigest, func(IndexEntry) (bool, error) { return true, boom }); !errors.Is(err, boom) {
				t.Fatalf("fn error = %v", err)
			}
		})
		t.Run(impl.name+"/removing while walking across pages", func(t *testing.T) {
			idx := impl.open(t)
			n := 2*walkPage + 17
			for i := range n {
				mustPut(t, idx, entry(fmt.Sprint(i), 1, t0.Add(time.Duration(i)*time.Second)))
			}
			seen := 0
			var last time.Time
			err := idx.Walk(ctx, ByLastAccess, func(e IndexEntry) (bool, error) {
				if e.LastAccess.Before(last) {
					t.Fatalf("order broken at %v", e.LastAccess)
				}
				last = e.LastAccess
				seen++
				return true, idx.Remove(ctx, e.Digest)
			})
			if err != nil || seen != n {
				t.Fatalf("visited %d of %d: %v", seen, n, err)
			}
			if b, c, _ := idx.Usage(ctx); b != 0 || c != 0 {
				t.Fatalf("Usage after removing all = %d, %d", b, c)
			}
		})
	}
}

func TestIndexReferrersAndRepos(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, impl := range indexImpls() {
		t.Run(impl.name, func(t *testing.T) {
			idx := impl.open(t)
			mustPut(t, idx,
				entry("layer", 100, t0), entry("config", 10, t0), entry("other", 5, t0),
				manifestEntry("m1", 2, t0, dig("layer"), dig("config")),
				manifestEntry("m2", 2, t0, dig("layer")),
				manifestEntry("index", 2, t0, dig("m1")),
			)
			refs := func(name string) []digest.Digest {
				t.Helper()
				r, err := idx.Referrers(ctx, dig(name))
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			sorted := func(ds ...digest.Digest) []digest.Digest { slices.Sort(ds); return ds }
			if got, want := refs("layer"), sorted(dig("m1"), dig("m2")); !slices.Equal(got, want) {
				t.Fatalf("Referrers(layer) = %v, want %v", got, want)
			}
			if got := refs("m1"); !slices.Equal(got, digests("index")) {
				t.Fatalf("Referrers(m1) = %v", got)
			}
			if got := refs("other"); len(got) != 0 {
				t.Fatalf("Referrers(other) = %v", got)
			}
			// New children replace the old ones; a put without children keeps them.
			mustPut(t, idx, manifestEntry("m2", 2, t0, dig("other")))
			mustPut(t, idx, IndexEntry{Digest: dig("m2"), Size: 2, Kind: KindManifest, Added: t0})
			if got := refs("layer"); !slices.Equal(got, digests("m1")) {
				t.Fatalf("after m2 changed: Referrers(layer) = %v", got)
			}
			if got := refs("other"); !slices.Equal(got, digests("m2")) {
				t.Fatalf("after m2 changed: Referrers(other) = %v", got)
			}
			// Removing a manifest removes its edges; removing a child keeps them.
			if err := idx.Remove(ctx, dig("m1")); err != nil {
				t.Fatal(err)
			}
			if err := idx.Remove(ctx, dig("other")); err != nil {
				t.Fatal(err)
			}
			if got := refs("layer"); len(got) != 0 {
				t.Fatalf("after removing m1: Referrers(layer) = %v", got)
			}
			if got := refs("other"); !slices.Equal(got, digests("m2")) {
				t.Fatalf("after removing the child: Referrers(other) = %v", got)
			}
			// AddRepo.
			for _, r := range []string{"quay.io/b/c", "docker.io/library/alpine", "quay.io/b/c"} {
				if err := idx.AddRepo(ctx, dig("layer"), r); err != nil {
					t.Fatal(err)
				}
			}
			if err := idx.AddRepo(ctx, dig("never-stored"), "quay.io/b/c"); err != nil {
				t.Fatal(err)
			}
			if got := mustGet(t, idx, dig("layer")).Repos; !slices.Equal(got, []string{"docker.io/library/alpine", "quay.io/b/c"}) {
				t.Fatalf("Repos = %v", got)
			}
			if _, ok, _ := idx.Get(ctx, dig("never-stored")); ok {
				t.Fatal("AddRepo created an entry")
			}
		})
	}
}

func TestIndexClose(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, impl := range indexImpls() {
		t.Run(impl.name, func(t *testing.T) {
			idx := impl.open(t)
			mustPut(t, idx, entry("a", 1, t0))
			if err := idx.Close(); err != nil {
				t.Fatal(err)
			}
			if err := idx.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if _, _, err := idx.Get(ctx, dig("a")); !errors.Is(err, ErrIndexClosed) {
				t.Fatalf("Get after Close = %v", err)
			}
		})
	}
}
