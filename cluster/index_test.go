package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gmarcy/container-registry-proxy/storage/indextest"
	"github.com/opencontainers/go-digest"
)

// TestIndexContract runs storage.Index's contract suite, the one BoltIndex
// and MemIndex pass, on the Redis index: with the default page size, and
// with pages of 3 entries so that every walk crosses many pages.
func TestIndexContract(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	for _, page := range []int{0, 3} {
		t.Run(fmt.Sprintf("page=%d", page), func(t *testing.T) {
			t.Parallel()
			indextest.Run(t, func(t *testing.T) storage.Index {
				return testIndex(t, testRedis(t, srv.Addr, uniquePrefix(), nil), IndexOptions{PageSize: page})
			})
		})
	}
}

// TestIndexReplicasShare: two replicas (two connections, one prefix) see
// each other's writes.
func TestIndexReplicasShare(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	prefix := uniquePrefix()
	a := testIndex(t, testRedis(t, srv.Addr, prefix, nil), IndexOptions{})
	b := testIndex(t, testRedis(t, srv.Addr, prefix, nil), IndexOptions{})
	t0 := indextest.T0

	indextest.MustPut(t, a, indextest.Entry("layer", 100, t0, "docker.io/library/alpine"),
		indextest.ManifestEntry("m", 3, t0, indextest.Dig("layer")))
	if got := indextest.MustGet(t, b, indextest.Dig("layer")); got.Size != 100 || !slices.Equal(got.Repos, []string{"docker.io/library/alpine"}) {
		t.Fatalf("replica b reads %+v", got)
	}
	if refs, err := b.Referrers(ctx, indextest.Dig("layer")); err != nil || !slices.Equal(refs, indextest.Digests("m")) {
		t.Fatalf("replica b: Referrers = %v, %v", refs, err)
	}
	indextest.MustUsage(t, b, 103, 2)

	// b reads the layer: after its flush, a sees the access.
	b.Touch(indextest.Dig("layer"), t0.Add(time.Hour))
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := indextest.MustGet(t, a, indextest.Dig("layer")).LastAccess; !got.Equal(t0.Add(time.Hour)) {
		t.Fatalf("replica a: LastAccess = %v", got)
	}
	if got := indextest.WalkDigests(t, a, storage.ByLastAccess); !slices.Equal(got, indextest.Digests("m", "layer")) {
		t.Fatalf("replica a: ByLastAccess = %v", got)
	}
	if err := b.AddRepo(ctx, indextest.Dig("layer"), "quay.io/x/y"); err != nil {
		t.Fatal(err)
	}
	if got := indextest.MustGet(t, a, indextest.Dig("layer")).Repos; len(got) != 2 {
		t.Fatalf("replica a: Repos = %v", got)
	}
	// a evicts the manifest: gone for b, with its edges.
	if err := a.Remove(ctx, indextest.Dig("m")); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.Get(ctx, indextest.Dig("m")); ok || err != nil {
		t.Fatalf("replica b still reads the removed manifest (%v)", err)
	}
	if refs, _ := b.Referrers(ctx, indextest.Dig("layer")); len(refs) != 0 {
		t.Fatalf("replica b: Referrers after removal = %v", refs)
	}
	indextest.MustUsage(t, b, 100, 1)
}

// TestIndexConcurrentReplicasKeepUsageExact: two replicas, four writers
// each, put (blobs and manifests, sizes changing) and remove the same
// digests at once; afterwards the totals are those of the entries left,
// and every referrer edge is that of an entry left.
func TestIndexConcurrentReplicasKeepUsageExact(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	prefix := uniquePrefix()
	replicas := []*Index{
		testIndex(t, testRedis(t, srv.Addr, prefix, nil), IndexOptions{}),
		testIndex(t, testRedis(t, srv.Addr, prefix, nil), IndexOptions{}),
	}
	const digestsN, writers, opsEach = 40, 4, 300
	var wg sync.WaitGroup
	for ri, x := range replicas {
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(ri), uint64(w)))
				for range opsEach {
					if err := randomWrite(ctx, x, rng, digestsN); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	checkConsistent(t, replicas[0], digestsN)
}

func randomWrite(ctx context.Context, x *Index, rng *rand.Rand, n int) error {
	name := fmt.Sprint("d", rng.IntN(n))
	at := indextest.T0.Add(time.Duration(rng.IntN(1000)) * time.Second)
	switch rng.IntN(4) {
	case 0:
		return x.Remove(ctx, indextest.Dig(name))
	case 1:
		kids := []digest.Digest{indextest.Dig(fmt.Sprint("d", rng.IntN(n))), indextest.Dig(fmt.Sprint("d", rng.IntN(n)))}
		return x.Put(ctx, indextest.ManifestEntry(name, int64(rng.IntN(1000)), at, kids...))
	case 2:
		return x.AddRepo(ctx, indextest.Dig(name), fmt.Sprint("docker.io/r", rng.IntN(3)))
	}
	return x.Put(ctx, indextest.Entry(name, int64(rng.IntN(1<<20)), at, "docker.io/library/x"))
}

// checkConsistent compares the totals and referrer sets with the entries.
func checkConsistent(t *testing.T, x *Index, n int) {
	t.Helper()
	ctx := t.Context()
	var bytes, entries int64
	children := map[digest.Digest][]digest.Digest{} // child → manifests
	err := x.Walk(ctx, storage.ByDigest, func(e storage.IndexEntry) (bool, error) {
		bytes += e.Size
		entries++
		for _, c := range e.Children {
			children[c] = append(children[c], e.Digest)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	indextest.MustUsage(t, x, bytes, entries)
	if got := len(indextest.WalkDigests(t, x, storage.ByLastAccess)); int64(got) != entries {
		t.Fatalf("ByLastAccess visits %d entries, ByDigest %d", got, entries)
	}
	for i := range n {
		d := indextest.Dig(fmt.Sprint("d", i))
		refs, err := x.Referrers(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		want := children[d]
		slices.Sort(want)
		if !slices.Equal(refs, want) {
			t.Fatalf("Referrers(d%d) = %v, want %v", i, refs, want)
		}
	}
}

// TestIndexPrefixesSeparateCaches: two caches on one Redis, by prefix,
// neither sees the other, and every key is under its cache's prefix.
func TestIndexPrefixesSeparateCaches(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	p1, p2 := uniquePrefix(), uniquePrefix()
	r1 := testRedis(t, srv.Addr, p1, nil)
	one, two := testIndex(t, r1, IndexOptions{}), testIndex(t, testRedis(t, srv.Addr, p2, nil), IndexOptions{})
	indextest.MustPut(t, one, indextest.Entry("a", 10, indextest.T0), indextest.ManifestEntry("m", 1, indextest.T0, indextest.Dig("a")))
	indextest.MustPut(t, two, indextest.Entry("b", 7, indextest.T0))
	if _, ok, _ := two.Get(ctx, indextest.Dig("a")); ok {
		t.Fatal("cache two sees cache one's entry")
	}
	if got := indextest.WalkDigests(t, two, storage.ByDigest); !slices.Equal(got, indextest.Digests("b")) {
		t.Fatalf("cache two walks %v", got)
	}
	if refs, _ := two.Referrers(ctx, indextest.Dig("a")); len(refs) != 0 {
		t.Fatalf("cache two: Referrers = %v", refs)
	}
	if err := two.Remove(ctx, indextest.Dig("a")); err != nil {
		t.Fatal(err)
	}
	indextest.MustGet(t, one, indextest.Dig("a"))
	indextest.MustUsage(t, one, 11, 2)
	indextest.MustUsage(t, two, 7, 1)
	keys, err := r1.Client().Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, p1+":idx:") && !strings.HasPrefix(k, p2+":idx:") {
			t.Errorf("key %q is under no cache's prefix", k)
		}
	}
	if len(keys) == 0 {
		t.Fatal("no keys in Redis")
	}
}

// TestIndexNewInRedisIsRebuiltOnce: the first replica to find no index in
// Redis asks for a rebuild from the storage; the next ones, finding the
// epoch it created, trust the index. Every one says it is maintained (no
// walk of the bucket at each start).
func TestIndexNewInRedisIsRebuiltOnce(t *testing.T) {
	t.Parallel()
	rd := testutil.StartRedis(t)
	prefix := uniquePrefix()
	first := testIndex(t, testRedis(t, rd.Addr, prefix, nil), IndexOptions{})
	second := testIndex(t, testRedis(t, rd.Addr, prefix, nil), IndexOptions{})
	if !first.NeedsRebuild() || second.NeedsRebuild() {
		t.Errorf("NeedsRebuild: first %v, second %v; want true, false", first.NeedsRebuild(), second.NeedsRebuild())
	}
	if !first.Maintained() || first.MovedAside() != "" {
		t.Error("a Redis index is maintained by its replicas and moves nothing aside")
	}
}
