package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Reasons an entry is removed, as in Report.Reason.
const (
	ReasonExpired  = "expired"
	ReasonSize     = "size"
	ReasonMinFree  = "min-free"
	ReasonManifest = "manifest of evicted blob"
)

// EvictOptions are the cache's lifecycle rules.
type EvictOptions struct {
	// MaxSize bounds the stored bytes (blobs and manifests); <= 0: no bound.
	MaxSize int64
	// MinFree is the free space to keep on the disk FreeSpace measures;
	// <= 0 or a nil FreeSpace: no such rule.
	MinFree int64
	// FreeSpace returns the free bytes of the cache's disk: statfs of the
	// cache directory for the filesystem driver, nil for remote drivers.
	FreeSpace func() (int64, error)
	// Inactive is how long content may go unread before it expires; <= 0:
	// never.
	Inactive time.Duration
	// Pinned reports content being served or filled, which is never
	// removed. Default: nothing is pinned.
	Pinned func(digest.Digest) bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Log receives one line per pass that removed something, and the
	// failures of background passes. Default: discarded.
	Log func(msg string, fields map[string]any)
	// Interval is how often Run makes a pass without being kicked, so
	// that content expires and free space is watched. Default 10m.
	Interval time.Duration
	// OnPass is told the report of every pass that removed something
	// (metrics); Plan never calls it. Default: nobody.
	OnPass func(Report)
	// Lead says whether this process may run a pass now, for replicas
	// that share one index and one storage and evict one at a time (a
	// cluster lease, cluster.Redis.Leader). When it may, Lead returns the
	// context the pass runs on (ended when the leadership is lost) and a
	// release function called when the pass ends. A pass it refuses is
	// skipped: quietly for Run's passes and MakeRoom (another replica
	// evicts), with ErrEvictingElsewhere for Pass; Plan removes nothing
	// and never asks. Default: always lead (one process).
	Lead func(ctx context.Context) (lctx context.Context, release func(), ok bool)
}

// ErrEvictingElsewhere reports a pass that was not run because another
// replica holds the eviction lease (EvictOptions.Lead).
var ErrEvictingElsewhere = errors.New("eviction: another replica is evicting; try again later")

func (o EvictOptions) withDefaults() EvictOptions {
	if o.Pinned == nil {
		o.Pinned = func(digest.Digest) bool { return false }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = func(string, map[string]any) {}
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Minute
	}
	if o.OnPass == nil {
		o.OnPass = func(Report) {}
	}
	if o.Lead == nil {
		o.Lead = func(ctx context.Context) (context.Context, func(), bool) { return ctx, func() {}, true }
	}
	return o
}

// Report says what a pass removed (or, from Plan, would remove).
type Report struct {
	// Removed lists the entries in the order they were removed.
	Removed []IndexEntry
	// Bytes is the sum of their sizes.
	Bytes int64
	// Reason tells why each was removed: ReasonExpired, ReasonSize,
	// ReasonMinFree or ReasonManifest.
	Reason map[digest.Digest]string
	// Before and After are the stored bytes the index counted before the
	// pass and after its removals.
	Before, After int64
}

// Evictor keeps the cache within its rules: it removes expired content,
// then least recently used content while the cache is over MaxSize or the
// disk under MinFree. Passes run in the background (Run) when kicked or
// periodically; the mirror only calls Index.Touch and Kick, so a hit never
// waits for eviction.
type Evictor struct {
	store *Store
	idx   Index
	opts  EvictOptions
	kick  chan struct{}
	pass  sync.Mutex
	// refused is signalled when Lead refused a pass: content committed
	// meanwhile may be over the bound once the leader's pass is over, so
	// Run tries again shortly (refusedRetry) until a pass runs here.
	refused chan struct{}
}

// refusedRetry is how soon Run tries a pass again after Lead refused one.
const refusedRetry = time.Second

// NewEvictor returns an Evictor applying opts to the content idx records
// in store.
func NewEvictor(store *Store, idx Index, opts EvictOptions) (*Evictor, error) {
	if store == nil || idx == nil {
		return nil, errors.New("evictor: nil store or index")
	}
	if opts.MinFree > 0 && opts.FreeSpace == nil {
		return nil, errors.New("evictor: MinFree needs FreeSpace")
	}
	return &Evictor{store: store, idx: idx, opts: opts.withDefaults(), kick: make(chan struct{}, 1), refused: make(chan struct{}, 1)}, nil
}

// Fits reports whether a blob of size bytes can be kept at all: a larger
// one is streamed to the client and not committed.
func (e *Evictor) Fits(size int64) bool {
	return e.opts.MaxSize <= 0 || size <= e.opts.MaxSize
}

// Kick asks for a pass soon; it never blocks, and kicks that arrive while
// a pass is pending are coalesced into it.
func (e *Evictor) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Remove removes the content d now, outside of any pass, as a pass
// would (its index entry, its data, its repository links): content deleted
// upstream. It removes nothing while d is pinned (a fill or a read in
// progress: a later pass removes it once it is not) or when the index
// does not know d, and reports whether it removed it. Removals and passes
// of one Evictor never overlap; Lead is not asked (one digest, and the
// index's operations are atomic for replicas too). Manifests that
// reference d stay: their other content is still good, and a pull of
// them fetches d again (or learns it is gone).
func (e *Evictor) Remove(ctx context.Context, d digest.Digest) (bool, error) {
	e.pass.Lock()
	defer e.pass.Unlock()
	if e.opts.Pinned(d) {
		return false, nil
	}
	en, ok, err := e.idx.Get(ctx, d)
	if err != nil || !ok {
		return false, err
	}
	if err := e.store.removeEntry(ctx, e.idx, en, e.opts.Log); err != nil {
		return false, err
	}
	return true, nil
}

// Run makes a pass on every Kick and every Interval until ctx ends, and
// shortly after a pass Lead refused (another replica was evicting, and
// what this one committed meanwhile may be over the bound).
func (e *Evictor) Run(ctx context.Context) {
	t := time.NewTicker(e.opts.Interval)
	defer t.Stop()
	retry := time.NewTimer(refusedRetry)
	retry.Stop()
	for {
		select {
		case <-ctx.Done():
			retry.Stop()
			return
		case <-e.refused:
			retry.Reset(refusedRetry)
			continue
		case <-e.kick:
		case <-t.C:
		case <-retry.C:
		}
		if _, _, err := e.lead(ctx, 0); err != nil && ctx.Err() == nil {
			e.opts.Log("cache eviction failed", map[string]any{"error": err.Error()})
		}
	}
}

// Pass runs one pass now and returns what it removed. Passes of one
// Evictor never overlap. When Lead refuses, nothing is removed and the
// error is ErrEvictingElsewhere.
func (e *Evictor) Pass(ctx context.Context) (Report, error) {
	rep, led, err := e.lead(ctx, 0)
	if !led {
		return rep, ErrEvictingElsewhere
	}
	return rep, err
}

// MakeRoom runs a pass that also leaves room for incoming bytes about to
// be committed, so that the stored bytes stay within MaxSize at all times
// rather than going over until the next pass. The mirror calls it from a
// fill, after the bytes were verified and before they are committed:
// never on a hit. When Lead refuses, the pass is skipped (the replica
// evicting keeps the bound, without counting these bytes).
func (e *Evictor) MakeRoom(ctx context.Context, incoming int64) (Report, error) {
	rep, _, err := e.lead(ctx, incoming)
	return rep, err
}

// lead runs a pass if Lead lets it; led reports whether it did.
func (e *Evictor) lead(ctx context.Context, incoming int64) (rep Report, led bool, err error) {
	e.pass.Lock()
	defer e.pass.Unlock()
	lctx, release, ok := e.opts.Lead(ctx)
	if !ok {
		select {
		case e.refused <- struct{}{}:
		default:
		}
		return Report{}, false, nil
	}
	defer release()
	rep, err = e.store.evict(lctx, e.idx, e.opts, true, incoming)
	if err != nil && lctx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("eviction stopped: leadership lost: %w", err)
	}
	if len(rep.Removed) > 0 {
		fields := map[string]any{"removed": len(rep.Removed), "bytes": rep.Bytes, "before": rep.Before, "after": rep.After}
		for _, r := range rep.Reason {
			fields[reasonField(r)] = fieldInt(fields[reasonField(r)]) + 1
		}
		e.opts.Log("cache eviction", fields)
		e.opts.OnPass(rep)
	}
	return rep, true, err
}

// reasonField names the log field counting a reason.
func reasonField(reason string) string {
	switch reason {
	case ReasonMinFree:
		return "min_free"
	case ReasonManifest:
		return "manifests"
	}
	return reason
}

func fieldInt(v any) int {
	n, _ := v.(int)
	return n
}

// Plan returns what an eviction pass with opts would remove now, without
// removing anything (gc --dry-run). A Pass that follows on an unchanged
// index removes exactly this.
func (s *Store) Plan(ctx context.Context, idx Index, opts EvictOptions) (Report, error) {
	return s.evict(ctx, idx, opts.withDefaults(), false, 0)
}

// planner decides a pass; with apply it also removes.
type planner struct {
	s       *Store
	idx     Index
	opts    EvictOptions
	apply   bool
	removed map[digest.Digest]bool
	rep     Report
	usage   int64
	free    int64
	minFree bool
}

func (s *Store) evict(ctx context.Context, idx Index, opts EvictOptions, apply bool, incoming int64) (Report, error) {
	p := &planner{s: s, idx: idx, opts: opts, apply: apply, removed: make(map[digest.Digest]bool)}
	p.rep.Reason = make(map[digest.Digest]string)
	if err := idx.Flush(ctx); err != nil {
		return p.rep, fmt.Errorf("eviction: %w", err)
	}
	usage, _, err := idx.Usage(ctx)
	if err != nil {
		return p.rep, fmt.Errorf("eviction: %w", err)
	}
	p.usage, p.rep.Before = usage+incoming, usage
	if opts.MinFree > 0 && opts.FreeSpace != nil {
		// Measured once; removals are added to it, so that Plan and Pass
		// agree and a slow statfs is not repeated per blob.
		free, err := opts.FreeSpace()
		if err != nil {
			opts.Log("cache eviction: free space unknown; min-free rule skipped", map[string]any{"error": err.Error()})
		} else {
			p.free, p.minFree = free-incoming, true
		}
	}
	err = p.run(ctx)
	p.rep.After = p.usage - incoming
	return p.rep, err
}

func (p *planner) run(ctx context.Context) error {
	if p.opts.Inactive > 0 {
		cutoff := p.opts.Now().Add(-p.opts.Inactive)
		err := p.idx.Walk(ctx, ByLastAccess, func(e IndexEntry) (bool, error) {
			if !e.LastAccess.Before(cutoff) {
				return false, nil
			}
			return true, p.remove(ctx, e, ReasonExpired)
		})
		if err != nil {
			return fmt.Errorf("eviction: expiry: %w", err)
		}
	}
	if p.over() == "" {
		return nil
	}
	err := p.idx.Walk(ctx, ByLastAccess, func(e IndexEntry) (bool, error) {
		reason := p.over()
		if reason == "" {
			return false, nil
		}
		return true, p.remove(ctx, e, reason)
	})
	if err != nil {
		return fmt.Errorf("eviction: %w", err)
	}
	if reason := p.over(); reason != "" {
		p.opts.Log("cache eviction: bound not met, everything left is in use", map[string]any{
			"rule": reason, "bytes": p.usage, "max_size": p.opts.MaxSize, "free": p.free, "min_free": p.opts.MinFree})
	}
	return nil
}

// over returns the rule the cache breaks now, or "".
func (p *planner) over() string {
	switch {
	case p.opts.MaxSize > 0 && p.usage > p.opts.MaxSize:
		return ReasonSize
	case p.minFree && p.free < p.opts.MinFree:
		return ReasonMinFree
	}
	return ""
}

// remove removes e, unless pinned or already removed, and then the
// manifests that reference it: a manifest whose blob is gone cannot be
// pulled from the cache, and an index whose child manifest is gone
// neither.
func (p *planner) remove(ctx context.Context, e IndexEntry, reason string) error {
	if p.removed[e.Digest] || p.opts.Pinned(e.Digest) {
		return nil
	}
	if p.apply {
		if err := p.s.removeEntry(ctx, p.idx, e, p.opts.Log); err != nil {
			return err
		}
	}
	p.removed[e.Digest] = true
	p.rep.Removed = append(p.rep.Removed, e)
	p.rep.Bytes += e.Size
	p.rep.Reason[e.Digest] = reason
	p.usage -= e.Size
	p.free += e.Size
	refs, err := p.idx.Referrers(ctx, e.Digest)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if p.removed[r] {
			continue
		}
		re, ok, err := p.idx.Get(ctx, r)
		if err != nil {
			return err
		}
		if ok {
			if err := p.remove(ctx, re, ReasonManifest); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeEntry removes content: its index entry first (so no new access
// is recorded for it), then its data, then its repository links. Links are
// deleted because nothing else would ever remove them; a link that
// survives (a crash, a failure) is harmless, since the mirror stats the
// blob itself and refetches what is missing. Tag records stay: they are
// stale fallbacks, and a tag whose manifest is gone is refetched.
func (s *Store) removeEntry(ctx context.Context, idx Index, e IndexEntry, log func(string, map[string]any)) error {
	if err := idx.Remove(ctx, e.Digest); err != nil {
		return err
	}
	if err := s.DeleteBlob(ctx, e.Digest); err != nil {
		if perr := idx.Put(ctx, e); perr != nil {
			err = errors.Join(err, perr)
		}
		return err
	}
	for _, r := range e.Repos {
		ns, repo := SplitRepoKey(r)
		if err := s.Unlink(ctx, ns, repo, e.Digest); err != nil {
			log("cache eviction: a repository link stays (harmless: the blob is refetched when asked for)", map[string]any{"error": err.Error()})
		}
	}
	return nil
}
