package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gmarcy/container-registry-proxy/storage/indextest"
)

const unreachable = "redis unreachable"

// TestIndexSurvivesRedisOutages stops the real redis-server twice: writes
// made meanwhile succeed, reads fail, access times stay batched; when it
// is back (empty: it keeps nothing on disk) the writes are replayed, the
// batched accesses written, the loss of the index noticed and the storage
// reconcile called; the outage is logged once each time.
func TestIndexSurvivesRedisOutages(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	var logs testutil.SyncBuffer
	r := testRedis(t, srv.Addr, uniquePrefix(), &logs)
	var reconciles atomic.Int32
	var x *Index
	x = testIndex(t, r, IndexOptions{Reconcile: func(ctx context.Context) error {
		reconciles.Add(1)
		// What Store.Reconcile does: put back what the storage holds.
		return x.Put(ctx, indextest.Entry("before", 5, indextest.T0))
	}})
	indextest.MustPut(t, x, indextest.Entry("before", 5, indextest.T0))

	srv.Stop()
	writeWhileDown(t, x)
	x.Touch(indextest.Dig("b"), indextest.T0.Add(time.Hour))
	if err := x.Flush(ctx); err == nil {
		t.Fatal("Flush succeeded with redis down")
	}
	readsFail(t, x)
	if down, detail := r.Degraded(); !down || !strings.Contains(detail, "redis unreachable since") {
		t.Fatalf("Degraded() = %v, %q", down, detail)
	}

	srv.Start()
	eventually(t, "the journaled writes in redis", func() bool {
		_, ok, err := x.Get(ctx, indextest.Dig("b"))
		return err == nil && ok && x.journal.len() == 0
	})
	eventually(t, "the reconcile", func() bool { return reconciles.Load() == 1 })
	if err := x.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b := indextest.MustGet(t, x, indextest.Dig("b"))
	if !slices.Equal(b.Repos, []string{"docker.io/library/b", "quay.io/q/b"}) || !b.LastAccess.Equal(indextest.T0.Add(time.Hour)) {
		t.Fatalf("b after the outage: %+v", b)
	}
	if _, ok, _ := x.Get(ctx, indextest.Dig("c")); ok {
		t.Fatal("c, removed while redis was down, is back")
	}
	indextest.MustGet(t, x, indextest.Dig("before")) // put back by the reconcile
	indextest.MustUsage(t, x, 5+20, 2)
	if n := count(&logs, unreachable); n != 1 {
		t.Fatalf("%q logged %d times in one outage:\n%s", unreachable, n, logs.String())
	}

	// A second outage: logged once more, replayed again.
	srv.Stop()
	indextest.MustPut(t, x, indextest.Entry("second", 1, indextest.T0))
	srv.Start()
	eventually(t, "the second outage's write", func() bool {
		_, ok, err := x.Get(ctx, indextest.Dig("second"))
		return err == nil && ok
	})
	eventually(t, "the second reconcile", func() bool { return reconciles.Load() == 2 })
	if n := count(&logs, unreachable); n != 2 {
		t.Fatalf("%q logged %d times in two outages:\n%s", unreachable, n, logs.String())
	}
}

// writeWhileDown makes writes with redis down: none fails.
func writeWhileDown(t *testing.T, x *Index) {
	t.Helper()
	ctx := t.Context()
	indextest.MustPut(t, x, indextest.Entry("b", 20, indextest.T0, "docker.io/library/b"), indextest.Entry("c", 3, indextest.T0))
	if err := x.AddRepo(ctx, indextest.Dig("b"), "quay.io/q/b"); err != nil {
		t.Fatal(err)
	}
	if err := x.Remove(ctx, indextest.Dig("c")); err != nil {
		t.Fatal(err)
	}
	if err := x.PutMany(ctx, []storage.IndexEntry{indextest.Entry("c", 3, indextest.T0)}); err != nil {
		t.Fatal(err)
	}
	if err := x.Remove(ctx, indextest.Dig("c")); err != nil {
		t.Fatal(err)
	}
}

// readsFail checks that every read reports that redis is down.
func readsFail(t *testing.T, x *Index) {
	t.Helper()
	ctx := t.Context()
	if _, _, err := x.Get(ctx, indextest.Dig("b")); err == nil {
		t.Error("Get succeeded with redis down")
	}
	if _, _, err := x.Usage(ctx); err == nil {
		t.Error("Usage succeeded with redis down")
	}
	if err := x.Walk(ctx, storage.ByLastAccess, func(storage.IndexEntry) (bool, error) { return true, nil }); err == nil {
		t.Error("Walk succeeded with redis down")
	}
	if _, err := x.Referrers(ctx, indextest.Dig("b")); err == nil {
		t.Error("Referrers succeeded with redis down")
	}
}

// simulatedOutage marks r down without stopping Redis (which keeps its
// data), as a failed command would; nothing pings it until the returned
// function reports an answer.
func simulatedOutage(r *Redis) (back func()) {
	r.Observe(errors.New("dial tcp: simulated outage"))
	return func() { r.Observe(nil) }
}

// noPing leaves a down Redis alone: only a command that gets an answer
// brings it back (simulatedOutage).
func noPing(o *RedisOptions) { o.RetryEvery = time.Hour }

// TestIndexJournalOverflow: past JournalLimit the journal is dropped,
// and when Redis answers the storage reconcile is called once; an outage
// within the bound replays without a reconcile.
func TestIndexJournalOverflow(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	var logs testutil.SyncBuffer
	r := testRedis(t, srv.Addr, uniquePrefix(), &logs, noPing)
	var reconciles atomic.Int32
	x := testIndex(t, r, IndexOptions{JournalLimit: 3, Reconcile: func(context.Context) error {
		reconciles.Add(1)
		return nil
	}})

	back := simulatedOutage(r)
	indextest.MustPut(t, x, indextest.Entry("a", 1, indextest.T0), indextest.Entry("b", 1, indextest.T0))
	back()
	eventually(t, "the replay", func() bool {
		_, ok, err := x.Get(ctx, indextest.Dig("b"))
		return err == nil && ok
	})
	if err := x.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := reconciles.Load(); n != 0 {
		t.Fatalf("%d reconciles after an outage within the journal's bound", n)
	}

	back = simulatedOutage(r)
	for _, name := range []string{"c", "d", "e", "f", "g"} {
		indextest.MustPut(t, x, indextest.Entry(name, 1, indextest.T0))
	}
	if n := x.journal.len(); n != 0 {
		t.Fatalf("journal holds %d writes past its bound", n)
	}
	back()
	eventually(t, "the reconcile", func() bool { return reconciles.Load() == 1 })
	if _, ok, _ := x.Get(ctx, indextest.Dig("c")); ok {
		t.Fatal("a dropped write reached redis")
	}
	indextest.MustPut(t, x, indextest.Entry("h", 1, indextest.T0)) // after the recovery: straight to redis
	indextest.MustGet(t, x, indextest.Dig("h"))
	if n := count(&logs, "too many writes while redis is down"); n != 1 {
		t.Fatalf("overflow logged %d times:\n%s", n, logs.String())
	}
	if n := count(&logs, unreachable); n != 2 {
		t.Fatalf("%q logged %d times in two outages:\n%s", unreachable, n, logs.String())
	}
}

// TestIndexWritesQueueBehindTheJournal: while journaled writes wait, a
// new write of the same replica goes behind them even though Redis
// answers, so that a removal is not overtaken by the put it follows.
func TestIndexWritesQueueBehindTheJournal(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testutil.StartRedis(t)
	r := testRedis(t, srv.Addr, uniquePrefix(), nil, noPing)
	x := testIndex(t, r, IndexOptions{})

	simulatedOutage(r)
	indextest.MustPut(t, x, indextest.Entry("a", 1, indextest.T0))
	r.markUp() // up, and the replay not started yet
	if err := x.Remove(ctx, indextest.Dig("a")); err != nil {
		t.Fatal(err)
	}
	if err := x.Flush(ctx); err != nil { // replays what is left
		t.Fatal(err)
	}
	if _, ok, err := x.Get(ctx, indextest.Dig("a")); ok || err != nil {
		t.Fatalf("a removed after its put is there (%v)", err)
	}
	indextest.MustUsage(t, x, 0, 0)
}

// TestIndexCloseWithRedisDown: Close does not fail or hang while Redis is
// down; the writes it could not deliver are logged.
func TestIndexCloseWithRedisDown(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	var logs testutil.SyncBuffer
	r := testRedis(t, srv.Addr, uniquePrefix(), &logs)
	x := NewIndex(r, IndexOptions{FlushInterval: -1})
	srv.Stop()
	indextest.MustPut(t, x, indextest.Entry("a", 1, indextest.T0))
	x.Touch(indextest.Dig("a"), indextest.T0)
	if err := x.Close(); err != nil {
		t.Fatalf("Close with redis down = %v", err)
	}
	if n := count(&logs, "cache index closed with writes redis never got"); n != 1 {
		t.Fatalf("lost writes logged %d times:\n%s", n, logs.String())
	}
}
