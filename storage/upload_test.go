package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
)

// The hash of an Upload runs on a goroutine of its own that reads the
// spool back behind the writer. These tests check that what Verify and
// Commit decide is the same as hashing the bytes written, that the hasher
// never holds the writer up, and that it always ends.

// gatedReaderAt holds the hasher's first ReadAt until release is closed.
type gatedReaderAt struct {
	r       io.ReaderAt
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate(r io.ReaderAt) *gatedReaderAt {
	return &gatedReaderAt{r: r, entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.r.ReadAt(p, off)
}

// failingReaderAt fails every read that reaches past failAt.
type failingReaderAt struct {
	r      io.ReaderAt
	failAt int64
	err    error
}

func (f *failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.failAt {
		return 0, f.err
	}
	return f.r.ReadAt(p, off)
}

// hasherEnded reports whether u's hasher goroutine has returned (or was
// never started and never will be).
func hasherEnded(u *Upload) bool {
	return followerEnded(u.hash)
}

// commitAndCheck commits u as d and checks that the stored blob is content.
func commitAndCheck(t *testing.T, s *Store, u *Upload, content []byte) {
	t.Helper()
	ctx := t.Context()
	d := digest.FromBytes(content)
	if err := u.Commit(ctx, d, int64(len(content))); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if !hasherEnded(u) {
		t.Fatal("hasher still running after Commit")
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	rc, err := s.OpenBlob(ctx, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all, content) {
		t.Fatalf("stored blob differs: %d bytes, want %d", len(all), len(content))
	}
	noUploadsLeft(t, s)
}

func TestUploadHashManySmallWrites(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			content := randomBytes(t, 3<<20+12345)
			u := newUpload(t, s)
			// Writes from 1 byte to a few chunks, with readers notified as a
			// fill does; Verify in the middle sees exactly the prefix.
			r := rand.New(rand.NewPCG(1, 2))
			spooled := int64(0)
			checked := false
			for off := 0; off < len(content); {
				n := 1 + r.IntN(9000)
				if r.IntN(50) == 0 {
					n = hashChunk + r.IntN(2*hashChunk)
				}
				end := min(off+n, len(content))
				k, err := u.WriteThen(content[off:end], func(k int) { spooled += int64(k) })
				if err != nil || k != end-off {
					t.Fatalf("WriteThen = %d, %v", k, err)
				}
				off = end
				if !checked && off > len(content)/2 {
					checked = true
					if err := u.Verify(digest.FromBytes(content[:off]), int64(off)); err != nil {
						t.Fatalf("Verify of the prefix: %v", err)
					}
				}
			}
			if spooled != int64(len(content)) || u.Size() != int64(len(content)) {
				t.Fatalf("spooled %d, Size %d; want %d", spooled, u.Size(), len(content))
			}
			got := make([]byte, 4096)
			if _, err := u.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, content[1<<20:1<<20+4096]) {
				t.Fatalf("ReadAt: %v", err)
			}
			commitAndCheck(t, s, u, content)
		})
	}
}

func TestUploadHashOneHugeWrite(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			content := randomBytes(t, 17*hashChunk+7) // many hasher chunks, a ragged end
			u := newUpload(t, s)
			if n, err := u.Write(content); err != nil || n != len(content) {
				t.Fatalf("Write = %d, %v", n, err)
			}
			commitAndCheck(t, s, u, content)
		})
	}
}

func TestUploadHashEmpty(t *testing.T) {
	t.Parallel()
	for _, b := range allBackends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			u := newUpload(t, s)
			if n, err := u.Write(nil); err != nil || n != 0 {
				t.Fatalf("Write(nil) = %d, %v", n, err)
			}
			commitAndCheck(t, s, u, []byte{})
		})
	}
}

func TestUploadVerifyMismatchIsUnchanged(t *testing.T) {
	t.Parallel()
	content := []byte("what upstream actually sent, several times over. ")
	content = bytes.Repeat(content, 20000) // ~1 MiB: several hasher chunks
	got := digest.FromBytes(content)
	want := digest.FromString("what it claimed")
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			u := writeUpload(t, s, content)
			defer u.Close()
			for _, tc := range []struct {
				want     digest.Digest
				wantSize int64
			}{
				{want, int64(len(content))},
				{want, -1},
				{got, int64(len(content)) + 1},
			} {
				err := u.Verify(tc.want, tc.wantSize)
				var ve *VerifyError
				if !errors.As(err, &ve) {
					t.Fatalf("Verify(%s, %d) = %v, want *VerifyError", tc.want, tc.wantSize, err)
				}
				if ve.Digest != tc.want || ve.Got != got || ve.Size != int64(len(content)) || ve.WantSize != tc.wantSize {
					t.Fatalf("VerifyError = %+v", *ve)
				}
			}
			if err := u.Verify(got, -1); err != nil {
				t.Fatalf("Verify of the right digest: %v", err)
			}
			err := u.Commit(t.Context(), want, int64(len(content)))
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Got != got {
				t.Fatalf("Commit = %v, want *VerifyError with Got %s", err, got)
			}
			if !hasherEnded(u) {
				t.Fatal("hasher still running after a failed Commit")
			}
			if _, err := s.StatBlob(t.Context(), want); !errors.Is(err, ErrNotFound) {
				t.Fatalf("blob committed despite mismatch: %v", err)
			}
			noUploadsLeft(t, s)
		})
	}
}

// TestUploadWriterNotHeldByHasher writes a whole blob while the hasher is
// stuck in its first read: the writer and the spool's readers get every
// byte, and only Verify waits for the hash.
func TestUploadWriterNotHeldByHasher(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			content := randomBytes(t, 2<<20+99)
			u := newUpload(t, s)
			gate := newGate(u.spool)
			u.hash.src = gate
			writeIn(t, u, content, 64<<10)
			<-gate.entered
			all := make([]byte, len(content))
			if _, err := u.ReadAt(all, 0); err != nil || !bytes.Equal(all, content) {
				t.Fatalf("spool while the hasher waits: %v", err)
			}
			verified := make(chan error, 1)
			go func() { verified <- u.Verify(digest.FromBytes(content), int64(len(content))) }()
			close(gate.release)
			if err := <-verified; err != nil {
				t.Fatalf("Verify: %v", err)
			}
			commitAndCheck(t, s, u, content)
		})
	}
}

// TestUploadCancelWhileHashing cancels an upload whose hasher is in the
// middle of the spool: Cancel returns only once the hasher has ended, and a
// later Verify does not claim the bytes it never hashed.
func TestUploadCancelWhileHashing(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			content := randomBytes(t, 8*hashChunk)
			u := newUpload(t, s)
			gate := newGate(u.spool)
			u.hash.src = gate
			if _, err := u.Write(content); err != nil {
				t.Fatal(err)
			}
			<-gate.entered
			cancelled := make(chan error, 1)
			go func() { cancelled <- u.Cancel(t.Context()) }()
			// Let the hasher go only once Cancel asked it to stop, so that it
			// stops after one chunk.
			for {
				u.hash.mu.Lock()
				stopped := u.hash.stopped
				u.hash.mu.Unlock()
				if stopped {
					break
				}
				runtime.Gosched()
			}
			if hasherEnded(u) {
				t.Fatal("hasher ended while held in ReadAt")
			}
			close(gate.release)
			if err := <-cancelled; err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			if !hasherEnded(u) {
				t.Fatal("hasher still running after Cancel returned")
			}
			if err := u.Verify(digest.FromBytes(content), int64(len(content))); !errors.Is(err, errHashStopped) {
				t.Fatalf("Verify after Cancel = %v, want %v", err, errHashStopped)
			}
			if err := u.Close(); err != nil {
				t.Fatal(err)
			}
			noUploadsLeft(t, s)
		})
	}
}

// TestUploadCancelLeavesNothing cancels an upload whose bytes all reached
// the driver (on S3: a part uploaded, the rest in the writer's buffer):
// nothing of it stays visible or kept, no blob, no upload, no multipart
// upload.
// Cancel reports no error: the driver's writer is not closed after a
// successful Cancel (the s3 driver's Close would send its buffer as a part
// of the aborted upload, which S3 refuses with NoSuchUpload).
func TestUploadCancelLeavesNothing(t *testing.T) {
	t.Parallel()
	for _, b := range allBackends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			// One part of S3's minimum size goes up, a byte stays buffered.
			content := randomBytes(t, s3MinPart+1)
			u := newUpload(t, s)
			defer u.Close()
			writeIn(t, u, content, 64<<10)
			if u.push != nil {
				if err := u.push.wait(); err != nil {
					t.Fatalf("writing to the driver: %v", err)
				}
			}
			if err := u.Cancel(t.Context()); err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			if _, err := s.StatBlob(t.Context(), digest.FromBytes(content)); !errors.Is(err, ErrNotFound) {
				t.Fatalf("blob after Cancel: %v", err)
			}
			noUploadsLeft(t, s)
		})
	}
}

// TestUploadSpoolWriteFailsMidway makes the spool refuse writes after some
// bytes went in: the write reports it, and Cancel and Close end the hasher.
func TestUploadSpoolWriteFailsMidway(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			content := randomBytes(t, 3*hashChunk)
			u := newUpload(t, s)
			if _, err := u.Write(content[:2*hashChunk]); err != nil {
				t.Fatal(err)
			}
			// From now on the spool descriptor is read-only: writes fail with
			// EBADF while the hasher goes on reading the original one.
			orig := u.spool
			ro, err := u.OpenSpool()
			if err != nil {
				t.Fatal(err)
			}
			u.spool = ro
			if _, err := u.Write(content[2*hashChunk:]); err == nil {
				t.Fatal("Write to a read-only spool succeeded")
			}
			if err := u.Cancel(t.Context()); err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			if !hasherEnded(u) {
				t.Fatal("hasher still running after Cancel")
			}
			if err := u.Close(); err != nil {
				t.Fatal(err)
			}
			orig.Close()
			noUploadsLeft(t, s)
		})
	}
}

// TestUploadHashReadError: when the hasher cannot read the spool back,
// Verify and Commit fail with that error, never with success.
func TestUploadHashReadError(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	injected := errors.New("injected read error")
	for _, b := range backends() {
		t.Run(b.name+"/read error", func(t *testing.T) {
			s := b.new(t)
			content := randomBytes(t, 5*hashChunk)
			d := digest.FromBytes(content)
			u, err := s.NewUpload(ctx, digest.SHA256, UploadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			u.hash.src = &failingReaderAt{r: u.spool, failAt: 3 * hashChunk, err: injected}
			if _, err := u.Write(content); err != nil {
				t.Fatal(err)
			}
			err = u.Verify(d, int64(len(content)))
			var ve *VerifyError
			if !errors.Is(err, injected) || !errors.Is(err, ErrStorageWrite) || errors.As(err, &ve) {
				t.Fatalf("Verify = %v, want the read error wrapping ErrStorageWrite", err)
			}
			if err := u.Commit(ctx, d, int64(len(content))); !errors.Is(err, injected) {
				t.Fatalf("Commit = %v, want the read error", err)
			}
			if !hasherEnded(u) {
				t.Fatal("hasher still running after a failed Commit")
			}
			u.Close()
			if _, err := s.StatBlob(ctx, d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("blob committed despite the read error: %v", err)
			}
			noUploadsLeft(t, s)
		})
		t.Run(b.name+"/spool truncated", func(t *testing.T) {
			// The real spool file loses its tail before the hasher reads it.
			s := b.new(t)
			content := randomBytes(t, 4*hashChunk)
			d := digest.FromBytes(content)
			u, err := s.NewUpload(ctx, digest.SHA256, UploadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			gate := newGate(u.spool)
			u.hash.src = gate
			if _, err := u.Write(content); err != nil {
				t.Fatal(err)
			}
			<-gate.entered
			if err := u.spool.Truncate(hashChunk + 10); err != nil {
				t.Fatal(err)
			}
			close(gate.release)
			if err := u.Commit(ctx, d, int64(len(content))); !errors.Is(err, io.ErrUnexpectedEOF) || !errors.Is(err, ErrStorageWrite) {
				t.Fatalf("Commit = %v, want an unexpected EOF from the spool", err)
			}
			u.Close()
			if _, err := s.StatBlob(ctx, d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("blob committed despite the short spool: %v", err)
			}
		})
	}
}

// TestUploadHasherDoesNotLeak runs uploads to every end (commit, mismatch,
// cancel, close only, nothing written) and checks that no goroutine
// outlives them.
func TestUploadHasherDoesNotLeak(t *testing.T) {
	// Not parallel: it counts the whole process's goroutines, so it runs
	// before the parallel tests start.
	ctx := t.Context()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			content := randomBytes(t, 3*hashChunk+1)
			d := digest.FromBytes(content)
			before := runtime.NumGoroutine()
			for i := range 40 {
				u, err := s.NewUpload(ctx, digest.SHA256, UploadOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if i%5 != 4 {
					if _, err := u.Write(content); err != nil {
						t.Fatal(err)
					}
				}
				switch i % 5 {
				case 0:
					if err := u.Commit(ctx, d, int64(len(content))); err != nil {
						t.Fatal(err)
					}
				case 1:
					if err := u.Commit(ctx, digest.FromString("other"), -1); err == nil {
						t.Fatal("Commit of a mismatch succeeded")
					}
				case 2:
					_ = u.Cancel(ctx)
				case 3: // Close only
				case 4: // nothing written, Close only
				}
				if err := u.Close(); err != nil {
					t.Fatal(err)
				}
				if !hasherEnded(u) {
					t.Fatalf("upload %d: hasher still running after Close", i)
				}
			}
			// Each hasher closed its done channel as its last act; let the
			// goroutines return from there.
			// On a busy machine that can take a while: poll, bounded.
			n := runtime.NumGoroutine()
			for deadline := time.Now().Add(10 * time.Second); n > before && time.Now().Before(deadline); n = runtime.NumGoroutine() {
				runtime.Gosched()
				time.Sleep(time.Millisecond)
			}
			if n > before {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("%d goroutines after the uploads, %d before:\n%s", n, before, buf)
			}
		})
	}
}

// heldDriver is an inmemory driver whose upload writers block their first
// Write until release is closed, and fail every Write once failAfter bytes
// were written (failAfter > 0).
type heldDriver struct {
	storagedriver.StorageDriver
	entered, release chan struct{}
	once             sync.Once
	failAfter        int64
	err              error
}

func (d *heldDriver) Writer(ctx context.Context, p string, appendMode bool) (storagedriver.FileWriter, error) {
	w, err := d.StorageDriver.Writer(ctx, p, appendMode)
	if err != nil {
		return nil, err
	}
	return &heldWriter{FileWriter: w, d: d}, nil
}

type heldWriter struct {
	storagedriver.FileWriter
	d       *heldDriver
	written int64
}

func (w *heldWriter) Write(p []byte) (int, error) {
	if w.d.release != nil {
		w.d.once.Do(func() {
			close(w.d.entered)
			<-w.d.release
		})
	}
	if w.d.failAfter > 0 && w.written >= w.d.failAfter {
		return 0, w.d.err
	}
	n, err := w.FileWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// TestUploadRemoteDriverOffTheWriterPath: a remote driver that takes its
// time (an S3 part upload) does not hold the writer: every byte is
// written and readable while the driver's first write waits, and the
// commit then stores them all.
func TestUploadRemoteDriverOffTheWriterPath(t *testing.T) {
	t.Parallel()
	d := &heldDriver{StorageDriver: inmemory.New(), entered: make(chan struct{}), release: make(chan struct{})}
	s, err := New(d, Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	content := randomBytes(t, 3*driverChunk+12345)
	u := newUpload(t, s)
	writeIn(t, u, content, 64<<10)
	<-d.entered
	all := make([]byte, len(content))
	if _, err := u.ReadAt(all, 0); err != nil || !bytes.Equal(all, content) {
		t.Fatalf("spool while the driver waits: %v", err)
	}
	if err := u.Verify(digest.FromBytes(content), int64(len(content))); err != nil {
		t.Fatalf("Verify while the driver waits: %v", err)
	}
	close(d.release)
	commitAndCheck(t, s, u, content)
}

// TestUploadRemoteDriverFailure: a driver that fails mid-upload costs the
// writer nothing (readers get every byte) and makes Commit fail with
// ErrStorageWrite and the driver's error; nothing is stored and nothing
// keeps running.
func TestUploadRemoteDriverFailure(t *testing.T) {
	t.Parallel()
	injected := errors.New("injected: bucket unreachable")
	d := &heldDriver{StorageDriver: inmemory.New(), failAfter: driverChunk, err: injected}
	s, err := New(d, Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	content := randomBytes(t, 3*driverChunk)
	u := newUpload(t, s)
	for off := 0; off < len(content); off += 64 << 10 {
		if _, err := u.Write(content[off:min(off+64<<10, len(content))]); err != nil {
			t.Fatalf("Write at %d: %v; want the driver's failure kept for Commit", off, err)
		}
	}
	all := make([]byte, len(content))
	if _, err := u.ReadAt(all, 0); err != nil || !bytes.Equal(all, content) {
		t.Fatalf("spool: %v", err)
	}
	dg := digest.FromBytes(content)
	err = u.Commit(t.Context(), dg, int64(len(content)))
	if !errors.Is(err, ErrStorageWrite) || !errors.Is(err, injected) {
		t.Fatalf("Commit = %v, want ErrStorageWrite with the driver's error", err)
	}
	if !hasherEnded(u) || !followerEnded(u.push) {
		t.Fatal("a follower still runs after a failed Commit")
	}
	u.Close()
	if _, err := s.StatBlob(t.Context(), dg); err == nil {
		t.Fatal("the blob was stored although the driver failed")
	}
	noUploadsLeft(t, s)
}

// followerEnded reports whether f's goroutine has returned (or never
// started and never will).
func followerEnded(f *spoolFollower) bool {
	f.mu.Lock()
	started, ended := f.started, f.ended
	f.mu.Unlock()
	if !started {
		return ended
	}
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// newUpload starts a SHA-256 upload in s.
func newUpload(t *testing.T, s *Store) *Upload {
	t.Helper()
	u, err := s.NewUpload(t.Context(), digest.SHA256, UploadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// writeIn writes content to u in pieces of size bytes, as socket reads do.
func writeIn(t *testing.T, u *Upload, content []byte, size int) {
	t.Helper()
	for off := 0; off < len(content); off += size {
		if _, err := u.Write(content[off:min(off+size, len(content))]); err != nil {
			t.Fatalf("Write at %d: %v", off, err)
		}
	}
}

// noUploadsLeft fails when s still holds an upload: in its upload area or,
// on S3, as a multipart upload.
func noUploadsLeft(t *testing.T, s *Store) {
	t.Helper()
	if ids := listUploads(t, s); len(ids) != 0 {
		t.Fatalf("uploads left behind: %v", ids)
	}
	if keys := pendingMultipart(t, s); len(keys) != 0 {
		t.Fatalf("multipart uploads left behind: %v", keys)
	}
}

// TestDeferredUpload: a deferred upload sends nothing to the driver while
// it is written (no upload, no multipart upload in the bucket); Commit
// writes the verified spool and moves it into place, or, when the blob
// was committed meanwhile by someone else (the replica the fill streamed
// from), stores nothing; a wrong digest commits nothing.
func TestDeferredUpload(t *testing.T) {
	t.Parallel()
	for _, b := range allBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.new(t)
			ctx := t.Context()
			deferred := func(content []byte) *Upload {
				u, err := s.NewUpload(ctx, digest.SHA256, UploadOptions{Deferred: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { u.Close() })
				writeIn(t, u, content, 64<<10)
				return u
			}
			content := randomBytes(t, 5<<20+12_000)
			d := digest.FromBytes(content)
			u := deferred(content)
			if b.name != "filesystem" {
				noUploadsLeft(t, s)
			}
			if err := u.Commit(ctx, d, int64(len(content))); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, s, d); !bytes.Equal(got, content) {
				t.Fatalf("committed %d bytes, want the %d written", len(got), len(content))
			}
			noUploadsLeft(t, s)

			// Committed by someone else meanwhile: nothing more is stored.
			again := deferred(content)
			if err := again.Commit(ctx, d, int64(len(content))); err != nil {
				t.Fatal(err)
			}
			noUploadsLeft(t, s)

			wrong := deferred(randomBytes(t, 1000))
			if err := wrong.Commit(ctx, digest.FromString("other"), -1); err == nil {
				t.Fatal("a deferred upload of other bytes was committed")
			}
			if _, err := s.StatBlob(ctx, digest.FromString("other")); !errors.Is(err, ErrNotFound) {
				t.Fatalf("blob after a failed Commit: %v", err)
			}
			noUploadsLeft(t, s)
		})
	}
}

// readAll reads a committed blob.
func readAll(t *testing.T, s *Store, d digest.Digest) []byte {
	t.Helper()
	rc, err := s.OpenBlob(t.Context(), d, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
