package mirror

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// serveRelay answers a blob GET straight from upstream when the cache
// cannot store it (disk full, read-only, permission denied): the client
// still gets its bytes, verified, and nothing is kept.
func (m *Mirror) serveRelay(w http.ResponseWriter, r *http.Request, t target, d digest.Digest) error {
	ctx := r.Context()
	body, size, err := t.reg.Client.Blob(ctx, t.repo, d)
	if err != nil {
		return err
	}
	body = m.fetched(t.reg.Host, body)
	defer body.Close()
	br, known := whole(size), size >= 0
	if known {
		if br, err = blobRange(r, d, size); err != nil {
			return rangeError(w, size, err)
		}
	}
	if !writeBlobHead(w, r, d, br, known, CachePass) {
		return nil
	}
	if err := relayCopy(w, body, d, size, br.start, br.end); err != nil {
		if errors.Is(err, errDigestMismatch) {
			m.opts.Observer.DigestMismatch(t.reg.Host)
		}
		logx.From(ctx).WithError(err).Info("relayed blob response cut short")
		panic(http.ErrAbortHandler)
	}
	return nil
}

// relayRest continues a response whose first bytes came from a fill that
// the cache could not finish: bytes [off, end) come from a new upstream
// download, and the whole blob is verified before the last byte goes out.
func (m *Mirror) relayRest(ctx context.Context, w io.Writer, t target, d digest.Digest, off, end int64) error {
	body, size, err := t.reg.Client.Blob(ctx, t.repo, d)
	if err != nil {
		return err
	}
	body = m.fetched(t.reg.Host, body)
	defer body.Close()
	err = relayCopy(w, body, d, size, off, end)
	if errors.Is(err, errDigestMismatch) {
		m.opts.Observer.DigestMismatch(t.reg.Host)
	}
	return err
}

// relayCopy reads the whole blob from body, hashing it, and writes the
// bytes [off, end) to w (end -1: to the end). The last byte written waits
// until the blob matched d, so a client never takes a wrong body for a
// complete one.
func relayCopy(w io.Writer, body io.Reader, d digest.Digest, size, off, end int64) error {
	h := d.Algorithm().Hash()
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	buf := *bufp
	var pos int64
	var pending []byte
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			h.Write(chunk)
			lo, hi := max(off-pos, 0), int64(n)
			if end >= 0 {
				hi = min(hi, end-pos)
			}
			if lo < hi {
				out := chunk[lo:hi]
				if len(pending) > 0 {
					if _, err := w.Write(pending); err != nil {
						return err
					}
				}
				if _, err := w.Write(out[:len(out)-1]); err != nil {
					return err
				}
				pending = append(pending[:0], out[len(out)-1])
			}
			pos += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d || (size >= 0 && pos != size) {
		return oci.Wrap(http.StatusBadGateway, oci.CodeBlobUnknown, errDigestMismatch, "upstream content does not match %s", d)
	}
	if len(pending) > 0 {
		_, err := w.Write(pending)
		return err
	}
	return nil
}

// causeLowOnDisk is the cause logged when a fill stops spooling because
// the disk is under the cache's free-space floor (Cache.LowOnDisk).
const causeLowOnDisk = "free space under the cache's floor"

// diskError logs a cache storage failure once per cause and interval: a
// full disk must not flood the log with one line per request.
func (m *Mirror) diskError(ctx context.Context, err error) {
	cause := "storage error"
	switch {
	case errors.Is(err, syscall.ENOSPC):
		cause = "disk full"
	case errors.Is(err, syscall.EROFS):
		cause = "read-only file system"
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EACCES):
		cause = "permission denied"
	case errors.Is(err, syscall.EDQUOT):
		cause = "disk quota exceeded"
	}
	m.cannotStore(ctx, cause, err)
}

// cannotStore logs that the cache cannot store blobs for cause (err may
// be nil), once per cause every 5 minutes.
func (m *Mirror) cannotStore(ctx context.Context, cause string, err error) {
	now := m.opts.Now()
	m.errMu.Lock()
	last, seen := m.errLogged[cause]
	if !seen || now.Sub(last) > 5*time.Minute {
		m.errLogged[cause] = now
	}
	m.errMu.Unlock()
	if !seen || now.Sub(last) > 5*time.Minute {
		log := logx.From(ctx).WithField("cause", cause)
		if err != nil {
			log = log.WithError(err)
		}
		log.Error("cache cannot store blobs; serving them from upstream without caching (logged once per cause every 5 minutes)")
	}
}

// relayWindow is how many bytes a relaying fill holds in memory for its
// readers: the slowest reader may lag that far behind upstream.
const relayWindow = 1 << 20

// window holds the latest bytes of a fill that relays instead of
// spooling: bytes [start, end) of the blob, in a ring. Bytes below
// spooled are in the spool. A registered reader at offset off keeps every
// byte from max(off, spooled) on, up to the end of its answer, until it
// moved past it. Guarded by the fill's mu.
type window struct {
	spooled    int64
	buf        []byte
	start, end int64
	moved      chan struct{} // closed and replaced when a reader moves on or leaves
}

// wake tells a writer waiting for room that a reader moved on.
func (w *window) wake() {
	close(w.moved)
	w.moved = make(chan struct{})
}

// put appends p at w.end; the caller made room.
func (w *window) put(p []byte) {
	n := int64(len(w.buf))
	for len(p) > 0 {
		c := copy(w.buf[w.end%n:], p)
		p = p[c:]
		w.end += int64(c)
	}
}

// get copies the bytes from off on (start <= off < end) into p.
func (w *window) get(p []byte, off int64) int {
	n := int64(len(w.buf))
	total := 0
	for len(p) > 0 && off < w.end {
		c := copy(p[:min(int64(len(p)), w.end-off)], w.buf[off%n:])
		p = p[c:]
		off += int64(c)
		total += c
	}
	return total
}

// startRelay switches f from spooling to relaying: the bytes past the
// spooled ones go through a window in memory (no larger than they are).
// A fill that never spooled (no upload) learns its size here and lets its
// readers in.
func (f *fill) startRelay(spooled, size int64) {
	n := int64(relayWindow)
	if size >= 0 {
		n = max(min(n, size-spooled), 1)
	}
	f.mu.Lock()
	f.relay = &window{spooled: spooled, buf: make([]byte, n), start: spooled, end: spooled, moved: make(chan struct{})}
	fresh := f.upload == nil
	if fresh {
		f.size = size
	}
	f.changedLocked()
	f.mu.Unlock()
	if fresh {
		closeReady(f)
	}
}

// lowest is the first byte of the window that a reader still needs: a
// reader in the spool needs the window from its start, one whose range
// ends before the window's bytes needs none of them. f.mu is held.
func (f *fill) lowest() int64 {
	w := f.relay
	low := w.end
	for rd := range f.readers {
		if need := max(rd.off, w.spooled); rd.end < 0 || need < rd.end {
			low = min(low, need)
		}
	}
	return low
}

// publish hands p to a relaying fill's readers. It waits while the
// window is full of bytes a reader still needs: the slowest reader sets
// the pace of the download.
func (f *fill) publish(ctx context.Context, p []byte) error {
	for len(p) > 0 {
		f.mu.Lock()
		w := f.relay
		w.start = max(w.start, f.lowest())
		room := int64(len(w.buf)) - (w.end - w.start)
		if room == 0 {
			moved := w.moved
			f.mu.Unlock()
			if err := wait(ctx, moved); err != nil {
				return err
			}
			continue
		}
		k := min(room, int64(len(p)))
		w.put(p[:k])
		f.written += k
		f.changedLocked()
		f.mu.Unlock()
		p = p[k:]
	}
	return nil
}

// errBehind ends a reader whose bytes a relaying fill no longer holds;
// attach and lowest see that it never happens.
var errBehind = errors.New("reader fell behind the relayed bytes")

// fromWindow copies the relayed bytes from off on into p.
func (f *fill) fromWindow(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off < f.relay.start || off >= f.relay.end {
		return 0, errBehind
	}
	return f.relay.get(p, off), nil
}

// relay goes on with a fill that can no longer spool (its disk failed or
// got low; up is nil when no upload could even start): the rest of body
// goes to the fill's readers through a window in memory, so that they
// share this one upstream download, and the whole blob is hashed here and
// verified at its end. Nothing is kept (errRelayed when the bytes
// matched). pending are bytes read but not spooled.
func (m *Mirror) relay(ctx context.Context, t target, f *fill, up *storage.Upload, body io.Reader, size int64, pending []byte) error {
	h := f.digest.Algorithm().Hash()
	var spooled int64
	if up != nil {
		spooled = up.Size()
		m.cancelUpload(ctx, up)
		if err := hashSpool(h, up, spooled); err != nil {
			m.diskError(ctx, err)
			return errNoCache
		}
	}
	f.startRelay(spooled, size)
	m.dropKeep(f)
	logx.From(ctx).WithFields(map[string]any{logx.FieldDigest: f.digest, "offset": spooled}).
		Info("blob fill: the cache cannot take the blob; relaying it to its clients, not kept")
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	if err := m.relayChunk(ctx, t, f, h, pending, size); err != nil {
		return err
	}
	for {
		n, rerr := body.Read(*bufp)
		if err := m.relayChunk(ctx, t, f, h, (*bufp)[:n], size); err != nil {
			return err
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return m.failFill(ctx, nil, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, rerr, "upstream %s cut the download of %s", t.reg.Host, f.digest))
		}
	}
	f.mu.Lock()
	n := f.written
	f.mu.Unlock()
	if got := digest.NewDigest(f.digest.Algorithm(), h); got != f.digest || (size >= 0 && n != size) {
		return m.mismatch(ctx, t, f, &storage.VerifyError{Digest: f.digest, Got: got, Size: n, WantSize: size})
	}
	f.markVerified()
	return errRelayed
}

// relayChunk hashes and publishes one chunk of a relayed blob.
func (m *Mirror) relayChunk(ctx context.Context, t target, f *fill, h hash.Hash, p []byte, size int64) error {
	if len(p) == 0 {
		return nil
	}
	f.mu.Lock()
	n := f.written
	f.mu.Unlock()
	if size >= 0 && n+int64(len(p)) > size {
		// Checked before the bytes are published: readers never take a
		// byte past the announced size, so the window would never drain.
		return m.failFill(ctx, nil, oci.Errorf(http.StatusBadGateway, oci.CodeBlobUnknown, "upstream %s sent more than the %d bytes it announced for %s", t.reg.Host, size, f.digest))
	}
	h.Write(p)
	if err := f.publish(ctx, p); err != nil {
		return m.failFill(ctx, nil, oci.Wrap(http.StatusGatewayTimeout, oci.CodeUnavailable, err, "relaying %s", f.digest))
	}
	return nil
}

// hashSpool hashes the first n spooled bytes of up.
func hashSpool(h hash.Hash, up *storage.Upload, n int64) error {
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	if _, err := io.CopyBuffer(h, io.NewSectionReader(up, 0, n), *bufp); err != nil {
		return fmt.Errorf("reading the spool back: %w", err)
	}
	return nil
}
