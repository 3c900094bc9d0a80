package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The embedded index is a go.etcd.io/bbolt file in the cache directory.
// bbolt was chosen because it is embedded (no server to run), keeps the
// whole index in one file beside the data it describes, is transactional
// (a crash leaves the last committed state, never a torn one) and is well
// kept by the etcd maintainers, whose production use it backs. v1.4.x is
// its current stable line (v1.5 had just been cut).
//
// A bbolt file is owned by one process at a time (an flock): a second
// process opening it waits up to Timeout and then gets ErrIndexLocked. The
// subcommands handle that with OpenIndexForTool. Nothing in the file is
// needed by anyone else: it is derived from the storage and can be rebuilt
// from it at any time.
//
// Buckets:
//
//	entries  digest → IndexEntry (JSON)
//	access   8-byte big-endian LastAccess (ns) ‖ digest → ∅   (LRU order)
//	refs     child digest ‖ 0x00 ‖ manifest digest → ∅       (Referrers)
//	meta     "version", "bytes", "count"
const (
	bucketEntries = "entries"
	bucketAccess  = "access"
	bucketRefs    = "refs"
	bucketMeta    = "meta"
	keyVersion    = "version"
	keyBytes      = "bytes"
	keyCount      = "count"
)

func allBuckets() []string { return []string{bucketEntries, bucketAccess, bucketRefs, bucketMeta} }

const boltSchemaVersion = "1"

// walkPage is how many entries Walk reads per transaction: fn runs between
// transactions, so it may write to the index.
const walkPage = 256

// ErrIndexLocked reports that another process (a running proxy) holds the
// index file.
var ErrIndexLocked = errors.New("index file is locked by another process")

// ErrIndexUnreadable reports an index file that cannot be used as it is
// (corrupt, of another schema, unreadable) when it may not be replaced.
var ErrIndexUnreadable = errors.New("index file unreadable")

// BoltOptions tunes OpenBoltIndex.
type BoltOptions struct {
	// ReadOnly opens an existing file with a shared lock; writes fail and
	// touches are dropped. A damaged file is reported, not replaced.
	ReadOnly bool
	// Timeout bounds the wait for the file lock. Default 1s.
	Timeout time.Duration
	// FlushInterval is how often batched accesses are written. Default
	// 30s; negative disables the background flush (Flush and Close still
	// write).
	FlushInterval time.Duration
	// Now names a damaged file moved aside. Default time.Now.
	Now func() time.Time
	// Log reports background flush failures. Default: discarded.
	Log func(msg string, fields map[string]any)
}

// BoltIndex is the embedded Index in a bbolt file.
type BoltIndex struct {
	db        *bolt.DB
	opts      BoltOptions
	rebuild   bool
	aside     string
	touches   TouchBatch
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeMu   sync.Mutex
	isClosed  bool
}

var _ Index = (*BoltIndex)(nil)

// OpenBoltIndex opens or creates the index file at path. A file that is
// corrupt or unreadable is moved aside to <path>.corrupt-<time> and a fresh
// one is created; NeedsRebuild then reports true, as it does for a new
// file, and the caller runs RebuildIndex (in the background: the proxy may
// serve meanwhile). A file held by another process yields ErrIndexLocked.
func OpenBoltIndex(path string, opts BoltOptions) (*BoltIndex, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = func(string, map[string]any) {}
	}
	_, statErr := os.Stat(path)
	existed := statErr == nil
	b := &BoltIndex{opts: opts, rebuild: !existed, done: make(chan struct{})}
	db, fresh, err := openBolt(path, opts)
	switch {
	case err == nil:
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("index %s: %w", path, ErrIndexLocked)
	case opts.ReadOnly:
		return nil, fmt.Errorf("index %s: %w: %w", path, ErrIndexUnreadable, err)
	case !existed:
		return nil, fmt.Errorf("index %s: %w", path, err)
	default:
		b.aside = fmt.Sprintf("%s.corrupt-%s", path, opts.Now().UTC().Format("20060102T150405.000000000Z"))
		if rerr := os.Rename(path, b.aside); rerr != nil {
			return nil, fmt.Errorf("index %s: %w (%w), and it cannot be moved aside: %w", path, ErrIndexUnreadable, err, rerr)
		}
		b.rebuild = true
		if db, _, err = openBolt(path, opts); err != nil {
			return nil, fmt.Errorf("index %s: %w", path, err)
		}
	}
	b.db = db
	b.rebuild = b.rebuild || fresh
	if !opts.ReadOnly && opts.FlushInterval > 0 {
		b.wg.Add(1)
		go b.flushLoop()
	}
	return b, nil
}

// openBolt opens the file and checks (or, writable, creates) its buckets
// and schema; any fault of the file comes back as an error, including a
// panic of bbolt on a damaged page.
func openBolt(path string, opts BoltOptions) (db *bolt.DB, fresh bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrIndexUnreadable, r)
			if db != nil {
				err = errors.Join(err, db.Close())
				db = nil
			}
		}
	}()
	db, err = bolt.Open(path, 0o644, &bolt.Options{Timeout: opts.Timeout, ReadOnly: opts.ReadOnly, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, false, err
	}
	// Verify before any write, so that a damaged file is moved aside as it
	// was found.
	err = db.View(func(tx *bolt.Tx) error {
		if !opts.ReadOnly && tx.Bucket([]byte(bucketMeta)) == nil {
			n := 0
			if err := tx.ForEach(func([]byte, *bolt.Bucket) error { n++; return nil }); err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%w: not an index (no %s bucket)", ErrIndexUnreadable, bucketMeta)
			}
			fresh = true
			return nil
		}
		return verify(tx)
	})
	if err == nil && fresh {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, name := range allBuckets() {
				if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
					return err
				}
			}
			return tx.Bucket([]byte(bucketMeta)).Put([]byte(keyVersion), []byte(boltSchemaVersion))
		})
	}
	if err != nil {
		return nil, false, errors.Join(err, db.Close())
	}
	return db, fresh, nil
}

// verify reads every page of the index in this goroutine, so that damage
// shows as an error (or a panic that openBolt recovers) at open rather
// than later in a request.
func verify(tx *bolt.Tx) error {
	for _, name := range allBuckets() {
		if tx.Bucket([]byte(name)) == nil {
			return fmt.Errorf("%w: bucket %s missing", ErrIndexUnreadable, name)
		}
	}
	if v := tx.Bucket([]byte(bucketMeta)).Get([]byte(keyVersion)); string(v) != boltSchemaVersion {
		return fmt.Errorf("%w: schema %q, want %q", ErrIndexUnreadable, v, boltSchemaVersion)
	}
	var n, size int64
	err := tx.Bucket([]byte(bucketEntries)).ForEach(func(k, v []byte) error {
		var e IndexEntry
		if err := json.Unmarshal(v, &e); err != nil || string(e.Digest) != string(k) {
			return fmt.Errorf("%w: entry %q damaged", ErrIndexUnreadable, k)
		}
		n++
		size += e.Size
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range []string{bucketAccess, bucketRefs} {
		if err := tx.Bucket([]byte(name)).ForEach(func(k, v []byte) error { return nil }); err != nil {
			return err
		}
	}
	meta := tx.Bucket([]byte(bucketMeta))
	if counter(meta, keyCount) != n || counter(meta, keyBytes) != size {
		return fmt.Errorf("%w: counters (%d entries, %d bytes) disagree with the entries (%d, %d)",
			ErrIndexUnreadable, counter(meta, keyCount), counter(meta, keyBytes), n, size)
	}
	return nil
}

// NeedsRebuild reports that the file was created (missing, or replaced
// after damage): RebuildIndex should fill it.
func (b *BoltIndex) NeedsRebuild() bool { return b.rebuild }

// MovedAside returns where a damaged file was moved, or "".
func (b *BoltIndex) MovedAside() string { return b.aside }

func (b *BoltIndex) flushLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
			if err := b.Flush(context.Background()); err != nil {
				b.opts.Log("index: writing access times failed; kept for the next flush", map[string]any{"error": err.Error()})
			}
		}
	}
}

func (b *BoltIndex) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.closed() {
		return ErrIndexClosed
	}
	return b.db.Update(fn)
}

func (b *BoltIndex) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.closed() {
		return ErrIndexClosed
	}
	return b.db.View(fn)
}

func (b *BoltIndex) closed() bool {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	return b.isClosed
}

// Close stops the background flush, writes pending accesses and closes
// the file.
func (b *BoltIndex) Close() error {
	var err error
	b.closeOnce.Do(func() {
		close(b.done)
		b.wg.Wait()
		ferr := b.Flush(context.Background())
		b.closeMu.Lock()
		b.isClosed = true
		b.closeMu.Unlock()
		err = errors.Join(b.db.Close(), ferr)
	})
	return err
}
