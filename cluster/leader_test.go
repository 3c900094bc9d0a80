package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gmarcy/container-registry-proxy/storage/indextest"
	"github.com/opencontainers/go-digest"
)

func TestLeaderOneAtATime(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	prefix := uniquePrefix()
	ra, rb := testRedis(t, srv.Addr, prefix, nil, noPing), testRedis(t, srv.Addr, prefix, nil)
	leadA, leadB := ra.Leader("http://a", leaseTTL), rb.Leader("http://b", leaseTTL)

	actx, release, ok := leadA(ctx)
	if !ok {
		t.Fatal("a: no lead on a free lease")
	}
	if _, _, ok := leadB(ctx); ok {
		t.Fatal("b leads while a does")
	}
	mustHolder(t, rb, EvictLease, "http://a")
	release()
	if actx.Err() == nil {
		t.Fatal("the pass's context outlives its release")
	}
	_, release, ok = leadB(ctx)
	if !ok {
		t.Fatal("b: no lead after a released")
	}
	release()

	// While Redis is down, nobody leads.
	back := simulatedOutage(ra)
	if _, _, ok := leadA(ctx); ok {
		t.Fatal("a leads with redis down")
	}
	back()
}

// TestLeaderLostEndsThePass: when the lease is taken (it expired
// meanwhile), the pass's context ends.
func TestLeaderLostEndsThePass(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	r := testRedis(t, srv.Addr, uniquePrefix(), nil)
	lctx, release, ok := r.Leader("http://a", 150*time.Millisecond)(t.Context())
	if !ok {
		t.Fatal("no lead")
	}
	defer release()
	expire(t, r, EvictLease)
	mustAcquire(t, r, EvictLease, "http://b", leaseTTL)
	select {
	case <-lctx.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the pass's context did not end when the lease was lost")
	}
	release()
	mustHolder(t, r, EvictLease, "http://b")
}

// evictFixture is one store shared by two replicas, each with its own
// connection and Index on one Redis prefix.
type evictFixture struct {
	store  *storage.Store
	idx    [2]*Index
	redis  [2]*Redis
	digest []digest.Digest
	total  int64
}

func newEvictFixture(t *testing.T, addr string) *evictFixture {
	t.Helper()
	ctx := t.Context()
	s, err := storage.New(inmemory.New(), storage.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	f := &evictFixture{store: s}
	prefix := uniquePrefix()
	for i := range f.idx {
		f.redis[i] = testRedis(t, addr, prefix, nil)
		f.idx[i] = testIndex(t, f.redis[i], IndexOptions{})
	}
	for i := range 12 {
		content := fmt.Appendf(nil, "blob %d %s", i, strings.Repeat("x", 100))
		d := digest.FromBytes(content)
		if err := s.PutSmallBlob(ctx, d, content); err != nil {
			t.Fatal(err)
		}
		if err := s.Link(ctx, "docker.io", "library/app", d, storage.LinkInfo{Size: int64(len(content)), LinkedAt: indextest.T0}); err != nil {
			t.Fatal(err)
		}
		at := indextest.T0.Add(time.Duration(i) * time.Hour)
		e := storage.IndexEntry{Digest: d, Size: int64(len(content)), Kind: storage.KindBlob, Added: at, LastAccess: at,
			Repos: []string{storage.RepoKey("docker.io", "library/app")}}
		indextest.MustPut(t, f.idx[i%2], e) // each replica stored half
		f.digest = append(f.digest, d)
		f.total += e.Size
	}
	return f
}

// stored returns the digests whose blob is in the store.
func (f *evictFixture) stored(t *testing.T) map[digest.Digest]bool {
	t.Helper()
	out := map[digest.Digest]bool{}
	for _, d := range f.digest {
		if _, err := f.store.StatBlob(t.Context(), d); err == nil {
			out[d] = true
		} else if !errors.Is(err, storage.ErrNotFound) {
			t.Fatal(err)
		}
	}
	return out
}

// planned returns what one pass with opts would leave stored.
func (f *evictFixture) planned(t *testing.T, opts storage.EvictOptions) map[digest.Digest]bool {
	t.Helper()
	plan, err := f.store.Plan(t.Context(), f.idx[0], opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Removed) == 0 {
		t.Fatal("the plan removes nothing: no test")
	}
	want := map[digest.Digest]bool{}
	for _, d := range f.digest {
		want[d] = true
	}
	for _, e := range plan.Removed {
		delete(want, e.Digest)
	}
	return want
}

// passLog counts the passes an evictor logged.
type passLog struct{ passes atomic.Int32 }

func (p *passLog) log(msg string, _ map[string]any) {
	if msg == "cache eviction" {
		p.passes.Add(1)
	}
}

// runEvictor runs ev in the background until the test ends.
func runEvictor(t *testing.T, ev *storage.Evictor) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { ev.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestEvictionOnOneReplicaAtATime: two replicas' evictors over one Redis
// index and one store are kicked while one of them is in its pass: the
// other skips its pass, and what is removed is exactly what one pass
// removes.
func TestEvictionOnOneReplicaAtATime(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	f := newEvictFixture(t, srv.Addr)
	now := indextest.T0.Add(24 * time.Hour)
	base := storage.EvictOptions{MaxSize: f.total / 2, Now: func() time.Time { return now }}
	want := f.planned(t, base)

	inPass, skipped := make(chan struct{}), make(chan struct{})
	var inPassOnce, skippedOnce sync.Once
	var logs [2]passLog
	optsA, optsB := base, base
	optsA.Log, optsB.Log = logs[0].log, logs[1].log
	optsA.Lead = f.redis[0].Leader("http://a", leaseTTL)
	optsA.Pinned = func(digest.Digest) bool { // a holds its pass open until b skipped its own
		inPassOnce.Do(func() {
			close(inPass)
			select {
			case <-skipped:
			case <-time.After(20 * time.Second):
				t.Error("b never skipped its pass")
			}
		})
		return false
	}
	leadB := f.redis[1].Leader("http://b", leaseTTL)
	optsB.Lead = func(ctx context.Context) (context.Context, func(), bool) {
		lctx, release, ok := leadB(ctx)
		if !ok {
			skippedOnce.Do(func() { close(skipped) })
		}
		return lctx, release, ok
	}
	evA, evB := newEvictor(t, f, 0, optsA), newEvictor(t, f, 1, optsB)
	runEvictor(t, evA)
	runEvictor(t, evB)

	evA.Kick()
	select {
	case <-inPass:
	case <-time.After(20 * time.Second):
		t.Fatal("a's pass did not start")
	}
	evB.Kick()
	eventually(t, "a's pass", func() bool { return logs[0].passes.Load() == 1 })
	if got := f.stored(t); !maps.Equal(got, want) {
		t.Fatalf("stored after the passes: %d blobs, want %d", len(got), len(want))
	}
	if n := logs[1].passes.Load(); n != 0 {
		t.Fatalf("b logged %d passes", n)
	}
	// a releases the lease once its pass returned (after its log line):
	// b's own pass runs then, and finds nothing to do.
	eventually(t, "a's lease released", func() bool {
		holder, err := f.redis[0].Holder(t.Context(), EvictLease)
		return err == nil && holder != "http://a"
	})
	if rep, err := evB.Pass(t.Context()); err != nil || len(rep.Removed) != 0 {
		t.Fatalf("b's pass after a's = %d removed, %v", len(rep.Removed), err)
	}
	usage, _, err := f.idx[1].Usage(t.Context())
	if err != nil || usage > base.MaxSize {
		t.Fatalf("usage %d (%v) over the bound %d", usage, err, base.MaxSize)
	}
}

// TestEvictionKickedOnBothReplicasAtOnce: whichever order the two passes
// take, the content removed is what one pass removes, and one pass is
// logged.
func TestEvictionKickedOnBothReplicasAtOnce(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	f := newEvictFixture(t, srv.Addr)
	now := indextest.T0.Add(24 * time.Hour)
	base := storage.EvictOptions{MaxSize: f.total / 3, Now: func() time.Time { return now }}
	want := f.planned(t, base)

	var logs [2]passLog
	var attempts atomic.Int32 // passes that ended, run or skipped
	evictors := make([]*storage.Evictor, 2)
	for i := range evictors {
		opts := base
		opts.Log = logs[i].log
		lead := f.redis[i].Leader(fmt.Sprintf("http://%d", i), leaseTTL)
		opts.Lead = func(ctx context.Context) (context.Context, func(), bool) {
			lctx, release, ok := lead(ctx)
			if !ok {
				attempts.Add(1)
				return lctx, release, false
			}
			return lctx, func() { release(); attempts.Add(1) }, true
		}
		evictors[i] = newEvictor(t, f, i, opts)
		runEvictor(t, evictors[i])
	}
	evictors[0].Kick()
	evictors[1].Kick()
	eventually(t, "both passes", func() bool { return attempts.Load() == 2 })
	if got := f.stored(t); !maps.Equal(got, want) {
		t.Fatalf("stored after the passes: %v, want %v", slices.Collect(maps.Keys(got)), slices.Collect(maps.Keys(want)))
	}
	if n := logs[0].passes.Load() + logs[1].passes.Load(); n != 1 {
		t.Fatalf("%d passes logged, want 1", n)
	}
}

func newEvictor(t *testing.T, f *evictFixture, i int, opts storage.EvictOptions) *storage.Evictor {
	t.Helper()
	ev, err := storage.NewEvictor(f.store, f.idx[i], opts)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}
