package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
)

// IndexOptions tune NewIndex. The zero value is ready to use.
type IndexOptions struct {
	// FlushInterval is how often batched accesses are written (and the
	// index checked for a Redis that lost it). Default 30s; negative
	// disables the background work on a timer (Flush and Close still
	// write; recovery still replays).
	FlushInterval time.Duration
	// JournalLimit bounds the writes kept in memory while Redis is down.
	// Past it the journal is dropped and the index is reconciled with the
	// storage when Redis answers again. Default 100000.
	JournalLimit int
	// Reconcile repairs the index from the storage (Store.Reconcile). It
	// is called, on the index's goroutine, when Redis answers again after
	// the journal overflowed, and when Redis lost the index (it restarted
	// without persistence; the replica that notices first reconciles).
	// Default: nothing is repaired (logged).
	Reconcile func(ctx context.Context) error
	// PageSize is how many entries Walk reads per round trip. Default 256.
	PageSize int
	// Log receives what the index does in the background. Default: the
	// Redis connection's logger.
	Log logrus.FieldLogger
}

// Index is a storage.Index shared by the replicas through Redis (the key
// layout is described in index_scripts.go). Writes of several processes
// at once are atomic per operation, totals included. While Redis is down
// writes are journaled in memory and replayed, in order, when it answers
// again; accesses stay batched; reads fail.
type Index struct {
	r    *Redis
	opts IndexOptions
	log  logrus.FieldLogger

	entryPrefix, refsPrefix                   string
	accessKey, digestsKey, usageKey, epochKey string

	touches storage.TouchBatch
	journal journal
	epoch   string // the idx:epoch seen last; guarded by replay
	// fresh says this replica found no index in Redis at start and
	// created its epoch: the index must be built from the storage.
	fresh  bool
	replay sync.Mutex

	kick      chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ storage.Index = (*Index)(nil)

// ErrDegraded reports a write of access times that waits for Redis.
var ErrDegraded = errors.New("cluster: shared index waits for redis; kept in memory")

// closeTimeout bounds the last writes of Close.
const closeTimeout = 10 * time.Second

// NewIndex returns the index kept in Redis under r's prefix. It records
// the index's epoch when Redis answers and starts its background work
// (replay on recovery, periodic flush); Close ends it. The Index does not
// close r.
func NewIndex(r *Redis, opts IndexOptions) *Index {
	if opts.FlushInterval == 0 {
		opts.FlushInterval = 30 * time.Second
	}
	if opts.JournalLimit <= 0 {
		opts.JournalLimit = 100000
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 256
	}
	if opts.Log == nil {
		opts.Log = r.log
	}
	x := &Index{
		r: r, opts: opts, log: opts.Log,
		entryPrefix: r.Key("idx", "entry", ""), refsPrefix: r.Key("idx", "refs", ""),
		accessKey: r.Key("idx", "access"), digestsKey: r.Key("idx", "digests"),
		usageKey: r.Key("idx", "usage"), epochKey: r.Key("idx", "epoch"),
		kick: make(chan struct{}, 1),
	}
	x.journal.limit = opts.JournalLimit
	ctx, cancel := context.WithCancel(context.Background())
	x.cancel = cancel
	if r.Up() {
		sctx, scancel := context.WithTimeout(ctx, closeTimeout)
		// A failure leaves the epoch unknown: it is learnt on recovery.
		x.fresh, _ = x.checkEpoch(sctx) //nolint:errcheck // see above
		scancel()
	}
	r.OnRecover(func(context.Context) { x.kickLoop() })
	x.wg.Add(1)
	go x.loop(ctx)
	return x
}

// NeedsRebuild reports that Redis held no index when this replica
// started (the first replica of a new Redis, or one that restarted empty):
// the cache lifecycle then builds it from a walk of the storage, in the
// background. Only the replica that created the index's epoch does.
func (x *Index) NeedsRebuild() bool { return x.fresh }

// MovedAside is "": nothing is moved aside in Redis.
func (x *Index) MovedAside() string { return "" }

// Maintained reports that the index is kept by every replica and repairs
// itself when it knows it lost writes (journal overflow, Redis emptied):
// a replica starting does not walk the storage to check it.
func (x *Index) Maintained() bool { return true }

func (x *Index) entryKey(d digest.Digest) string { return x.entryPrefix + string(d) }

func (x *Index) check(ctx context.Context) error {
	if x.closed.Load() {
		return storage.ErrIndexClosed
	}
	return ctx.Err()
}

// Put inserts e or merges it into the stored entry.
func (x *Index) Put(ctx context.Context, e storage.IndexEntry) error {
	if err := e.Validate(); err != nil {
		return err
	}
	return x.write(ctx, &op{put: true, e: e.Normalized()})
}

// PutMany puts entries in one round trip (RebuildIndex uses it); each
// entry is merged atomically.
func (x *Index) PutMany(ctx context.Context, es []storage.IndexEntry) error {
	ops := make([]*op, len(es))
	for i, e := range es {
		if err := e.Validate(); err != nil {
			return err
		}
		ops[i] = &op{put: true, e: e.Normalized()}
	}
	return x.write(ctx, ops...)
}

// Touch records an access in memory; Flush writes it.
func (x *Index) Touch(d digest.Digest, at time.Time) { x.touches.Add(d, at) }

// AddRepo records that repo links d, when d is in the index.
func (x *Index) AddRepo(ctx context.Context, d digest.Digest, repo string) error {
	return x.write(ctx, &op{d: d, repo: repo})
}

// Remove deletes the entry of d and its referrer edges.
func (x *Index) Remove(ctx context.Context, d digest.Digest) error {
	return x.write(ctx, &op{remove: true, d: d})
}

// Get returns the entry of d.
func (x *Index) Get(ctx context.Context, d digest.Digest) (storage.IndexEntry, bool, error) {
	if err := x.check(ctx); err != nil {
		return storage.IndexEntry{}, false, err
	}
	h, err := x.r.c.HGetAll(ctx, x.entryKey(d)).Result()
	if x.r.Observe(err) != nil {
		return storage.IndexEntry{}, false, err
	}
	return parseEntry(d, h)
}

// Usage returns the stored bytes and entry count.
func (x *Index) Usage(ctx context.Context) (bytes, count int64, err error) {
	if err := x.check(ctx); err != nil {
		return 0, 0, err
	}
	v, err := x.r.c.HMGet(ctx, x.usageKey, "bytes", "count").Result()
	if x.r.Observe(err) != nil {
		return 0, 0, err
	}
	n := make([]int64, 2)
	for i, s := range v {
		if s, ok := s.(string); ok {
			if n[i], err = strconv.ParseInt(s, 10, 64); err != nil {
				return 0, 0, fmt.Errorf("index usage: %w", err)
			}
		}
	}
	return n[0], n[1], nil
}

// Walk visits the entries in order, PageSize per round trip, after an
// exclusive cursor: fn runs between reads and may change the index.
func (x *Index) Walk(ctx context.Context, order storage.Order, fn func(storage.IndexEntry) (bool, error)) error {
	key := x.digestsKey
	if order == storage.ByLastAccess {
		key = x.accessKey
	}
	cursor := "-"
	for {
		if err := x.check(ctx); err != nil {
			return err
		}
		members, err := x.r.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: cursor, Stop: "+", ByLex: true, Count: int64(x.opts.PageSize)}).Result()
		if x.r.Observe(err) != nil {
			return err
		}
		if len(members) == 0 {
			return nil
		}
		cursor = "(" + members[len(members)-1]
		page, err := x.entries(ctx, members, order == storage.ByLastAccess)
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := ctx.Err(); err != nil {
				return err
			}
			if more, err := fn(e); err != nil || !more {
				return err
			}
		}
		if len(members) < x.opts.PageSize {
			return nil
		}
	}
}

// entries reads the entries of a page of members in one round trip;
// entries removed meanwhile are left out.
func (x *Index) entries(ctx context.Context, members []string, byAccess bool) ([]storage.IndexEntry, error) {
	ds := make([]digest.Digest, len(members))
	cmds := make([]*redis.MapStringStringCmd, len(members))
	_, err := x.r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			if byAccess && len(m) > accessMemberLen {
				m = m[accessMemberLen:]
			}
			ds[i] = digest.Digest(m)
			cmds[i] = p.HGetAll(ctx, x.entryKey(ds[i]))
		}
		return nil
	})
	if x.r.Observe(err) != nil {
		return nil, err
	}
	out := make([]storage.IndexEntry, 0, len(members))
	for i, cmd := range cmds {
		e, ok, err := parseEntry(ds[i], cmd.Val())
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// Referrers returns the manifests listing d as a child, sorted.
func (x *Index) Referrers(ctx context.Context, d digest.Digest) ([]digest.Digest, error) {
	if err := x.check(ctx); err != nil {
		return nil, err
	}
	ms, err := x.r.c.SMembers(ctx, x.refsPrefix+string(d)).Result()
	if x.r.Observe(err) != nil {
		return nil, err
	}
	out := make([]digest.Digest, 0, len(ms))
	for _, m := range ms {
		out = append(out, digest.Digest(m))
	}
	slices.Sort(out)
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// Flush replays the journal, if any, then writes the batched accesses.
// While Redis is down they are kept (ErrDegraded) for a later flush.
func (x *Index) Flush(ctx context.Context) error {
	if err := x.check(ctx); err != nil {
		return err
	}
	return x.flush(ctx)
}

func (x *Index) flush(ctx context.Context) error {
	if err := x.drain(ctx); err != nil {
		return err
	}
	pending := x.touches.Take()
	if len(pending) == 0 {
		return nil
	}
	if !x.r.Up() {
		x.touches.Restore(pending)
		return ErrDegraded
	}
	for _, err := range x.run(ctx, x.touchCalls(pending)) {
		if err != nil {
			// The script only raises times: writing some twice is harmless.
			x.touches.Restore(pending)
			return fmt.Errorf("writing access times: %w", err)
		}
	}
	return nil
}

// Close ends the background work, writes what is pending when Redis
// answers (journal and accesses) and releases the index. Writes still
// journaled are lost (logged): the next reconcile repairs the index.
func (x *Index) Close() error {
	x.closeOnce.Do(func() {
		x.cancel()
		x.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		err := x.flush(ctx)
		if n := x.journal.len(); n > 0 {
			x.log.WithField("writes", n).Warn("cache index closed with writes redis never got; the next reconcile repairs the index")
		}
		x.closed.Store(true)
		if err != nil && !errors.Is(err, ErrDegraded) {
			x.closeErr = err
		}
	})
	return x.closeErr
}
