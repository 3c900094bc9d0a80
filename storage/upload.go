package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// Upload is a blob being written: the bytes go to a local spool file that
// concurrent readers may read while it grows (ReadAt), are hashed, and
// reach the storage driver's upload area. Commit verifies size and digest
// and only then moves the blob into its content-addressed place.
//
// With the filesystem driver the spool is the upload file itself (one
// write per byte). With remote drivers the spool is an unlinked temporary
// file, so a crash leaves nothing behind locally, and the driver receives
// the same bytes through its FileWriter.
//
// The hash and the remote driver's writes are off the writer's path:
// goroutines of the upload's own follow the spool as it grows and read it
// back (the page cache), one to hash, one (remote drivers) to write to the
// driver in large pieces, so the writer goes on to its next bytes at once
// (an S3 part upload does not stall the download). Verify waits for the
// hash, Commit for the driver; Commit, Cancel and Close stop both.
//
// Write, Verify, Commit and Cancel are called by one goroutine; ReadAt
// and OpenSpool may be called concurrently by any number of readers;
// Close may be called from any goroutine once Commit or Cancel returned.
type Upload struct {
	s       *Store
	id      string
	digest  digest.Digester
	hash    *spoolFollower
	push    *spoolFollower // remote drivers: feeds w
	spool   *os.File
	inPlace bool
	// deferred: nothing reaches a remote driver until Commit (NewUpload
	// with Deferred), which finds the blob committed by someone else or
	// writes the whole spool then.
	deferred bool
	w        storagedriver.FileWriter
	size     int64
}

// UploadOptions tune NewUpload.
type UploadOptions struct {
	// Deferred keeps the bytes in the local spool until Commit instead of
	// writing them to a remote driver as they arrive: for content another
	// process is committing too (a replica streaming the fill of the
	// replica that owns the digest), so that the bucket receives it once.
	// Commit then stores nothing when the blob is already there. No effect
	// on the filesystem driver, whose upload file is the spool.
	Deferred bool
}

// spoolPrefix starts the names of spool files (remote drivers).
const spoolPrefix = "crp-spool-"

func newUploadID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewUpload starts an upload whose content will be verified with alg.
func (s *Store) NewUpload(ctx context.Context, alg digest.Algorithm, opts UploadOptions) (*Upload, error) {
	if !alg.Available() {
		return nil, fmt.Errorf("upload: unsupported digest algorithm %q", alg)
	}
	u := &Upload{s: s, id: newUploadID(), digest: alg.Digester()}
	if s.localRoot != "" {
		p := filepath.Join(s.localRoot, filepath.FromSlash(uploadPath(u.id)))
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // G304: the cache's root and an upload ID of ours
		if err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		u.spool, u.inPlace = f, true
		u.hash = newHasher(f, u.digest.Hash())
		return u, nil
	}
	f, err := os.CreateTemp(s.spoolDir, spoolPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("upload: spool: %w", err)
	}
	// Unlinked at once: the open descriptor keeps it alive for readers and
	// a crash leaves nothing to clean up.
	if err := os.Remove(f.Name()); err != nil {
		return nil, errors.Join(fmt.Errorf("upload: spool: %w", err), f.Close())
	}
	u.spool = f
	u.hash = newHasher(f, u.digest.Hash())
	if opts.Deferred {
		u.deferred = true
		return u, nil
	}
	w, err := s.driver.Writer(ctx, uploadPath(u.id), false)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("upload: driver writer: %w", err), f.Close())
	}
	u.w = w
	u.push = newSpoolFollower(f, driverChunk, &driverBufPool, "the storage driver's upload", func(p []byte) error {
		_, err := w.Write(p)
		return err
	})
	return u, nil
}

// Write appends p to the spool; the hash and the driver upload follow on
// the upload's own goroutines. A failure of the driver is remembered and
// reported by Commit, so that clients reading the spool still receive the
// bytes.
func (u *Upload) Write(p []byte) (int, error) {
	return u.WriteThen(p, nil)
}

// WriteThen is Write that calls spooled(n) as soon as the bytes are in the
// spool, before they are sent to a remote driver: readers of the spool get
// them while the hash (on its own goroutine) and the driver write run.
// (Their last byte still waits for Verify.)
func (u *Upload) WriteThen(p []byte, spooled func(n int)) (int, error) {
	n, err := u.spool.Write(p)
	u.size += int64(n)
	if n > 0 {
		if spooled != nil {
			spooled(n)
		}
		u.hash.advance(int64(n))
		if u.push != nil {
			u.push.advance(int64(n))
		}
	}
	if err != nil {
		return n, fmt.Errorf("upload: spool write: %w", err)
	}
	return n, nil
}

// ReadAt reads spooled bytes; safe for concurrent use with Write.
func (u *Upload) ReadAt(p []byte, off int64) (int, error) {
	return u.spool.ReadAt(p, off)
}

// OpenSpool opens another read-only descriptor on the spool, with an
// offset of its own, so that a reader can hand it to the kernel (sendfile)
// while the upload grows. It needs Linux's /proc; callers fall back to
// ReadAt when it fails.
func (u *Upload) OpenSpool() (*os.File, error) {
	return os.Open(fmt.Sprintf("/proc/self/fd/%d", u.spool.Fd()))
}

// Size returns the number of bytes written so far.
func (u *Upload) Size() int64 { return u.size }

// ErrStorageWrite reports that the blob could not be stored although the
// bytes were received (the spool still holds them).
var ErrStorageWrite = errors.New("storage write failed")

// Verify checks the bytes written so far against want (and wantSize when
// >= 0) without committing anything; it returns a *VerifyError on mismatch.
// It first waits until every byte written has been hashed; when the spool
// could not be read back for the hash it returns that error (wrapping
// ErrStorageWrite) instead.
func (u *Upload) Verify(want digest.Digest, wantSize int64) error {
	if err := u.hash.wait(); err != nil {
		return fmt.Errorf("%w: blob %s: %w", ErrStorageWrite, want, err)
	}
	got := u.digest.Digest()
	if got != want || (wantSize >= 0 && u.size != wantSize) {
		return &VerifyError{Digest: want, Got: got, Size: u.size, WantSize: wantSize}
	}
	return nil
}

// Commit verifies that the content matches want (and wantSize when >= 0),
// then moves it into place. On any mismatch nothing is committed and the
// upload is removed; the error is a *VerifyError (or wraps ErrStorageWrite
// when the spool could not be read back for the hash).
func (u *Upload) Commit(ctx context.Context, want digest.Digest, wantSize int64) error {
	// Commit ends the upload either way: the followers have nothing left
	// to do.
	defer u.stopFollowers()
	if err := u.Verify(want, wantSize); err != nil {
		return errors.Join(err, u.Cancel(ctx))
	}
	if u.deferred {
		if _, err := u.s.StatBlob(ctx, want); err == nil {
			return nil // committed by the process it was streamed from
		}
	}
	if err := u.finish(ctx, want); err != nil {
		return errors.Join(err, u.Cancel(ctx))
	}
	if err := u.s.driver.Move(ctx, uploadPath(u.id), BlobPath(want)); err != nil {
		return errors.Join(fmt.Errorf("%w: blob %s: move into place: %w", ErrStorageWrite, want, err), u.Cancel(ctx))
	}
	u.s.clearUpload(ctx, u.id)
	return nil
}

// finish makes the verified bytes durable where Move expects them: the
// upload file synced in place, or the remote driver's upload completed.
func (u *Upload) finish(ctx context.Context, want digest.Digest) error {
	if u.inPlace {
		if err := u.spool.Sync(); err != nil {
			return fmt.Errorf("%w: blob %s: sync: %w", ErrStorageWrite, want, err)
		}
		return nil
	}
	if u.deferred {
		if err := u.writeSpool(ctx); err != nil {
			return fmt.Errorf("%w: blob %s: %w", ErrStorageWrite, want, err)
		}
	} else if err := u.push.wait(); err != nil {
		return fmt.Errorf("%w: blob %s: %w", ErrStorageWrite, want, err)
	}
	if err := u.w.Commit(ctx); err != nil {
		return fmt.Errorf("%w: blob %s: commit upload: %w", ErrStorageWrite, want, err)
	}
	if err := u.w.Close(); err != nil {
		return fmt.Errorf("%w: blob %s: close upload: %w", ErrStorageWrite, want, err)
	}
	u.w = nil
	return nil
}

// writeSpool writes a deferred upload's whole spool to the driver, in the
// pieces the driver takes.
func (u *Upload) writeSpool(ctx context.Context) error {
	w, err := u.s.driver.Writer(ctx, uploadPath(u.id), false)
	if err != nil {
		return fmt.Errorf("driver writer: %w", err)
	}
	u.w = w
	bufp := driverBufPool.Get().(*[]byte)
	defer driverBufPool.Put(bufp)
	if _, err := io.CopyBuffer(onlyWriter{w}, io.NewSectionReader(u.spool, 0, u.size), *bufp); err != nil {
		return fmt.Errorf("writing the spool to the driver: %w", err)
	}
	return nil
}

// onlyWriter hides a writer's ReadFrom, so that io.CopyBuffer writes in
// the buffer's pieces.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// Cancel abandons the upload: nothing is committed. Readers that hold the
// spool open can still read what was written until Close.
func (u *Upload) Cancel(ctx context.Context) error {
	u.stopFollowers()
	var err error
	if u.w != nil {
		// No Close after a successful Cancel: the s3 driver's Close would
		// send its buffer as a part of the upload Cancel just aborted
		// (refused: NoSuchUpload). Close only releases what a failed
		// Cancel left.
		if err = u.w.Cancel(ctx); err != nil {
			err = errors.Join(err, u.w.Close())
		}
		u.w = nil
	}
	return errors.Join(err, u.s.removeUpload(ctx, u.id))
}

// Close releases the spool (and stops the followers if Commit or Cancel
// did not). Call it after Commit or Cancel, once no reader needs the spool
// any more.
func (u *Upload) Close() error {
	u.stopFollowers()
	return u.spool.Close()
}

// stopFollowers ends the hash and driver goroutines (waiting for a driver
// write in progress).
func (u *Upload) stopFollowers() {
	u.hash.stop()
	if u.push != nil {
		u.push.stop()
	}
}

// hashChunk is how much the hasher reads back from the spool at a time.
const hashChunk = 64 << 10

// driverChunk is the size of a remote driver's writes: drivers that
// buffer by reallocating (inmemory) cost a copy of the whole upload per
// write, and S3 uploads parts of 10 MiB or more anyway.
const driverChunk = 4 << 20

var (
	hashBufPool   = sync.Pool{New: func() any { b := make([]byte, hashChunk); return &b }}
	driverBufPool = sync.Pool{New: func() any { b := make([]byte, driverChunk); return &b }}
)

func newHasher(src io.ReaderAt, h hash.Hash) *spoolFollower {
	return newSpoolFollower(src, hashChunk, &hashBufPool, "the hash", func(p []byte) error {
		h.Write(p)
		return nil
	})
}

// errHashStopped is what waiting for a stopped follower (the hash, the
// driver upload) that had not caught up returns: the upload was cancelled
// or closed.
var errHashStopped = errors.New("upload: stopped before the end (upload cancelled or closed)")

// spoolFollower feeds a spool to sink behind its writer (the hash, a
// driver upload). The writer reports each write with advance; a
// goroutine, started once a whole chunk is waiting, reads the new bytes
// back with ReadAt in chunks into a buffer of its own and passes them to
// sink. It sleeps on a condition variable while less than a chunk waits
// (socket reads are often 32 KiB: waking for each would cost more than it
// saves), and wait makes it take the rest. wait blocks until every byte
// advanced is fed; stop ends the goroutine and waits for it. Its memory
// is one buffer, whatever the writer's lead.
type spoolFollower struct {
	src   io.ReaderAt
	sink  func([]byte) error // called only by the goroutine
	chunk int64
	pool  *sync.Pool
	what  string // for errors: "the hash"

	mu      sync.Mutex
	more    sync.Cond // the writer advanced, or stop: for the goroutine
	caught  sync.Cond // fed advanced, or the goroutine ended: for wait
	avail   int64     // bytes in the spool
	fed     int64     // bytes fed to sink
	err     error     // reading the spool or sink failed; sticky
	started bool
	flush   bool          // wait wants every byte, even less than a chunk
	stopped bool          // stop was called
	ended   bool          // the goroutine returned (or never will start)
	done    chan struct{} // closed when the goroutine returned
}

func newSpoolFollower(src io.ReaderAt, chunk int64, pool *sync.Pool, what string, sink func([]byte) error) *spoolFollower {
	sh := &spoolFollower{src: src, sink: sink, chunk: chunk, pool: pool, what: what, done: make(chan struct{})}
	sh.more.L = &sh.mu
	sh.caught.L = &sh.mu
	return sh
}

// advance records n more bytes in the spool and wakes the goroutine,
// starting it on the first call. After stop the bytes are only counted,
// so that wait reports them as never fed.
func (sh *spoolFollower) advance(n int64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.avail += n
	if sh.stopped || sh.avail-sh.fed < sh.chunk {
		return
	}
	sh.wake()
}

// wake starts the goroutine, or signals it. sh.mu is held.
func (sh *spoolFollower) wake() {
	if !sh.started {
		sh.started = true
		go sh.run()
		return
	}
	sh.more.Signal()
}

// wait blocks until every byte advanced has been fed to sink, and returns
// the error (reading the spool, or sink's) that stopped it, if any.
func (sh *spoolFollower) wait() error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.fed < sh.avail && !sh.stopped {
		sh.flush = true
		sh.wake()
	}
	for sh.fed < sh.avail && sh.err == nil && !sh.ended {
		sh.caught.Wait()
	}
	sh.flush = false
	switch {
	case sh.err != nil:
		return sh.err
	case sh.fed < sh.avail:
		return errHashStopped
	}
	return nil
}

// stop ends the goroutine and waits until it returned. It may be called
// more than once, from any goroutine.
func (sh *spoolFollower) stop() {
	sh.mu.Lock()
	sh.stopped = true
	started := sh.started
	if !started {
		sh.ended = true
	}
	sh.more.Signal()
	sh.caught.Broadcast()
	sh.mu.Unlock()
	if started {
		<-sh.done
	}
}

func (sh *spoolFollower) run() {
	bufp := sh.pool.Get().(*[]byte)
	buf := (*bufp)[:sh.chunk]
	defer func() {
		sh.pool.Put(bufp)
		sh.mu.Lock()
		sh.ended = true
		sh.caught.Broadcast()
		sh.mu.Unlock()
		close(sh.done)
	}()
	for {
		sh.mu.Lock()
		for !sh.stopped && (sh.fed == sh.avail || (!sh.flush && sh.avail-sh.fed < sh.chunk)) {
			sh.more.Wait()
		}
		if sh.stopped {
			sh.mu.Unlock()
			return
		}
		off := sh.fed
		want := min(sh.avail-off, int64(len(buf)))
		sh.mu.Unlock()

		n, err := sh.src.ReadAt(buf[:want], off)
		if int64(n) == want {
			err = nil // io.EOF with every byte asked for is no error
		} else if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("spool holds %d bytes, %d were written: %w", off+int64(n), off+want, io.ErrUnexpectedEOF)
		}
		if err != nil {
			err = fmt.Errorf("upload: reading the spool back for %s: %w", sh.what, err)
		} else if err = sh.sink(buf[:n]); err != nil {
			err = fmt.Errorf("upload: %s: %w", sh.what, err)
		}

		sh.mu.Lock()
		if err != nil {
			sh.err = err
		} else {
			sh.fed += int64(n)
		}
		if sh.err != nil || sh.fed == sh.avail {
			sh.caught.Broadcast()
		}
		sh.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// PurgeUploads removes uploads whose data was last written more than
// olderThan ago: what fills that never finished (a crash, a kill) left
// behind. Uploads of fills still running, in this process or another one
// sharing the storage, are younger and are kept.
func (s *Store) PurgeUploads(ctx context.Context, olderThan time.Duration) (int, error) {
	ids, err := s.driver.List(ctx, uploadsRoot)
	if err != nil {
		if notFound(err) {
			return 0, nil
		}
		return 0, err
	}
	n := 0
	for _, dir := range ids {
		id := path.Base(dir)
		fi, err := s.driver.Stat(ctx, uploadPath(id))
		if err == nil && time.Since(fi.ModTime()) < olderThan {
			continue
		}
		if err := s.driver.Delete(ctx, uploadDir(id)); err != nil && !notFound(err) {
			return n, err
		}
		n++
	}
	return n, nil
}

// removeUpload deletes an upload's directory; a missing one is no error.
func (s *Store) removeUpload(ctx context.Context, id string) error {
	if err := s.driver.Delete(ctx, uploadDir(id)); err != nil && !notFound(err) {
		return fmt.Errorf("upload %s: remove: %w", id, err)
	}
	return nil
}

// clearUpload removes the emptied directory of a committed upload. It
// cannot fail the commit: a directory left behind holds no data, and
// PurgeUploads clears it at the next start.
func (s *Store) clearUpload(ctx context.Context, id string) {
	_ = s.removeUpload(ctx, id) //nolint:errcheck // the blob is committed; see above
}
