package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
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
// Write, Commit and Cancel are called by one goroutine; ReadAt may be
// called concurrently by any number of readers.
type Upload struct {
	s       *Store
	id      string
	digest  digest.Digester
	spool   *os.File
	inPlace bool
	w       storagedriver.FileWriter
	werr    error
	size    int64
}

func newUploadID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewUpload starts an upload whose content will be verified with alg.
func (s *Store) NewUpload(ctx context.Context, alg digest.Algorithm) (*Upload, error) {
	if !alg.Available() {
		return nil, fmt.Errorf("upload: unsupported digest algorithm %q", alg)
	}
	u := &Upload{s: s, id: newUploadID(), digest: alg.Digester()}
	if s.localRoot != "" {
		p := filepath.Join(s.localRoot, filepath.FromSlash(uploadPath(u.id)))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		u.spool, u.inPlace = f, true
		return u, nil
	}
	f, err := os.CreateTemp(s.spoolDir, "crp-spool-*")
	if err != nil {
		return nil, fmt.Errorf("upload: spool: %w", err)
	}
	// Unlinked at once: the open descriptor keeps it alive for readers and
	// a crash leaves nothing to clean up.
	_ = os.Remove(f.Name())
	w, err := s.driver.Writer(ctx, uploadPath(u.id), false)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("upload: driver writer: %w", err)
	}
	u.spool, u.w = f, w
	return u, nil
}

// ID returns the upload's identifier (its directory under _uploads).
func (u *Upload) ID() string { return u.id }

// Write appends p to the spool, the hash and the driver upload. A failure
// of the driver is remembered and reported by Commit, so that clients
// reading the spool still receive the bytes.
func (u *Upload) Write(p []byte) (int, error) {
	return u.WriteThen(p, nil)
}

// WriteThen is Write that calls spooled(n) as soon as the bytes are in the
// spool, before they are hashed and sent to a remote driver: readers of
// the spool get them while the hash runs. (Their last byte still waits for
// Verify.)
func (u *Upload) WriteThen(p []byte, spooled func(n int)) (int, error) {
	n, err := u.spool.Write(p)
	u.size += int64(n)
	if n > 0 && spooled != nil {
		spooled(n)
	}
	u.digest.Hash().Write(p[:n])
	if err != nil {
		return n, fmt.Errorf("upload: spool write: %w", err)
	}
	if u.w != nil && u.werr == nil {
		if _, err := u.w.Write(p); err != nil {
			u.werr = err
		}
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
func (u *Upload) Verify(want digest.Digest, wantSize int64) error {
	got := u.digest.Digest()
	if got != want || (wantSize >= 0 && u.size != wantSize) {
		return &VerifyError{Digest: want, Got: got, Size: u.size, WantSize: wantSize}
	}
	return nil
}

// Commit verifies that the content matches want (and wantSize when >= 0),
// then moves it into place. On any mismatch nothing is committed and the
// upload is removed; the error is a *VerifyError.
func (u *Upload) Commit(ctx context.Context, want digest.Digest, wantSize int64) error {
	if err := u.Verify(want, wantSize); err != nil {
		_ = u.Cancel(ctx)
		return err
	}
	if u.inPlace {
		if err := u.spool.Sync(); err != nil {
			_ = u.Cancel(ctx)
			return fmt.Errorf("%w: blob %s: sync: %v", ErrStorageWrite, want, err)
		}
	} else {
		if u.werr != nil {
			_ = u.Cancel(ctx)
			return fmt.Errorf("%w: blob %s: %v", ErrStorageWrite, want, u.werr)
		}
		if err := u.w.Commit(ctx); err != nil {
			_ = u.Cancel(ctx)
			return fmt.Errorf("%w: blob %s: commit upload: %v", ErrStorageWrite, want, err)
		}
		if err := u.w.Close(); err != nil {
			_ = u.Cancel(ctx)
			return fmt.Errorf("%w: blob %s: close upload: %v", ErrStorageWrite, want, err)
		}
		u.w = nil
	}
	if err := u.s.driver.Move(ctx, uploadPath(u.id), BlobPath(want)); err != nil {
		_ = u.Cancel(ctx)
		return fmt.Errorf("%w: blob %s: move into place: %v", ErrStorageWrite, want, err)
	}
	_ = u.s.driver.Delete(ctx, uploadDir(u.id))
	return nil
}

// Cancel abandons the upload: nothing is committed. Readers that hold the
// spool open can still read what was written until Close.
func (u *Upload) Cancel(ctx context.Context) error {
	var err error
	if u.w != nil {
		err = u.w.Cancel(ctx)
		_ = u.w.Close()
		u.w = nil
	}
	if derr := u.s.driver.Delete(ctx, uploadDir(u.id)); derr != nil && !notFound(derr) && err == nil {
		err = derr
	}
	return err
}

// Close releases the spool. Call it after Commit or Cancel, once no
// reader needs the spool any more.
func (u *Upload) Close() error {
	return u.spool.Close()
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
