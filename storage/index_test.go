package storage

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// The contract suite of Index is storage/indextest, run on MemIndex and
// BoltIndex by index_contract_test.go and on the Redis index by cluster's
// tests. The helpers here serve this package's other tests.

type indexImpl struct {
	name string
	open func(t *testing.T) Index
}

// indexImpls are the implementations the eviction, walk and rebuild
// tests run on.
func indexImpls() []indexImpl {
	return []indexImpl{
		{"mem", func(t *testing.T) Index { return openTestMem(t) }},
		{"bolt", func(t *testing.T) Index { return openTestBolt(t) }},
	}
}

func openTestMem(t *testing.T) Index {
	m := NewMemIndex()
	t.Cleanup(func() { m.Close() })
	return m
}

func openTestBolt(t *testing.T) Index {
	b, err := OpenBoltIndex(filepath.Join(t.TempDir(), "index.db"), BoltOptions{FlushInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
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

func digests(names ...string) []digest.Digest {
	out := make([]digest.Digest, len(names))
	for i, n := range names {
		out[i] = dig(n)
	}
	return out
}
