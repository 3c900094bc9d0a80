package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// Options tune a Lifecycle. The zero value applies no bound.
type Options struct {
	// Evict are the bounds (size, free space, expiry) and the eviction
	// pass's hooks; Pinned is the Lifecycle's own and is ignored here.
	Evict storage.EvictOptions
	// Now is the clock of access and store times. Default time.Now.
	Now func() time.Time
	// Log receives what the lifecycle does in the background (rebuilds,
	// repairs, evictions, failures). Default: discarded.
	Log logrus.FieldLogger
	// UsageTimeout bounds one read of the index's totals for metrics and
	// the status page. Default 5s.
	UsageTimeout time.Duration
}

// Lifecycle keeps the cache within its bounds and its index in step with
// what the mirror stores and serves. It is safe for concurrent use; Open
// starts its background work and Close ends it.
type Lifecycle struct {
	store *storage.Store
	idx   storage.Index
	ev    *storage.Evictor
	now   func() time.Time
	log   logrus.FieldLogger
	pins  pins

	rebuilding atomic.Bool
	cancel     context.CancelFunc
	running    sync.WaitGroup // Add only in Open, before it returns
	closeOnce  sync.Once
	closeErr   error

	usageTimeout time.Duration
	usageErr     onceEvery

	// minFree and freeSpace are the free-space floor of the cache's disk
	// (storage.EvictOptions), for LowOnDisk.
	minFree   int64
	freeSpace func() (int64, error)
}

// rebuildable is an index that knows it starts empty or was replaced
// after damage (storage.BoltIndex); a shared index may implement it too.
type rebuildable interface {
	NeedsRebuild() bool
	MovedAside() string
}

// maintained is an index kept by several processes that repairs itself
// when it knows it lost writes (cluster.Index): a process starting does
// not walk the whole storage (a bucket, on every replica's start) to check
// it.
type maintained interface{ Maintained() bool }

// Open starts the lifecycle of store with idx. It repairs idx against the
// storage first (Store.Reconcile, after a crash), or, when idx needs a
// rebuild (new, or replaced after damage), rebuilds it in the background
// while the proxy serves (Rebuilding reports it). Eviction then runs in
// the background, kicked by Reserve and every Interval. On success the
// Lifecycle owns idx and closes it in Close; on error the caller does.
func Open(ctx context.Context, store *storage.Store, idx storage.Index, opts Options) (*Lifecycle, error) {
	if store == nil || idx == nil {
		return nil, errors.New("cache: nil store or index")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		discard := logrus.New()
		discard.SetOutput(io.Discard)
		opts.Log = discard
	}
	if opts.UsageTimeout <= 0 {
		opts.UsageTimeout = 5 * time.Second
	}
	l := &Lifecycle{store: store, idx: idx, now: opts.Now, log: opts.Log, usageTimeout: opts.UsageTimeout,
		minFree: opts.Evict.MinFree, freeSpace: opts.Evict.FreeSpace}
	l.usageErr.every = time.Minute
	evict := opts.Evict
	evict.Pinned = l.pins.held
	if evict.Log == nil {
		evict.Log = func(msg string, fields map[string]any) { l.log.WithFields(fields).Info(msg) }
	}
	ev, err := storage.NewEvictor(store, idx, evict)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	l.ev = ev
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	if r, ok := idx.(rebuildable); ok && r.NeedsRebuild() {
		l.startRebuild(runCtx, r.MovedAside())
	} else if m, ok := idx.(maintained); !ok || !m.Maintained() {
		l.repair(ctx)
	}
	l.running.Add(1)
	go func() {
		defer l.running.Done()
		ev.Run(runCtx)
	}()
	return l, nil
}

// startRebuild fills the index from a walk of the storage in the
// background; Close cancels it and waits for it.
func (l *Lifecycle) startRebuild(ctx context.Context, movedAside string) {
	if movedAside != "" {
		l.log.WithField("movedAside", movedAside).Warn("cache index was damaged; rebuilding it from the storage while serving")
	} else {
		l.log.Info("building the cache index from the storage while serving")
	}
	l.rebuilding.Store(true)
	l.running.Add(1)
	go func() {
		defer l.running.Done()
		defer l.rebuilding.Store(false)
		start := time.Now()
		rec, err := l.store.RebuildIndex(ctx, l.idx, nil)
		switch {
		case ctx.Err() != nil:
			l.log.Info("cache index rebuild stopped: shutting down (the next start rebuilds it)")
		case err != nil:
			l.log.WithError(err).Error("rebuilding the cache index")
		default:
			l.log.WithFields(logrus.Fields{"added": rec.Added, "removed": rec.Removed, "dur_ms": time.Since(start).Milliseconds()}).Info("cache index rebuilt")
			l.ev.Kick()
		}
	}()
}

// repair checks the index against the storage at start.
func (l *Lifecycle) repair(ctx context.Context) {
	rec, err := l.store.Reconcile(ctx, l.idx)
	switch {
	case err != nil:
		l.log.WithError(err).Warn("checking the cache index against the storage")
	case rec.Added+rec.Removed > 0:
		l.log.WithFields(logrus.Fields{"added": rec.Added, "removed": rec.Removed}).Warn("cache index repaired: it disagreed with the storage (after a crash)")
	}
}

// Admit reports whether content of size bytes may be stored at all: a
// blob larger than the whole size bound is streamed to its clients and
// not kept.
func (l *Lifecycle) Admit(size int64) bool { return l.ev.Fits(size) }

// Reserve makes room for size bytes about to be committed, so that the
// cache stays within its size bound at all times. The mirror calls it
// from a fill, after the bytes were verified: never on a hit.
func (l *Lifecycle) Reserve(ctx context.Context, size int64) error {
	_, err := l.ev.MakeRoom(ctx, size)
	return err
}

// Committed records content just committed to the cache for a
// repository.
func (l *Lifecycle) Committed(ctx context.Context, c storage.Content) error {
	if err := l.idx.Put(ctx, c.Entry(l.now())); err != nil {
		return fmt.Errorf("recording %s in the cache index: %w", c.Digest, err)
	}
	// Room was made before the commit, for this content alone: another
	// fill (here or on another replica) that reserved at the same time did
	// not count it. A pass soon after brings the total back within the
	// bound; it reads the totals and stops when there is nothing to do.
	l.ev.Kick()
	return nil
}

// Linked records that a repository (namespace ns, path repo) was found to
// contain d, which was already cached.
func (l *Lifecycle) Linked(ctx context.Context, d digest.Digest, ns, repo string) error {
	if err := l.idx.AddRepo(ctx, d, storage.RepoKey(ns, repo)); err != nil {
		return fmt.Errorf("recording that %s/%s links %s in the cache index: %w", ns, repo, d, err)
	}
	return nil
}

// Unlinked records that repository ns/repo no longer contains d (it was
// deleted upstream through the proxy, and the mirror removed the link).
// When no other repository links d, its content goes at once: data, index
// entry and remaining links (storage.Evictor.Remove), unless it is in use
// (pinned by a fill or a read in progress), in which case eviction takes
// it later like any unread content. The storage is the truth about links:
// each other repository the index names is checked there, since the index
// keeps the names of repositories that were unlinked before.
func (l *Lifecycle) Unlinked(ctx context.Context, d digest.Digest, ns, repo string) error {
	e, ok, err := l.idx.Get(ctx, d)
	if err != nil {
		return fmt.Errorf("looking up %s in the cache index: %w", d, err)
	}
	if !ok {
		return nil
	}
	self := storage.RepoKey(ns, repo)
	for _, r := range e.Repos {
		if r == self {
			continue
		}
		rns, rrepo := storage.SplitRepoKey(r)
		linked, err := l.store.HasLink(ctx, rns, rrepo, d)
		if err != nil {
			return fmt.Errorf("removing %s: %w", d, err)
		}
		if linked {
			return nil
		}
	}
	removed, err := l.ev.Remove(ctx, d)
	if err != nil {
		return fmt.Errorf("removing %s: %w", d, err)
	}
	if removed {
		l.log.WithFields(logrus.Fields{"digest": d, "bytes": e.Size}).Info("content deleted upstream removed from the cache")
	}
	return nil
}

// Hit records a read of d (its access time, for eviction). It never
// blocks: accesses are batched and written in the background.
func (l *Lifecycle) Hit(d digest.Digest) { l.idx.Touch(d, l.now()) }

// Pin marks d as in use (being filled or served) until the returned
// function is called: eviction never removes pinned content.
func (l *Lifecycle) Pin(d digest.Digest) (unpin func()) { return l.pins.pin(d) }

// Repos returns the repositories the index knows to link d (RepoKey
// values, possibly some that were unlinked since); known is false while
// the index is being rebuilt or when it has no entry for d.
func (l *Lifecycle) Repos(ctx context.Context, d digest.Digest) ([]string, bool, error) {
	if l.rebuilding.Load() {
		return nil, false, nil
	}
	e, ok, err := l.idx.Get(ctx, d)
	if err != nil || !ok {
		return nil, false, err
	}
	return e.Repos, true, nil
}

// LowOnDisk reports whether the cache's disk has less free space than
// the minimum it must keep (storage.EvictOptions.MinFree): one statfs.
// Without that rule, or when the free space is unknown, it is false.
func (l *Lifecycle) LowOnDisk() bool {
	if l.minFree <= 0 || l.freeSpace == nil {
		return false
	}
	free, err := l.freeSpace()
	return err == nil && free < l.minFree
}

// Rebuilding reports whether the index is being rebuilt from the storage
// (readiness is withheld meanwhile).
func (l *Lifecycle) Rebuilding() bool { return l.rebuilding.Load() }

// Collect runs one eviction pass now (gc on a running proxy) and returns
// what it removed.
func (l *Lifecycle) Collect(ctx context.Context) (storage.Report, error) { return l.ev.Pass(ctx) }

// Usage returns the stored bytes and objects the index counts.
func (l *Lifecycle) Usage(ctx context.Context) (bytes, count int64, err error) {
	return l.idx.Usage(ctx)
}

// Totals is Usage for metrics and the status page, bounded by
// UsageTimeout: a failure is logged with its cause (once per minute while
// it lasts) and reads as zero.
func (l *Lifecycle) Totals() (bytes, count int64) {
	ctx, cancel := context.WithTimeout(context.Background(), l.usageTimeout)
	defer cancel()
	bytes, count, err := l.idx.Usage(ctx)
	if err != nil {
		if l.usageErr.due(l.now()) {
			l.log.WithError(err).Warn("reading the cache index's totals for metrics (logged once a minute while it fails)")
		}
		return 0, 0
	}
	return bytes, count
}

// Close stops eviction and a rebuild in progress, waits for them, and
// writes the batched access times and closes the index.
func (l *Lifecycle) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		l.running.Wait()
		l.closeErr = l.idx.Close()
	})
	return l.closeErr
}

// pins counts the users of each digest in use.
type pins struct {
	mu sync.Mutex
	n  map[digest.Digest]int
}

func (p *pins) pin(d digest.Digest) func() {
	p.mu.Lock()
	if p.n == nil {
		p.n = map[digest.Digest]int{}
	}
	p.n[d]++
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			if p.n[d]--; p.n[d] <= 0 {
				delete(p.n, d)
			}
			p.mu.Unlock()
		})
	}
}

func (p *pins) held(d digest.Digest) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[d] > 0
}

// onceEvery says whether a repeated event is due to be logged again.
type onceEvery struct {
	mu    sync.Mutex
	every time.Duration
	last  time.Time
}

func (o *onceEvery) due(now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.last.IsZero() && now.Sub(o.last) < o.every {
		return false
	}
	o.last = now
	return true
}
