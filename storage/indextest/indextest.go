// Package indextest is the contract suite of storage.Index (the contract
// is documented on the interface): every implementation runs the same
// tests, BoltIndex and MemIndex from storage's tests, the Redis index from
// cluster's. It is test infrastructure and stays out of every binary.
package indextest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// Open returns a new, empty index for one test; it arranges its own
// cleanup (t.Cleanup). It is called from parallel subtests.
type Open func(t *testing.T) storage.Index

// Run runs the contract suite on the indexes open returns, each subtest
// on a fresh one, in parallel.
func Run(t *testing.T, open Open) {
	t.Helper()
	t.Run("PutGetUsage", func(t *testing.T) { t.Parallel(); putGetUsage(t, open) })
	t.Run("RejectsBadEntries", func(t *testing.T) { t.Parallel(); rejectsBadEntries(t, open) })
	t.Run("TouchBatching", func(t *testing.T) { t.Parallel(); touchBatching(t, open) })
	t.Run("Walk", func(t *testing.T) { t.Parallel(); walk(t, open) })
	t.Run("ReferrersAndRepos", func(t *testing.T) { t.Parallel(); referrersAndRepos(t, open) })
	t.Run("Close", func(t *testing.T) { t.Parallel(); closeIndex(t, open) })
}

// T0 is the time the suite's entries are stored at.
var T0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// WalkEntries is how many entries the walk across pages stores: several
// pages of BoltIndex and of the Redis index (256 entries each by default).
const WalkEntries = 2*256 + 17

// Dig is the digest of name.
func Dig(name string) digest.Digest { return digest.FromString(name) }

// Digests are the digests of names.
func Digests(names ...string) []digest.Digest {
	out := make([]digest.Digest, len(names))
	for i, n := range names {
		out[i] = Dig(n)
	}
	return out
}

// Entry is a blob entry stored and last read at access.
func Entry(name string, size int64, access time.Time, repos ...string) storage.IndexEntry {
	return storage.IndexEntry{Digest: Dig(name), Size: size, Kind: storage.KindBlob, Added: access, LastAccess: access, Repos: repos}
}

// ManifestEntry is a manifest entry listing children.
func ManifestEntry(name string, size int64, access time.Time, children ...digest.Digest) storage.IndexEntry {
	e := Entry(name, size, access)
	e.Kind, e.Children = storage.KindManifest, children
	return e
}

// MustPut puts es or fails the test.
func MustPut(t *testing.T, idx storage.Index, es ...storage.IndexEntry) {
	t.Helper()
	for _, e := range es {
		if err := idx.Put(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// MustGet returns the entry of d or fails the test.
func MustGet(t *testing.T, idx storage.Index, d digest.Digest) storage.IndexEntry {
	t.Helper()
	e, ok, err := idx.Get(t.Context(), d)
	if err != nil || !ok {
		t.Fatalf("Get(%s) = %v, %v", d, ok, err)
	}
	return e
}

// MustMiss checks that d has no entry.
func MustMiss(t *testing.T, idx storage.Index, d digest.Digest, why string) {
	t.Helper()
	if _, ok, err := idx.Get(t.Context(), d); err != nil || ok {
		t.Fatalf("Get(%s) = %v, %v: %s", d, ok, err, why)
	}
}

// WalkDigests returns the digests a walk in order visits.
func WalkDigests(t *testing.T, idx storage.Index, order storage.Order) []digest.Digest {
	t.Helper()
	var out []digest.Digest
	err := idx.Walk(t.Context(), order, func(e storage.IndexEntry) (bool, error) {
		out = append(out, e.Digest)
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// MustUsage checks the index's totals.
func MustUsage(t *testing.T, idx storage.Index, wantBytes, wantCount int64) {
	t.Helper()
	b, c, err := idx.Usage(t.Context())
	if err != nil || b != wantBytes || c != wantCount {
		t.Fatalf("Usage = %d bytes, %d entries, %v; want %d, %d", b, c, err, wantBytes, wantCount)
	}
}

// putCases are the Put, Get, Remove and Usage cases.
var putCases = []struct {
	name      string
	puts      []storage.IndexEntry
	removes   []string
	check     string
	want      storage.IndexEntry
	wantBytes int64
	wantCount int64
}{
	{
		name:      "single entry",
		puts:      []storage.IndexEntry{Entry("a", 10, T0, "docker.io/library/alpine")},
		check:     "a",
		want:      Entry("a", 10, T0, "docker.io/library/alpine"),
		wantBytes: 10, wantCount: 1,
	},
	{
		name: "put merges: repos united, earliest added, latest access",
		puts: []storage.IndexEntry{
			Entry("a", 10, T0.Add(time.Hour), "quay.io/x/y"),
			{Digest: Dig("a"), Size: 10, Kind: storage.KindBlob, Added: T0, LastAccess: T0, Repos: []string{"docker.io/library/alpine", "quay.io/x/y"}},
		},
		check: "a",
		want: storage.IndexEntry{Digest: Dig("a"), Size: 10, Kind: storage.KindBlob, Added: T0, LastAccess: T0.Add(time.Hour),
			Repos: []string{"docker.io/library/alpine", "quay.io/x/y"}},
		wantBytes: 10, wantCount: 1,
	},
	{
		name: "put merges: an unset Added keeps the stored one; times keep their nanoseconds",
		puts: []storage.IndexEntry{
			Entry("a", 10, T0.Add(time.Nanosecond)),
			{Digest: Dig("a"), Size: 10, Kind: storage.KindBlob, LastAccess: T0.Add(7 * time.Nanosecond)},
		},
		check: "a",
		want: storage.IndexEntry{Digest: Dig("a"), Size: 10, Kind: storage.KindBlob,
			Added: T0.Add(time.Nanosecond), LastAccess: T0.Add(7 * time.Nanosecond)},
		wantBytes: 10, wantCount: 1,
	},
	{
		name:      "size replaced counts once",
		puts:      []storage.IndexEntry{Entry("a", 10, T0), Entry("a", 15, T0), Entry("b", 5, T0)},
		check:     "a",
		want:      Entry("a", 15, T0),
		wantBytes: 20, wantCount: 2,
	},
	{
		name:      "remove lowers usage; removing a missing digest is fine",
		puts:      []storage.IndexEntry{Entry("a", 10, T0), Entry("b", 5, T0), Entry("empty", 0, T0)},
		removes:   []string{"a", "never-stored", "empty"},
		check:     "b",
		want:      Entry("b", 5, T0),
		wantBytes: 5, wantCount: 1,
	},
}

func putGetUsage(t *testing.T, open Open) {
	for _, tc := range putCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			idx := open(t)
			MustPut(t, idx, tc.puts...)
			for _, r := range tc.removes {
				if err := idx.Remove(ctx, Dig(r)); err != nil {
					t.Fatal(err)
				}
				MustMiss(t, idx, Dig(r), "still there after Remove")
			}
			got := MustGet(t, idx, Dig(tc.check))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("Get = %+v\nwant  %+v", got, tc.want)
			}
			MustUsage(t, idx, tc.wantBytes, tc.wantCount)
		})
	}
}

func rejectsBadEntries(t *testing.T, open Open) {
	cases := []struct {
		name string
		e    storage.IndexEntry
	}{
		{"bad digest", storage.IndexEntry{Digest: "sha256:nope", Kind: storage.KindBlob}},
		{"unknown kind", storage.IndexEntry{Digest: Dig("a"), Kind: "tag"}},
		{"negative size", storage.IndexEntry{Digest: Dig("a"), Kind: storage.KindBlob, Size: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			idx := open(t)
			if err := idx.Put(t.Context(), tc.e); err == nil {
				t.Fatal("Put accepted a bad entry")
			}
			MustUsage(t, idx, 0, 0)
		})
	}
}

type touch struct {
	name string
	at   time.Time
}

func touchBatching(t *testing.T, open Open) {
	cases := []struct {
		name            string
		touches         []touch
		wantOrderBefore []string // ByLastAccess before Flush
		wantOrderAfter  []string // after Flush
		wantAccessOfA   time.Time
	}{
		{
			name:            "touch moves an entry to the back after Flush only",
			touches:         []touch{{"a", T0.Add(10 * time.Hour)}},
			wantOrderBefore: []string{"a", "b", "c"},
			wantOrderAfter:  []string{"b", "c", "a"},
			wantAccessOfA:   T0.Add(10 * time.Hour),
		},
		{
			name:            "the latest of several touches wins",
			touches:         []touch{{"a", T0.Add(5 * time.Hour)}, {"a", T0.Add(3 * time.Hour)}, {"b", T0.Add(4 * time.Hour)}},
			wantOrderBefore: []string{"a", "b", "c"},
			wantOrderAfter:  []string{"c", "b", "a"},
			wantAccessOfA:   T0.Add(5 * time.Hour),
		},
		{
			name:            "an older touch does not move an entry back; unknown digests are dropped",
			touches:         []touch{{"c", T0.Add(-time.Hour)}, {"unknown", T0.Add(time.Hour)}},
			wantOrderBefore: []string{"a", "b", "c"},
			wantOrderAfter:  []string{"a", "b", "c"},
			wantAccessOfA:   T0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			idx := open(t)
			MustPut(t, idx, Entry("a", 1, T0), Entry("b", 1, T0.Add(time.Hour)), Entry("c", 1, T0.Add(2*time.Hour)))
			for _, tt := range tc.touches {
				idx.Touch(Dig(tt.name), tt.at)
			}
			if got := WalkDigests(t, idx, storage.ByLastAccess); !slices.Equal(got, Digests(tc.wantOrderBefore...)) {
				t.Fatalf("before Flush: order %v, want %v", got, Digests(tc.wantOrderBefore...))
			}
			if got := MustGet(t, idx, Dig("a")).LastAccess; !got.Equal(T0) {
				t.Fatalf("touch visible before Flush: %v", got)
			}
			if err := idx.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if got := WalkDigests(t, idx, storage.ByLastAccess); !slices.Equal(got, Digests(tc.wantOrderAfter...)) {
				t.Fatalf("after Flush: order %v, want %v", got, Digests(tc.wantOrderAfter...))
			}
			if got := MustGet(t, idx, Dig("a")).LastAccess; !got.Equal(tc.wantAccessOfA) {
				t.Fatalf("LastAccess of a = %v, want %v", got, tc.wantAccessOfA)
			}
			MustMiss(t, idx, Dig("unknown"), "a touch created an entry")
		})
	}
}

func walk(t *testing.T, open Open) {
	t.Run("orders and early stop", func(t *testing.T) {
		t.Parallel()
		walkOrders(t, open(t))
	})
	t.Run("removing while walking across pages", func(t *testing.T) {
		t.Parallel()
		walkRemoving(t, open(t))
	})
	t.Run("ties across pages go by digest", func(t *testing.T) {
		t.Parallel()
		idx := open(t)
		var names []string
		for i := range WalkEntries {
			names = append(names, fmt.Sprint("tie", i))
			MustPut(t, idx, Entry(names[i], 1, T0))
		}
		want := Digests(names...)
		slices.Sort(want)
		if got := WalkDigests(t, idx, storage.ByLastAccess); !slices.Equal(got, want) {
			t.Fatalf("ByLastAccess over equal times: %d entries, want %d in digest order", len(got), len(want))
		}
	})
}

func walkOrders(t *testing.T, idx storage.Index) {
	ctx := t.Context()
	// Same access time for b and c: ties go by digest.
	es := []storage.IndexEntry{Entry("a", 1, T0.Add(3*time.Hour)), Entry("b", 1, T0), Entry("c", 1, T0), Entry("d", 1, T0.Add(time.Hour))}
	MustPut(t, idx, es...)
	byAccess := Digests("d")
	if Dig("b") < Dig("c") {
		byAccess = append(Digests("b", "c"), byAccess...)
	} else {
		byAccess = append(Digests("c", "b"), byAccess...)
	}
	byAccess = append(byAccess, Dig("a"))
	if got := WalkDigests(t, idx, storage.ByLastAccess); !slices.Equal(got, byAccess) {
		t.Fatalf("ByLastAccess = %v, want %v", got, byAccess)
	}
	byDigest := Digests("a", "b", "c", "d")
	slices.Sort(byDigest)
	if got := WalkDigests(t, idx, storage.ByDigest); !slices.Equal(got, byDigest) {
		t.Fatalf("ByDigest = %v, want %v", got, byDigest)
	}
	n := 0
	if err := idx.Walk(ctx, storage.ByLastAccess, func(storage.IndexEntry) (bool, error) { n++; return n < 2, nil }); err != nil || n != 2 {
		t.Fatalf("early stop: visited %d, %v", n, err)
	}
	boom := errors.New("boom")
	if err := idx.Walk(ctx, storage.ByDigest, func(storage.IndexEntry) (bool, error) { return true, boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error = %v", err)
	}
}

func walkRemoving(t *testing.T, idx storage.Index) {
	ctx := t.Context()
	for i := range WalkEntries {
		MustPut(t, idx, Entry(fmt.Sprint(i), 1, T0.Add(time.Duration(i)*time.Second)))
	}
	seen := 0
	var last time.Time
	err := idx.Walk(ctx, storage.ByLastAccess, func(e storage.IndexEntry) (bool, error) {
		if e.LastAccess.Before(last) {
			t.Fatalf("order broken at %v", e.LastAccess)
		}
		last = e.LastAccess
		seen++
		return true, idx.Remove(ctx, e.Digest)
	})
	if err != nil || seen != WalkEntries {
		t.Fatalf("visited %d of %d: %v", seen, WalkEntries, err)
	}
	MustUsage(t, idx, 0, 0)
}

func referrersAndRepos(t *testing.T, open Open) {
	ctx := t.Context()
	idx := open(t)
	MustPut(t, idx,
		Entry("layer", 100, T0), Entry("config", 10, T0), Entry("other", 5, T0),
		ManifestEntry("m1", 2, T0, Dig("layer"), Dig("config")),
		ManifestEntry("m2", 2, T0, Dig("layer")),
		ManifestEntry("index", 2, T0, Dig("m1")),
	)
	refs := func(name string) []digest.Digest {
		t.Helper()
		r, err := idx.Referrers(ctx, Dig(name))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	sorted := func(ds ...digest.Digest) []digest.Digest { slices.Sort(ds); return ds }
	if got, want := refs("layer"), sorted(Dig("m1"), Dig("m2")); !slices.Equal(got, want) {
		t.Fatalf("Referrers(layer) = %v, want %v", got, want)
	}
	if got := refs("m1"); !slices.Equal(got, Digests("index")) {
		t.Fatalf("Referrers(m1) = %v", got)
	}
	if got := refs("other"); len(got) != 0 {
		t.Fatalf("Referrers(other) = %v", got)
	}
	if got := MustGet(t, idx, Dig("m1")).Children; !slices.Equal(got, sorted(Dig("layer"), Dig("config"))) {
		t.Fatalf("Children of m1 = %v", got)
	}
	// New children replace the old ones; a put without children keeps them.
	MustPut(t, idx, ManifestEntry("m2", 2, T0, Dig("other")))
	MustPut(t, idx, storage.IndexEntry{Digest: Dig("m2"), Size: 2, Kind: storage.KindManifest, Added: T0})
	if got := refs("layer"); !slices.Equal(got, Digests("m1")) {
		t.Fatalf("after m2 changed: Referrers(layer) = %v", got)
	}
	if got := refs("other"); !slices.Equal(got, Digests("m2")) {
		t.Fatalf("after m2 changed: Referrers(other) = %v", got)
	}
	if got := MustGet(t, idx, Dig("m2")).Children; !slices.Equal(got, Digests("other")) {
		t.Fatalf("Children of m2 = %v", got)
	}
	// Removing a manifest removes its edges; removing a child keeps them.
	for _, name := range []string{"m1", "other"} {
		if err := idx.Remove(ctx, Dig(name)); err != nil {
			t.Fatal(err)
		}
	}
	if got := refs("layer"); len(got) != 0 {
		t.Fatalf("after removing m1: Referrers(layer) = %v", got)
	}
	if got := refs("other"); !slices.Equal(got, Digests("m2")) {
		t.Fatalf("after removing the child: Referrers(other) = %v", got)
	}
	addRepos(t, idx)
}

func addRepos(t *testing.T, idx storage.Index) {
	ctx := t.Context()
	for _, r := range []string{"quay.io/b/c", "docker.io/library/alpine", "quay.io/b/c"} {
		if err := idx.AddRepo(ctx, Dig("layer"), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := idx.AddRepo(ctx, Dig("never-stored"), "quay.io/b/c"); err != nil {
		t.Fatal(err)
	}
	if got := MustGet(t, idx, Dig("layer")).Repos; !slices.Equal(got, []string{"docker.io/library/alpine", "quay.io/b/c"}) {
		t.Fatalf("Repos = %v", got)
	}
	MustMiss(t, idx, Dig("never-stored"), "AddRepo created an entry")
}

func closeIndex(t *testing.T, open Open) {
	ctx := t.Context()
	idx := open(t)
	MustPut(t, idx, Entry("a", 1, T0))
	if err := idx.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idx.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := idx.Get(ctx, Dig("a")); !errors.Is(err, storage.ErrIndexClosed) {
		t.Fatalf("Get after Close = %v", err)
	}
}
