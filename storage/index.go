package storage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Kinds of index entries.
const (
	// KindBlob is a layer or config blob.
	KindBlob = "blob"
	// KindManifest is a manifest or index stored by digest.
	KindManifest = "manifest"
)

// IndexEntry is what the index knows about one stored blob or manifest:
// enough to bound the cache's size, expire what nobody reads and tell
// usage per repository without walking the storage.
type IndexEntry struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// Kind is KindBlob or KindManifest.
	Kind string `json:"kind"`
	// Added is when the content was stored.
	Added time.Time `json:"added"`
	// LastAccess is when the content was last served (or stored).
	LastAccess time.Time `json:"lastAccess"`
	// Repos are the repositories linking the content, as RepoKey values
	// ("<upstream namespace>/<repo>"), sorted.
	Repos []string `json:"repos,omitempty"`
	// Children are, for manifests, the config, layers and child manifests
	// they reference.
	Children []digest.Digest `json:"children,omitempty"`
}

// Order is the order in which Index.Walk visits entries.
type Order int

const (
	// ByLastAccess visits the least recently used entries first (ties by
	// digest): the eviction order.
	ByLastAccess Order = iota
	// ByDigest visits entries in digest order.
	ByDigest
)

// Index records what the storage holds. It is derived data: the storage
// driver is the truth, and RebuildIndex or Reconcile repair the index from
// it. Implementations are safe for concurrent use; BoltIndex (one process,
// a file in the cache directory) and MemIndex (tests, subcommands, and the
// model for a shared implementation that several replicas use over Redis)
// follow the same contract, tested by one suite:
//
//   - Put inserts an entry or merges it into the existing one: Size, Kind
//     and (non-nil) Children are replaced, Repos are united, Added keeps the
//     earliest and LastAccess the latest value. Merging makes Put safe to
//     race with a rebuild and with other replicas.
//   - Touch only records an access in memory (no I/O, never blocks a hit);
//     accesses are written by Flush, periodically and on Close, keeping the
//     latest time. Until then Get and Walk show the flushed state. A touch of
//     a digest that is not in the index is dropped.
//   - AddRepo on a digest that is not in the index does nothing.
//   - Remove of a missing digest is not an error. The referrer edges of the
//     removed entry's children go with it.
//   - Walk may be called while fn changes the index (fn may Remove); an
//     entry changed meanwhile may be visited twice or not at all.
type Index interface {
	Put(ctx context.Context, e IndexEntry) error
	Touch(d digest.Digest, at time.Time)
	AddRepo(ctx context.Context, d digest.Digest, repo string) error
	Remove(ctx context.Context, d digest.Digest) error
	Get(ctx context.Context, d digest.Digest) (IndexEntry, bool, error)
	// Usage returns the stored bytes and the number of entries.
	Usage(ctx context.Context) (bytes, count int64, err error)
	// Walk calls fn for every entry in order until fn returns false or an
	// error.
	Walk(ctx context.Context, order Order, fn func(IndexEntry) (bool, error)) error
	// Referrers returns the manifests that list d among their Children.
	Referrers(ctx context.Context, d digest.Digest) ([]digest.Digest, error)
	Flush(ctx context.Context) error
	Close() error
}

// ErrIndexClosed reports use of an index after Close.
var ErrIndexClosed = errors.New("index closed")

// RepoKey names a repository in IndexEntry.Repos: the upstream namespace
// (as in the layout) and the repository path, joined by '/'.
func RepoKey(ns, repo string) string { return ns + "/" + repo }

// SplitRepoKey splits a RepoKey into upstream namespace and repository.
func SplitRepoKey(key string) (ns, repo string) {
	ns, repo, _ = strings.Cut(key, "/")
	return ns, repo
}

// Validate checks an entry before any index stores it: a valid digest, a
// known kind, a size not negative.
func (e IndexEntry) Validate() error {
	if err := e.Digest.Validate(); err != nil {
		return fmt.Errorf("index entry %q: %w", e.Digest, err)
	}
	if e.Kind != KindBlob && e.Kind != KindManifest {
		return fmt.Errorf("index entry %s: kind %q is neither %q nor %q", e.Digest, e.Kind, KindBlob, KindManifest)
	}
	if e.Size < 0 {
		return fmt.Errorf("index entry %s: negative size %d", e.Digest, e.Size)
	}
	return nil
}

// Normalized is the form every index stores: UTC times without monotonic
// readings, a LastAccess no earlier than Added, sorted unique repos and
// children (nil children stay nil: none given, the stored ones stay).
func (e IndexEntry) Normalized() IndexEntry {
	e.Added = e.Added.Round(0).UTC()
	e.LastAccess = e.LastAccess.Round(0).UTC()
	if e.LastAccess.Before(e.Added) {
		e.LastAccess = e.Added
	}
	e.Repos = sortedUnique(e.Repos)
	if e.Children != nil {
		e.Children = sortedUnique(e.Children)
	}
	return e
}

func sortedUnique[T ~string](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// merge folds a new entry e into the stored one (both normalized).
func merge(old, e IndexEntry) IndexEntry {
	if !old.Added.IsZero() && (e.Added.IsZero() || old.Added.Before(e.Added)) {
		e.Added = old.Added
	}
	if old.LastAccess.After(e.LastAccess) {
		e.LastAccess = old.LastAccess
	}
	e.Repos = sortedUnique(append(slices.Clone(old.Repos), e.Repos...))
	if e.Children == nil {
		e.Children = old.Children
	}
	return e
}

func cloneEntry(e IndexEntry) IndexEntry {
	e.Repos = slices.Clone(e.Repos)
	e.Children = slices.Clone(e.Children)
	return e
}

// maxAccessTime is the last time whose Unix nanoseconds fit an int64
// (2262-04-11): UnixNano of a later one wraps around.
var maxAccessTime = time.Unix(0, math.MaxInt64)

// accessNanos is the sort key of ByLastAccess; times before 1970 sort
// first, times after maxAccessTime last.
func accessNanos(t time.Time) uint64 {
	switch {
	case t.Unix() < 0:
		return 0
	case t.After(maxAccessTime):
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

// TouchBatch collects accesses in memory between an index's flushes,
// keeping the latest time per digest. The zero value is ready to use.
type TouchBatch struct {
	mu sync.Mutex
	m  map[digest.Digest]time.Time
}

// Add records an access.
func (b *TouchBatch) Add(d digest.Digest, at time.Time) {
	at = at.Round(0).UTC()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[digest.Digest]time.Time)
	}
	if cur, ok := b.m[d]; !ok || at.After(cur) {
		b.m[d] = at
	}
}

// Take returns the pending accesses and starts a new batch.
func (b *TouchBatch) Take() map[digest.Digest]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.m
	b.m = nil
	return m
}

// Restore puts back accesses that could not be written.
func (b *TouchBatch) Restore(m map[digest.Digest]time.Time) {
	for d, at := range m {
		b.Add(d, at)
	}
}
