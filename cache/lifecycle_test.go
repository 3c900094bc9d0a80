package cache_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/gmarcy/container-registry-proxy/cache"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	store *storage.Store
	idx   *storage.MemIndex
	life  *cache.Lifecycle
	logs  *testutil.SyncBuffer
	clock *testutil.FakeClock
}

func newFixture(t *testing.T, evict storage.EvictOptions) *fixture {
	t.Helper()
	store, err := storage.New(inmemory.New(), storage.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: store, idx: storage.NewMemIndex(), logs: &testutil.SyncBuffer{},
		clock: testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	log := logrus.New()
	log.SetOutput(f.logs)
	evict.Now = f.clock.Now
	f.life, err = cache.Open(t.Context(), store, f.idx, cache.Options{Evict: evict, Now: f.clock.Now, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.life.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return f
}

// put stores content as a committed blob of ns/repo and tells the
// lifecycle, as the mirror does after a fill.
func (f *fixture) put(t *testing.T, content []byte, manifest bool, ns, repo string) digest.Digest {
	t.Helper()
	d := digest.FromBytes(content)
	if err := f.store.PutSmallBlob(t.Context(), d, content); err != nil {
		t.Fatal(err)
	}
	c := storage.Content{Digest: d, Size: int64(len(content)), Namespace: ns, Repo: repo}
	if manifest {
		c.Manifest = content
	}
	if err := f.life.Reserve(t.Context(), c.Size); err != nil {
		t.Fatal(err)
	}
	if err := f.life.Committed(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestLifecycleRecordsWhatTheMirrorDoes: commits, links and hits reach
// the index: sizes, repositories, a manifest's children, access times.
func TestLifecycleRecordsWhatTheMirrorDoes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, storage.EvictOptions{})
	ctx := t.Context()
	layer := f.put(t, bytes.Repeat([]byte("l"), 1000), false, "quay.io", "org/app")
	manifest := []byte(`{"schemaVersion":2,"config":{"digest":"` + digest.FromString("cfg").String() + `"},"layers":[{"digest":"` + layer.String() + `"}]}`)
	md := f.put(t, manifest, true, "quay.io", "org/app")
	if err := f.life.Linked(ctx, layer, "docker.io", "library/app"); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour)
	f.life.Hit(layer)
	if err := f.idx.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e, ok, err := f.idx.Get(ctx, layer)
	if err != nil || !ok {
		t.Fatalf("layer not indexed: %v", err)
	}
	if e.Size != 1000 || e.Kind != storage.KindBlob || strings.Join(e.Repos, ",") != "docker.io/library/app,quay.io/org/app" || !e.LastAccess.Equal(f.clock.Now()) {
		t.Fatalf("layer entry: %+v", e)
	}
	m, _, _ := f.idx.Get(ctx, md)
	if m.Kind != storage.KindManifest || len(m.Children) != 2 {
		t.Fatalf("manifest entry: %+v", m)
	}
	if b, n := f.life.Totals(); b != 1000+int64(len(manifest)) || n != 2 {
		t.Fatalf("totals %d bytes, %d objects", b, n)
	}
}

// TestLifecycleBoundSparesPinned: Reserve keeps the cache within its size
// bound by evicting the least recently used content, never content that
// is pinned (being filled or served); Admit refuses what could never fit.
func TestLifecycleBoundSparesPinned(t *testing.T) {
	t.Parallel()
	f := newFixture(t, storage.EvictOptions{MaxSize: 3000})
	ctx := t.Context()
	var ds []digest.Digest
	for i := range 3 {
		ds = append(ds, f.put(t, bytes.Repeat([]byte{byte('a' + i)}, 1000), false, "reg.test", "app"))
		f.clock.Advance(time.Minute)
	}
	unpin := f.life.Pin(ds[0]) // the oldest, but in use
	if f.life.Admit(3001) || !f.life.Admit(3000) {
		t.Fatal("Admit must refuse only what is larger than the whole bound")
	}
	f.put(t, bytes.Repeat([]byte("d"), 1000), false, "reg.test", "app")
	for i, want := range []bool{true, false, true} {
		if _, err := f.store.StatBlob(ctx, ds[i]); (err == nil) != want {
			t.Fatalf("blob %d present=%v, want %v (the pinned oldest stays, the next oldest goes)", i, err == nil, want)
		}
	}
	unpin()
	unpin() // a second call changes nothing
	f.put(t, bytes.Repeat([]byte("e"), 1000), false, "reg.test", "app")
	if _, err := f.store.StatBlob(ctx, ds[0]); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unpinned, the oldest blob must go: %v", err)
	}
	if b, _ := f.life.Totals(); b > 3000 {
		t.Fatalf("the cache holds %d bytes, over its 3000-byte bound", b)
	}
	if !strings.Contains(f.logs.String(), "cache eviction") {
		t.Fatalf("evictions are not logged:\n%s", f.logs)
	}
}

// failingIndex is an index whose writes and reads fail.
type failingIndex struct {
	*storage.MemIndex
	err error
}

func (x *failingIndex) AddRepo(context.Context, digest.Digest, string) error { return x.err }
func (x *failingIndex) Usage(context.Context) (int64, int64, error)          { return 0, 0, x.err }

// TestLifecycleReportsIndexErrors: a failed index write is returned with
// its cause (the mirror logs it); a failed read of the totals is logged
// once per minute, not once per scrape.
func TestLifecycleReportsIndexErrors(t *testing.T) {
	t.Parallel()
	store, err := storage.New(inmemory.New(), storage.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	log := logrus.New()
	log.SetOutput(logs)
	clock := testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	idx := &failingIndex{MemIndex: storage.NewMemIndex(), err: errors.New("index unreachable: connection refused")}
	life, err := cache.Open(t.Context(), store, idx, cache.Options{Log: log, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer life.Close()
	err = life.Linked(t.Context(), digest.FromString("x"), "quay.io", "org/app")
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "quay.io/org/app") {
		t.Fatalf("Linked: %v; want the cause and the repository", err)
	}
	for range 3 {
		if b, n := life.Totals(); b != 0 || n != 0 {
			t.Fatalf("totals of a failing index: %d, %d", b, n)
		}
	}
	if n := strings.Count(logs.String(), "connection refused"); n != 1 {
		t.Fatalf("%d log lines for 3 failed reads within a minute, want 1:\n%s", n, logs)
	}
	clock.Advance(2 * time.Minute)
	life.Totals()
	if n := strings.Count(logs.String(), "connection refused"); n != 2 {
		t.Fatalf("after a minute the failure is logged again: %d lines", n)
	}
}

// stallingDriver never finishes a walk until its context ends.
type stallingDriver struct {
	storagedriver.StorageDriver
	walking chan struct{}
}

func (d *stallingDriver) Walk(ctx context.Context, path string, f storagedriver.WalkFn, opts ...func(*storagedriver.WalkOptions)) error {
	select {
	case d.walking <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestLifecycleCloseStopsRebuild: a fresh index is rebuilt in the
// background (readiness withheld meanwhile); Close cancels the rebuild and
// waits for it, so nothing runs on after the index is closed (goleak
// checks the goroutines).
func TestLifecycleCloseStopsRebuild(t *testing.T) {
	t.Parallel()
	d := &stallingDriver{StorageDriver: inmemory.New(), walking: make(chan struct{}, 1)}
	store, err := storage.New(d, storage.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := storage.OpenBoltIndex(filepath.Join(t.TempDir(), "index.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	log := logrus.New()
	log.SetOutput(logs)
	life, err := cache.Open(t.Context(), store, idx, cache.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	<-d.walking
	if !life.Rebuilding() {
		t.Fatal("Rebuilding is false while the rebuild walks the storage")
	}
	if err := life.Close(); err != nil {
		t.Fatal(err)
	}
	if life.Rebuilding() {
		t.Fatal("the rebuild did not end with Close")
	}
	if !strings.Contains(logs.String(), "rebuild stopped") {
		t.Fatalf("the stopped rebuild is not logged:\n%s", logs)
	}
}

// maintainedIndex is an index kept by several processes (as
// cluster.Index): it says so, and may ask for a rebuild.
type maintainedIndex struct {
	*storage.MemIndex
	fresh bool
}

func (maintainedIndex) Maintained() bool     { return true }
func (m maintainedIndex) NeedsRebuild() bool { return m.fresh }
func (maintainedIndex) MovedAside() string   { return "" }

// TestLifecycleTrustsAMaintainedIndex: a process starting on an index
// that other replicas keep does not walk the storage to repair it (a
// whole bucket, on every replica's start), unless the index says it is
// new; an index of its own is repaired as before.
func TestLifecycleTrustsAMaintainedIndex(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, err := storage.New(inmemory.New(), storage.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("stored by a replica that crashed before indexing it")
	d := digest.FromBytes(content)
	if err := store.PutSmallBlob(ctx, d, content); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		idx     storage.Index
		indexed bool
	}{
		{"own index: repaired", storage.NewMemIndex(), true},
		{"maintained: trusted", maintainedIndex{MemIndex: storage.NewMemIndex()}, false},
		{"maintained but new: rebuilt", maintainedIndex{MemIndex: storage.NewMemIndex(), fresh: true}, true},
	} {
		life, err := cache.Open(ctx, store, tc.idx, cache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for life.Rebuilding() {
			time.Sleep(time.Millisecond)
		}
		_, ok, err := tc.idx.Get(ctx, d)
		if cerr := life.Close(); cerr != nil {
			t.Fatal(cerr)
		}
		if err != nil || ok != tc.indexed {
			t.Errorf("%s: indexed %v (%v), want %v", tc.name, ok, err, tc.indexed)
		}
	}
}

// TestLifecycleUnlinkedRemovesWhatNoRepositoryLinks: content deleted in
// one repository (its link removed, then Unlinked) stays while another
// repository links it, stays while it is pinned (a fill or a read in
// progress), and then goes: data, index entry, totals. The index names
// the first repository still; the storage's links decide. A digest the
// index does not know is no error.
func TestLifecycleUnlinkedRemovesWhatNoRepositoryLinks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, storage.EvictOptions{})
	ctx := t.Context()
	d := f.put(t, bytes.Repeat([]byte("s"), 1000), false, "reg.test", "team/app")
	for _, repo := range []string{"team/app", "team/other"} {
		if err := f.store.Link(ctx, "reg.test", repo, d, storage.LinkInfo{Size: 1000}); err != nil {
			t.Fatal(err)
		}
		if err := f.life.Linked(ctx, d, "reg.test", repo); err != nil {
			t.Fatal(err)
		}
	}
	unlink := func(repo string) {
		t.Helper()
		if err := f.store.Unlink(ctx, "reg.test", repo, d); err != nil {
			t.Fatal(err)
		}
		if err := f.life.Unlinked(ctx, d, "reg.test", repo); err != nil {
			t.Fatal(err)
		}
	}
	present := func() bool {
		t.Helper()
		_, err := f.store.StatBlob(ctx, d)
		_, indexed, ierr := f.idx.Get(ctx, d)
		if ierr != nil || (err == nil) != indexed {
			t.Fatalf("stored %v, indexed %v (%v): the storage and the index disagree", err == nil, indexed, ierr)
		}
		return indexed
	}
	unlink("team/app")
	if !present() {
		t.Fatal("content another repository links was removed")
	}
	unpin := f.life.Pin(d)
	unlink("team/other")
	if !present() {
		t.Fatal("pinned content (in use) was removed")
	}
	unpin()
	if err := f.life.Unlinked(ctx, d, "reg.test", "team/other"); err != nil {
		t.Fatal(err)
	}
	if present() {
		t.Fatal("content no repository links, not in use, is still cached")
	}
	if b, n := f.life.Totals(); b != 0 || n != 0 {
		t.Fatalf("totals %d bytes, %d objects after the removal", b, n)
	}
	if err := f.life.Unlinked(ctx, digest.FromString("unknown"), "reg.test", "team/app"); err != nil {
		t.Fatalf("an unknown digest: %v", err)
	}
}

// TestLifecycleBoundAfterConcurrentReservations: two fills reserve room
// at the same time, each for itself (neither counts the other), and both
// commit: the cache is over its bound for a moment, and the pass kicked
// by the commits brings it back within it.
func TestLifecycleBoundAfterConcurrentReservations(t *testing.T) {
	t.Parallel()
	f := newFixture(t, storage.EvictOptions{MaxSize: 2500})
	ctx := t.Context()
	f.put(t, bytes.Repeat([]byte("o"), 1000), false, "quay.io", "org/old")
	f.clock.Advance(time.Minute)
	var cs []storage.Content
	for _, b := range []byte{'a', 'b'} {
		content := bytes.Repeat([]byte{b}, 1000)
		d := digest.FromBytes(content)
		if err := f.store.PutSmallBlob(ctx, d, content); err != nil {
			t.Fatal(err)
		}
		// Both reserve before either commits: 1000 + 1000 fits 2500.
		if err := f.life.Reserve(ctx, int64(len(content))); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, storage.Content{Digest: d, Size: int64(len(content)), Namespace: "quay.io", Repo: "org/new"})
	}
	for _, c := range cs {
		if err := f.life.Committed(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, _ := f.life.Totals(); b <= 2500 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := f.life.Totals()
			t.Fatalf("the cache stays at %d bytes, over its 2500-byte bound", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
