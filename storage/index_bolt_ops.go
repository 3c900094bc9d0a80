package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// The operations of BoltIndex and the encoding of its buckets (described
// in index_bolt.go).

func accessKey(e IndexEntry) []byte {
	k := make([]byte, 8, 8+len(e.Digest))
	binary.BigEndian.PutUint64(k, accessNanos(e.LastAccess))
	return append(k, e.Digest...)
}

func refKey(child, parent digest.Digest) []byte {
	k := make([]byte, 0, len(child)+1+len(parent))
	k = append(append(append(k, child...), 0), parent...)
	return k
}

func getEntry(tx *bolt.Tx, d digest.Digest) (IndexEntry, bool, error) {
	v := tx.Bucket([]byte(bucketEntries)).Get([]byte(d))
	if v == nil {
		return IndexEntry{}, false, nil
	}
	var e IndexEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return IndexEntry{}, false, fmt.Errorf("index entry %s: %w", d, err)
	}
	return e, true, nil
}

func addCounter(meta *bolt.Bucket, key string, delta int64) error {
	var n int64
	if v := meta.Get([]byte(key)); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v)) //nolint:gosec // G115: the bits of an int64 written below
	}
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(n+delta)) //nolint:gosec // G115: stored as its bits, read back above
	return meta.Put([]byte(key), buf[:])
}

func counter(meta *bolt.Bucket, key string) int64 {
	if v := meta.Get([]byte(key)); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v)) //nolint:gosec // G115: the bits of an int64 (addCounter)
	}
	return 0
}

// writeEntry stores e in place of old (when had), keeping the access
// order, the referrer edges and the counters in step.
func writeEntry(tx *bolt.Tx, old IndexEntry, had bool, e IndexEntry) error {
	entries, access, refs, meta := tx.Bucket([]byte(bucketEntries)), tx.Bucket([]byte(bucketAccess)), tx.Bucket([]byte(bucketRefs)), tx.Bucket([]byte(bucketMeta))
	if had {
		if err := deleteEntry(tx, old); err != nil {
			return err
		}
	}
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := entries.Put([]byte(e.Digest), v); err != nil {
		return err
	}
	if err := access.Put(accessKey(e), nil); err != nil {
		return err
	}
	for _, c := range e.Children {
		if err := refs.Put(refKey(c, e.Digest), nil); err != nil {
			return err
		}
	}
	if err := addCounter(meta, keyBytes, e.Size); err != nil {
		return err
	}
	return addCounter(meta, keyCount, 1)
}

func deleteEntry(tx *bolt.Tx, old IndexEntry) error {
	if err := tx.Bucket([]byte(bucketEntries)).Delete([]byte(old.Digest)); err != nil {
		return err
	}
	if err := tx.Bucket([]byte(bucketAccess)).Delete(accessKey(old)); err != nil {
		return err
	}
	for _, c := range old.Children {
		if err := tx.Bucket([]byte(bucketRefs)).Delete(refKey(c, old.Digest)); err != nil {
			return err
		}
	}
	meta := tx.Bucket([]byte(bucketMeta))
	if err := addCounter(meta, keyBytes, -old.Size); err != nil {
		return err
	}
	return addCounter(meta, keyCount, -1)
}

// Put inserts e or merges it into the stored entry.
func (b *BoltIndex) Put(ctx context.Context, e IndexEntry) error {
	if err := e.Validate(); err != nil {
		return err
	}
	e = e.Normalized()
	return b.update(ctx, func(tx *bolt.Tx) error {
		old, had, err := getEntry(tx, e.Digest)
		if err != nil {
			return err
		}
		if had {
			e = merge(old, e)
		}
		return writeEntry(tx, old, had, e)
	})
}

// PutMany puts entries in one transaction (one sync instead of one per
// entry): RebuildIndex uses it when an Index offers it.
func (b *BoltIndex) PutMany(ctx context.Context, es []IndexEntry) error {
	for i := range es {
		if err := es[i].Validate(); err != nil {
			return err
		}
	}
	return b.update(ctx, func(tx *bolt.Tx) error {
		for _, e := range es {
			e = e.Normalized()
			old, had, err := getEntry(tx, e.Digest)
			if err != nil {
				return err
			}
			if had {
				e = merge(old, e)
			}
			if err := writeEntry(tx, old, had, e); err != nil {
				return err
			}
		}
		return nil
	})
}

// Touch records an access in memory; Flush writes it.
func (b *BoltIndex) Touch(d digest.Digest, at time.Time) {
	if !b.opts.ReadOnly {
		b.touches.Add(d, at)
	}
}

// AddRepo records that repo links d.
func (b *BoltIndex) AddRepo(ctx context.Context, d digest.Digest, repo string) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		e, had, err := getEntry(tx, d)
		if err != nil || !had {
			return err
		}
		for _, r := range e.Repos {
			if r == repo {
				return nil
			}
		}
		ne := e
		ne.Repos = sortedUnique(append(append([]string(nil), e.Repos...), repo))
		return writeEntry(tx, e, true, ne)
	})
}

// Remove deletes the entry of d.
func (b *BoltIndex) Remove(ctx context.Context, d digest.Digest) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		e, had, err := getEntry(tx, d)
		if err != nil || !had {
			return err
		}
		return deleteEntry(tx, e)
	})
}

// Get returns the entry of d.
func (b *BoltIndex) Get(ctx context.Context, d digest.Digest) (IndexEntry, bool, error) {
	var e IndexEntry
	var ok bool
	err := b.view(ctx, func(tx *bolt.Tx) error {
		var err error
		e, ok, err = getEntry(tx, d)
		return err
	})
	return e, ok, err
}

// Usage returns the stored bytes and entry count.
func (b *BoltIndex) Usage(ctx context.Context) (int64, int64, error) {
	var n, c int64
	err := b.view(ctx, func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte(bucketMeta))
		n, c = counter(meta, keyBytes), counter(meta, keyCount)
		return nil
	})
	return n, c, err
}

// Walk visits the entries in order, walkPage entries per read
// transaction; fn runs outside any transaction.
func (b *BoltIndex) Walk(ctx context.Context, order Order, fn func(IndexEntry) (bool, error)) error {
	bucket := bucketEntries
	if order == ByLastAccess {
		bucket = bucketAccess
	}
	var after []byte
	for {
		var page []IndexEntry
		err := b.view(ctx, func(tx *bolt.Tx) error {
			c := tx.Bucket([]byte(bucket)).Cursor()
			k, _ := c.First()
			if after != nil {
				k, _ = c.Seek(after)
				if bytes.Equal(k, after) {
					k, _ = c.Next()
				}
			}
			for ; k != nil && len(page) < walkPage; k, _ = c.Next() {
				after = append(after[:0:0], k...)
				d := digest.Digest(k)
				if order == ByLastAccess {
					d = digest.Digest(k[8:])
				}
				e, ok, err := getEntry(tx, d)
				if err != nil {
					return err
				}
				if ok {
					page = append(page, e)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		for _, e := range page {
			if err := ctx.Err(); err != nil {
				return err
			}
			more, err := fn(e)
			if err != nil || !more {
				return err
			}
		}
	}
}

// Referrers returns the manifests listing d as a child, sorted.
func (b *BoltIndex) Referrers(ctx context.Context, d digest.Digest) ([]digest.Digest, error) {
	var out []digest.Digest
	prefix := append([]byte(d), 0)
	err := b.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(bucketRefs)).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			out = append(out, digest.Digest(k[len(prefix):]))
		}
		return nil
	})
	return out, err
}

// Flush writes the pending accesses in one transaction; on failure they
// are kept for the next flush.
func (b *BoltIndex) Flush(ctx context.Context) error {
	pending := b.touches.Take()
	if len(pending) == 0 || b.opts.ReadOnly {
		return nil
	}
	err := b.update(ctx, func(tx *bolt.Tx) error {
		for d, at := range pending {
			e, had, err := getEntry(tx, d)
			if err != nil {
				return err
			}
			if !had || !at.After(e.LastAccess) {
				continue
			}
			ne := e
			ne.LastAccess = at
			if err := writeEntry(tx, e, true, ne); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.touches.Restore(pending)
	}
	return err
}
