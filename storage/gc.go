package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// UsageRow is one line of the du table.
type UsageRow struct {
	// Upstream is the upstream namespace (as in the layout), Repo the
	// repository path. The row of content linked by no repository has
	// Upstream "" and Repo UnlinkedRepo; the last row, the total, has both
	// empty.
	Upstream, Repo string
	Blobs          int
	Manifests      int
	Bytes          int64
}

// UnlinkedRepo is the Repo of the UsageRow of content that no repository
// links (a fill whose link was not written, a crash).
const UnlinkedRepo = "(unlinked)"

// Usage aggregates the index per repository: content linked by several
// repositories counts in each of their rows, and once in the total, the
// last row. Rows are sorted by upstream and repository.
func (s *Store) Usage(ctx context.Context, idx Index) ([]UsageRow, error) {
	rows := make(map[[2]string]*UsageRow)
	var total UsageRow
	add := func(r *UsageRow, e IndexEntry) {
		if e.Kind == KindManifest {
			r.Manifests++
		} else {
			r.Blobs++
		}
		r.Bytes += e.Size
	}
	err := idx.Walk(ctx, ByDigest, func(e IndexEntry) (bool, error) {
		add(&total, e)
		keys := make([][2]string, 0, len(e.Repos))
		for _, k := range e.Repos {
			ns, repo := SplitRepoKey(k)
			keys = append(keys, [2]string{ns, repo})
		}
		if len(keys) == 0 {
			keys = append(keys, [2]string{"", UnlinkedRepo})
		}
		for _, k := range keys {
			r := rows[k]
			if r == nil {
				r = &UsageRow{Upstream: k[0], Repo: k[1]}
				rows[k] = r
			}
			add(r, e)
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	out := make([]UsageRow, 0, len(rows)+1)
	for _, r := range rows {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b UsageRow) int {
		if (a.Upstream == "") != (b.Upstream == "") {
			if a.Upstream == "" {
				return 1 // the unlinked row goes last, before the total
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.Upstream, b.Upstream), cmp.Compare(a.Repo, b.Repo))
	})
	return append(out, total), nil
}

// ToolIndexInfo tells a subcommand where its index came from.
type ToolIndexInfo struct {
	// Locked: a running proxy holds the index file.
	Locked bool
	// Walked: the index was built in memory from a walk of the storage
	// (the file was locked, missing or unreadable). Sizes and repositories
	// are exact; access times are the files' times, not the proxy's
	// record of reads.
	Walked bool
	// Repaired is what RebuildIndex or Reconcile fixed on the way.
	Repaired Reconcile
}

// OpenIndexForTool opens the index at path for the gc and du subcommands,
// which may run beside a proxy that holds the file (bbolt allows one
// writer process, and a reader only while no writer holds it):
//
//   - The file is free: it is opened (read-only unless write) and used as
//     is; with write it is first reconciled with the storage, or rebuilt
//     when new, and the result serves the next proxy start as well.
//   - The file is locked by a running proxy, missing or unreadable: for
//     reading, an in-memory index is built from a walk of the storage
//     (du is exact; a dry-run's expiry and LRU order follow file times).
//     For writing (gc without --dry-run) a locked file yields
//     ErrIndexLocked: removing by file times would evict content the proxy
//     knows is in use, and would leave the proxy's index counting bytes
//     that are gone. The proxy's own Evictor applies the same rules; stop
//     it to collect by hand.
//
// timeout bounds the wait for the lock (default 1s). The caller closes
// the index.
func (s *Store) OpenIndexForTool(ctx context.Context, path string, write bool, timeout time.Duration) (Index, ToolIndexInfo, error) {
	var info ToolIndexInfo
	b, err := OpenBoltIndex(path, BoltOptions{ReadOnly: !write, Timeout: timeout, FlushInterval: -1})
	switch {
	case err == nil && write:
		if b.NeedsRebuild() {
			info.Repaired, err = s.RebuildIndex(ctx, b, nil)
		} else {
			info.Repaired, err = s.Reconcile(ctx, b)
		}
		if err != nil {
			return nil, info, errors.Join(err, b.Close())
		}
		return b, info, nil
	case err == nil:
		return b, info, nil
	case errors.Is(err, ErrIndexLocked):
		info.Locked = true
		if write {
			return nil, info, err
		}
	case write:
		return nil, info, err
	}
	m := NewMemIndex()
	info.Walked = true
	if info.Repaired, err = s.RebuildIndex(ctx, m, nil); err != nil {
		return nil, info, err
	}
	return m, info, nil
}
