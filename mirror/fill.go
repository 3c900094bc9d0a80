package mirror

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// A fill downloads one blob from upstream once, however many clients ask
// for it at the same time. The bytes go to a storage.Upload whose spool
// every waiting client reads as it grows; at EOF size and digest are
// verified and only then is the blob committed. Fills live in the
// Mirror's map from digest to fill until they end.
type fill struct {
	digest digest.Digest
	// ns and repo are the repository the fill was started for: the one
	// the blob is linked to when it commits.
	ns, repo string

	ready chan struct{} // closed when size and upload are known, or on failure

	mu      sync.Mutex
	size    int64 // -1 when upstream did not say
	written int64
	done    bool
	err     error
	// verified is set once the spooled bytes matched the digest: only then
	// do readers get the last byte, so no client ever receives a
	// complete-looking body that does not match.
	verified bool
	changed  chan struct{} // closed and replaced on every change
	upload   *storage.Upload

	refs int // guarded by Mirror.mu: the fill goroutine and each reader

	started time.Time
	// forPeer says another replica started the fill (FillRequest.ForPeer).
	forPeer bool
	// source is where the bytes come from (FillRequest.Source), "" until
	// the Fetcher said; guarded by mu.
	source string
	// purged says the blob was deleted through the shim while the fill
	// ran (purge.go): it commits nothing. Guarded by Mirror.purging.
	purged bool
}

// errNoCache tells waiting clients that the cache cannot take the blob
// (disk full, read-only, permission denied): each serves it straight from
// upstream instead (relay), from where its answer stands.
var errNoCache = errors.New("cache cannot store the blob")

// errStored tells waiting clients that the blob was committed by someone
// else before this fill started: they serve it from storage instead.
var errStored = errors.New("blob already stored")

// errNotKept ends a verified fill of a blob too large for the cache: its
// clients got every byte, nothing is committed.
var errNotKept = errors.New("blob not kept: larger than the cache")

// copyBufPool holds the buffers of fills and fill readers.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// joinFill returns the fill in flight for d, or starts one for t. The
// caller holds a reference and must call release.
func (m *Mirror) joinFill(ctx context.Context, t target, d digest.Digest, forPeer bool) (f *fill, started bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.fills[d.String()]; f != nil {
		f.refs++
		return f, false
	}
	f = &fill{digest: d, ns: t.reg.Namespace, repo: t.repo, size: -1, forPeer: forPeer,
		ready: make(chan struct{}), changed: make(chan struct{}), refs: 2, started: m.opts.Now()}
	m.fills[d.String()] = f
	m.fillStarted()
	unpin := m.opts.Cache.Pin(d)
	go func() {
		defer m.fillEnded()
		defer unpin()
		m.runFill(ctx, t, f)
	}()
	return f, true
}

// peekFill returns the fill in flight for d with a reference, or nil.
func (m *Mirror) peekFill(d digest.Digest) *fill {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.fills[d.String()]
	if f != nil {
		f.refs++
	}
	return f
}

// release drops a reference; the last one closes the spool.
func (m *Mirror) release(f *fill) {
	m.mu.Lock()
	f.refs--
	last := f.refs == 0
	m.mu.Unlock()
	if last {
		f.mu.Lock()
		up := f.upload
		f.mu.Unlock()
		if up != nil {
			if err := up.Close(); err != nil {
				logx.From(context.Background()).WithError(err).WithField(logx.FieldDigest, f.digest).Debug("closing a fill's spool")
			}
		}
	}
}

// runFill is the fill's goroutine (docs/architecture.md, "The fill"): it
// runs on a context detached from the client that started it, bounded by
// FillTimeout, so a client hanging up does not waste the download. Its
// steps: fetch from upstream, spool (clients read as it grows), verify,
// then commit — or end the fill with the reason it could not.
func (m *Mirror) runFill(reqCtx context.Context, t target, f *fill) {
	ctx, cancel := detached(reqCtx, m.opts.FillTimeout)
	defer cancel()
	go func() {
		select {
		case <-m.abandoned:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer m.release(f)
	log := logx.From(ctx).WithFields(map[string]any{logx.FieldUpstream: t.reg.Host, logx.FieldRepo: t.repo, logx.FieldDigest: f.digest})

	if _, err := m.store.StatBlob(ctx, f.digest); err == nil {
		m.endFill(f, errStored)
		return
	}
	req, observed := m.fillRequest(t, f)
	defer observed()
	body, size, err := m.opts.Fetcher.Fetch(ctx, req)
	if err != nil {
		log.WithError(err).Info("blob fill: upstream refused")
		m.endFill(f, err)
		return
	}
	defer body.Close()
	up, keep, err := m.startUpload(ctx, f, size)
	if err != nil {
		m.diskError(ctx, err)
		m.endFill(f, errNoCache)
		return
	}
	if !keep {
		log.WithField("bytes", size).Warn("blob is larger than the cache's whole size bound: streamed to its clients, not kept")
	}
	if err := m.spool(ctx, t, f, up, body, size); err != nil {
		m.endFill(f, err)
		return
	}
	if err := m.verify(ctx, t, f, up, size); err != nil {
		m.endFill(f, err)
		return
	}
	if keep && size < 0 && !m.opts.Cache.Admit(up.Size()) {
		// Sent without a length: only now is it known not to fit. It must
		// not empty the cache to make room for itself.
		keep = false
		log.WithField("bytes", up.Size()).Warn("blob sent without a length is larger than the cache's whole size bound: streamed to its clients, not kept")
	}
	if !keep {
		m.cancelUpload(ctx, up)
		m.endFill(f, errNotKept)
		return
	}
	settle(ctx, f, body)
	m.endFill(f, m.commitUnlessPurged(ctx, t, f, up, size))
}

// fillRequest is what the Fetcher is asked for f. Only downloads from
// upstream count as fills in flight and as fetched bytes (a fill streamed
// from another replica is that replica's download); observed ends the
// observation, if there was one, when the fill ends.
func (m *Mirror) fillRequest(t target, f *fill) (req FillRequest, observed func()) {
	var end func()
	req = FillRequest{Digest: f.digest, Upstream: t.reg.Host, Repo: t.repo, ForPeer: f.forPeer, Source: f.setSource,
		// Called on the fill's goroutine only (Fetch, and the body's Read).
		FromUpstream: func(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
			if end == nil {
				end = m.observeFill(t.reg.Host)
			}
			body, size, err := t.reg.Client.BlobFrom(ctx, t.repo, f.digest, off)
			if err != nil {
				return nil, size, err
			}
			return m.fetched(t.reg.Host, body), size, nil
		}}
	return req, func() {
		if end != nil {
			end()
		}
	}
}

// startUpload opens the upload the fill spools into, publishes it to the
// fill's readers and says whether the blob will be kept (its announced
// size fits the cache).
func (m *Mirror) startUpload(ctx context.Context, f *fill, size int64) (*storage.Upload, bool, error) {
	// Bytes streamed from another replica stay in the local spool until
	// the commit, which finds them committed by that replica (the bucket
	// receives the blob once) or writes them itself.
	up, err := m.store.NewUpload(ctx, f.digest.Algorithm(), storage.UploadOptions{Deferred: f.fromPeer()})
	if err != nil {
		return nil, false, err
	}
	keep := size < 0 || m.opts.Cache.Admit(size)
	f.mu.Lock()
	f.size, f.upload = size, up
	f.mu.Unlock()
	close(f.ready)
	return up, keep, nil
}

// spool copies upstream's body into the upload; readers get the bytes as
// soon as they are spooled, the hash follows on the upload's own
// goroutine (their last byte waits for verify anyway). On failure the
// upload is removed and the error says whose fault it was: errNoCache for
// the disk, an *oci.Error for upstream.
func (m *Mirror) spool(ctx context.Context, t target, f *fill, up *storage.Upload, body io.Reader, size int64) error {
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	buf := *bufp
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := up.WriteThen(buf[:n], func(k int) { f.progress(int64(k)) }); werr != nil {
				m.cancelUpload(ctx, up)
				m.diskError(ctx, werr)
				return errNoCache
			}
			if size >= 0 && up.Size() > size {
				return m.failFill(ctx, up, oci.Errorf(http.StatusBadGateway, oci.CodeBlobUnknown, "upstream %s sent more than the %d bytes it announced for %s", t.reg.Host, size, f.digest))
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return m.failFill(ctx, up, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, rerr, "upstream %s cut the download of %s", t.reg.Host, f.digest))
		}
	}
}

// verify checks the spooled bytes against the digest (and the announced
// size) and, when they match, lets the readers have the last byte.
func (m *Mirror) verify(ctx context.Context, t target, f *fill, up *storage.Upload, size int64) error {
	err := up.Verify(f.digest, size)
	if err != nil {
		m.cancelUpload(ctx, up)
		if errors.Is(err, storage.ErrStorageWrite) {
			// The spool could not be read back for the hash: the disk's
			// fault, not upstream's.
			m.diskError(ctx, err)
			return errNoCache
		}
		m.opts.Observer.DigestMismatch(t.reg.Host)
		logx.From(ctx).WithError(err).WithField(logx.FieldDigest, f.digest).Error("blob fill: upstream content does not match its digest; nothing committed")
		return oci.Wrap(http.StatusBadGateway, oci.CodeBlobUnknown, err, "upstream %s sent content that does not match %s", t.reg.Host, f.digest)
	}
	f.mu.Lock()
	f.verified = true
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	return nil
}

// settle waits, for a fill streamed from another replica, until that
// replica stored the blob (or gave up), so that the commit finds it
// stored rather than storing it again (Settler).
func settle(ctx context.Context, f *fill, body io.Reader) {
	if s, ok := body.(Settler); ok && f.fromPeer() {
		s.Settle(ctx)
	}
}

// commit makes room in the cache, moves the verified blob into place,
// links it to the repository and records it. A storage failure is a disk
// error (logged once per cause): the clients already have every verified
// byte, and the cache keeps nothing.
func (m *Mirror) commit(ctx context.Context, t target, f *fill, up *storage.Upload, size int64) error {
	log := logx.From(ctx).WithField(logx.FieldDigest, f.digest)
	if err := m.opts.Cache.Reserve(ctx, up.Size()); err != nil {
		log.WithError(err).Warn("making room in the cache")
	}
	if err := up.Commit(ctx, f.digest, size); err != nil {
		m.diskError(ctx, err)
		return errNoCache
	}
	if err := m.store.Link(ctx, t.reg.Namespace, t.repo, f.digest, storage.LinkInfo{Size: up.Size(), LinkedAt: m.opts.Now().UTC()}); err != nil {
		log.WithError(err).Warn("blob fill: linking repository")
	}
	log.WithField("bytes", up.Size()).Debug("blob fill committed")
	if err := m.opts.Cache.Committed(ctx, storage.Content{Digest: f.digest, Size: up.Size(), Namespace: t.reg.Namespace, Repo: t.repo}); err != nil {
		log.WithError(err).Warn("blob fill")
	}
	return nil
}

// failFill removes the upload of a fill that upstream failed, and logs
// why; it returns err for the fill's readers.
func (m *Mirror) failFill(ctx context.Context, up *storage.Upload, err error) error {
	m.cancelUpload(ctx, up)
	logx.From(ctx).WithError(err).Warn("blob fill failed; nothing committed")
	return err
}

// cancelUpload removes an upload that will not be committed. ctx may be
// over (timeout, Abandon): the upload is removed anyway.
func (m *Mirror) cancelUpload(ctx context.Context, up *storage.Upload) {
	if err := up.Cancel(context.WithoutCancel(ctx)); err != nil {
		logx.From(ctx).WithError(err).Warn("removing an upload that will not be committed")
	}
}

// setSource records where the fill's bytes come from.
func (f *fill) setSource(s string) {
	f.mu.Lock()
	f.source = s
	f.mu.Unlock()
}

// fromPeer reports whether the fill streams another replica's fill.
func (f *fill) fromPeer() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.source != "" && f.source != SourceUpstream
}

// progress records n more bytes in the spool and wakes the readers.
func (f *fill) progress(n int64) {
	f.mu.Lock()
	f.written += n
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// endFill removes f from the map (a later request starts afresh) and marks
// it done with err (nil on success).
func (m *Mirror) endFill(f *fill, err error) {
	m.mu.Lock()
	if m.fills[f.digest.String()] == f {
		delete(m.fills, f.digest.String())
	}
	m.mu.Unlock()
	f.mu.Lock()
	f.done, f.err = true, err
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	select {
	case <-f.ready:
	default:
		close(f.ready)
	}
}

// view is what a reader may do with a fill right now.
type view struct {
	// avail is how many bytes may be sent: all that was written once the
	// fill is verified, else all but the last byte, so that a failed fill
	// always cuts a response short.
	avail    int64
	verified bool
	done     bool
	err      error // the fill failed before its bytes were verified
	changed  <-chan struct{}
}

func (f *fill) view() view {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := view{avail: f.written, verified: f.verified, done: f.done, changed: f.changed}
	if f.err != nil && !f.verified {
		v.err = f.err
	}
	if !f.verified {
		if f.size >= 0 {
			v.avail = min(f.written, f.size-1)
		} else {
			v.avail = f.written - 1
		}
	}
	return v
}

// wait blocks until the fill changes or ctx ends.
func wait(ctx context.Context, changed <-chan struct{}) error {
	select {
	case <-changed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// copyFill sends the fill's bytes [off, end) to w as they arrive (end -1:
// up to the end of the blob). With a file of its own on the spool it lets
// the kernel copy (sendfile); otherwise it reads the spool with ReadAt. It
// returns the offset reached, so that a fill that could not be cached can
// be continued from upstream.
func copyFill(ctx context.Context, w io.Writer, f *fill, off, end int64) (int64, error) {
	spool, err := f.upload.OpenSpool()
	var bufp *[]byte
	if err != nil {
		bufp = copyBufPool.Get().(*[]byte)
		defer copyBufPool.Put(bufp)
	} else {
		defer spool.Close() //nolint:errcheck // a read-only descriptor of the spool
		if _, err := spool.Seek(off, io.SeekStart); err != nil {
			return off, err
		}
	}
	for {
		if end >= 0 && off >= end {
			return off, nil
		}
		v := f.view()
		if v.err != nil {
			return off, v.err
		}
		limit := v.avail
		if end >= 0 {
			limit = min(limit, end)
			if !v.verified {
				// A range's last byte waits for the whole blob's
				// verification too: a range that ends before the blob
				// does is never answered complete from unverified bytes.
				limit = min(limit, end-1)
			}
		}
		if off < limit {
			var n int64
			if spool != nil {
				n, err = io.CopyN(w, spool, limit-off)
			} else {
				var k int
				buf := (*bufp)[:min(int64(len(*bufp)), limit-off)]
				k, err = f.upload.ReadAt(buf, off)
				if k > 0 {
					k, err = w.Write(buf[:k])
				}
				n = int64(k)
			}
			off += n
			if err != nil {
				return off, err
			}
			continue
		}
		if v.done {
			if end >= 0 && off < end {
				return off, io.ErrUnexpectedEOF
			}
			return off, nil
		}
		if err := wait(ctx, v.changed); err != nil {
			return off, err
		}
	}
}
