package storage

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// MemIndex is an Index held in memory. The subcommands build one from a
// walk of the storage when the proxy holds the index file; tests use it;
// and it is the model of a shared implementation (Redis: a hash per entry,
// a sorted set by access time, a set of referrers per child, counters for
// usage), since it keeps no state that a walk cannot rebuild.
type MemIndex struct {
	touches TouchBatch

	mu      sync.RWMutex
	entries map[digest.Digest]IndexEntry
	refs    map[digest.Digest]map[digest.Digest]struct{} // child → manifests
	bytes   int64
	closed  bool
}

// NewMemIndex returns an empty MemIndex.
func NewMemIndex() *MemIndex {
	return &MemIndex{
		entries: make(map[digest.Digest]IndexEntry),
		refs:    make(map[digest.Digest]map[digest.Digest]struct{}),
	}
}

var _ Index = (*MemIndex)(nil)

func (m *MemIndex) check(ctx context.Context) error {
	if m.closed {
		return ErrIndexClosed
	}
	return ctx.Err()
}

// Put inserts e or merges it into the stored entry.
func (m *MemIndex) Put(ctx context.Context, e IndexEntry) error {
	if err := e.Validate(); err != nil {
		return err
	}
	e = e.Normalized()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return err
	}
	if old, ok := m.entries[e.Digest]; ok {
		e = merge(old, e)
		m.unlinkChildren(old)
		m.bytes -= old.Size
	}
	m.entries[e.Digest] = e
	m.bytes += e.Size
	for _, c := range e.Children {
		if m.refs[c] == nil {
			m.refs[c] = make(map[digest.Digest]struct{})
		}
		m.refs[c][e.Digest] = struct{}{}
	}
	return nil
}

func (m *MemIndex) unlinkChildren(e IndexEntry) {
	for _, c := range e.Children {
		delete(m.refs[c], e.Digest)
		if len(m.refs[c]) == 0 {
			delete(m.refs, c)
		}
	}
}

// Touch records an access; Flush writes it.
func (m *MemIndex) Touch(d digest.Digest, at time.Time) { m.touches.Add(d, at) }

// AddRepo records that repo links d.
func (m *MemIndex) AddRepo(ctx context.Context, d digest.Digest, repo string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return err
	}
	e, ok := m.entries[d]
	if !ok || slices.Contains(e.Repos, repo) {
		return nil
	}
	e.Repos = sortedUnique(append(slices.Clone(e.Repos), repo))
	m.entries[d] = e
	return nil
}

// Remove deletes the entry of d.
func (m *MemIndex) Remove(ctx context.Context, d digest.Digest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return err
	}
	if old, ok := m.entries[d]; ok {
		m.unlinkChildren(old)
		m.bytes -= old.Size
		delete(m.entries, d)
	}
	return nil
}

// Get returns the entry of d.
func (m *MemIndex) Get(ctx context.Context, d digest.Digest) (IndexEntry, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(ctx); err != nil {
		return IndexEntry{}, false, err
	}
	e, ok := m.entries[d]
	return cloneEntry(e), ok, nil
}

// Usage returns the stored bytes and entry count.
func (m *MemIndex) Usage(ctx context.Context) (int64, int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(ctx); err != nil {
		return 0, 0, err
	}
	return m.bytes, int64(len(m.entries)), nil
}

// Walk visits a snapshot of the entries in order; fn runs without the
// lock held, so it may change the index.
func (m *MemIndex) Walk(ctx context.Context, order Order, fn func(IndexEntry) (bool, error)) error {
	m.mu.RLock()
	if err := m.check(ctx); err != nil {
		m.mu.RUnlock()
		return err
	}
	all := make([]IndexEntry, 0, len(m.entries))
	for _, e := range m.entries {
		all = append(all, cloneEntry(e))
	}
	m.mu.RUnlock()
	slices.SortFunc(all, func(a, b IndexEntry) int {
		if order == ByLastAccess {
			if c := cmp.Compare(accessNanos(a.LastAccess), accessNanos(b.LastAccess)); c != 0 {
				return c
			}
		}
		return cmp.Compare(a.Digest, b.Digest)
	})
	for _, e := range all {
		if err := ctx.Err(); err != nil {
			return err
		}
		more, err := fn(e)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// Referrers returns the manifests listing d as a child, sorted.
func (m *MemIndex) Referrers(ctx context.Context, d digest.Digest) ([]digest.Digest, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	var out []digest.Digest
	for p := range m.refs[d] {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// Flush writes the pending accesses.
func (m *MemIndex) Flush(ctx context.Context) error {
	pending := m.touches.Take()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		m.touches.Restore(pending)
		return err
	}
	for d, at := range pending {
		if e, ok := m.entries[d]; ok && at.After(e.LastAccess) {
			e.LastAccess = at
			m.entries[d] = e
		}
	}
	return nil
}

// Close flushes and releases the index.
func (m *MemIndex) Close() error {
	if err := m.Flush(context.Background()); err != nil && !errors.Is(err, ErrIndexClosed) {
		return err
	}
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}
