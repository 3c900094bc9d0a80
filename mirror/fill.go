package mirror

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// A fill downloads one blob from one upstream once, however many clients
// ask it for that blob at the same time. The bytes go to a
// storage.Upload whose spool every waiting client reads as it grows; at
// EOF size and digest are verified and only then is the blob committed.
// Fills live in the Mirror's map, by upstream namespace and digest, until
// they end: a client never waits for, nor reads, another upstream's bytes.
type fill struct {
	digest digest.Digest
	// ns and repo are the repository the fill was started for: the one
	// the blob is linked to when it commits.
	ns, repo string

	ready chan struct{} // closed when size and upload are known, or on failure
	// stop ends the fill (its context) with a cause: nobody reads a blob
	// it will not keep, or the mirror abandons its fills.
	stop context.CancelCauseFunc

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
	// relay holds the bytes past the spool once the fill could no longer
	// spool (the disk failed or is low, relay.go); nil while it spools.
	relay *window
	// readers are the responses reading the fill, each with the offset it
	// reached: a relaying fill keeps the bytes they still need.
	readers map[*fillReader]struct{}

	refs int // guarded by Mirror.mu: the fill goroutine and each reader
	// unkept says the blob will not be kept (larger than the cache, or
	// relayed): the fill stops when nobody reads it. Guarded by Mirror.mu.
	unkept bool

	started time.Time
	// forPeer says another replica started the fill (FillRequest.ForPeer).
	forPeer bool
	// source is where the bytes come from (FillRequest.Source), "" until
	// the Fetcher said; guarded by mu.
	source string
	// sourced is closed once the Fetcher named the first source, or when
	// the fill ended without one (closed under mu).
	sourced chan struct{}
	// purged says the blob was deleted through the shim while the fill
	// ran (purge.go): it commits nothing. Guarded by Mirror.purging.
	purged bool
}

// fillKey names a fill in flight: the upstream namespace and the digest.
type fillKey struct {
	ns string
	d  digest.Digest
}

// fillReader is one response reading a fill, at offset off, up to end
// (-1: the blob's end). Guarded by the fill's mu.
type fillReader struct {
	off, end int64
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

// errRelayed ends a verified fill that could not spool the whole blob
// (relay.go): its clients got every byte, nothing is committed.
var errRelayed = errors.New("blob relayed to its clients, not kept")

// errNobodyWaits stops a fill whose blob will not be kept once its last
// reader left.
var errNobodyWaits = errors.New("nobody waits for a blob that will not be kept")

// copyBufPool holds the buffers of fills and fill readers.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// fillRetryAfter is the Retry-After of an answer refused because too many
// fills run (Options.MaxFills).
const fillRetryAfter = "5"

// joinFill returns the fill in flight for d from t's upstream, or starts
// one for t (refused past Options.MaxFills or MaxFillsPerUpstream).
// prove starts it even though the blob is stored: t's repository is
// linked to a blob that another registry holds only by a fill through
// t's upstream that verifies (docs/security.md, "Who can read what").
// The caller holds a reference and must call release, and reads the
// fill as rd (registered at offset 0, which keeps a relaying fill's bytes
// for it; nil when a relaying fill no longer holds them).
func (m *Mirror) joinFill(ctx context.Context, t target, d digest.Digest, forPeer, prove bool) (f *fill, rd *fillReader, started bool, err error) {
	k := fillKey{ns: t.reg.Namespace, d: d}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.fills[k]; f != nil {
		f.refs++
		rd, _ := f.attach()
		return f, rd, false, nil
	}
	if err := m.fillRoom(t); err != nil {
		return nil, nil, false, err
	}
	rd = &fillReader{end: -1}
	tctx, cancelTimeout := detached(ctx, m.opts.FillTimeout)
	fctx, stop := context.WithCancelCause(tctx)
	f = &fill{digest: d, ns: t.reg.Namespace, repo: t.repo, size: -1, forPeer: forPeer, stop: stop,
		ready: make(chan struct{}), sourced: make(chan struct{}), changed: make(chan struct{}), readers: map[*fillReader]struct{}{rd: {}},
		refs: 2, started: m.opts.Now()}
	m.fills[k] = f
	m.fillStarted(k.ns)
	unpin := m.opts.Cache.Pin(d)
	go func() {
		defer m.fillEnded(k.ns)
		defer unpin()
		defer cancelTimeout()
		defer stop(nil)
		m.runFill(fctx, t, f, prove)
	}()
	return f, rd, true, nil
}

// fillRoom refuses a new fill when Options.MaxFills fills run, or
// MaxFillsPerUpstream from t's upstream. m.mu is held.
func (m *Mirror) fillRoom(t target) error {
	var e *oci.Error
	switch all, one := m.opts.MaxFills, m.opts.MaxFillsPerUpstream; {
	case all > 0 && m.running >= all:
		e = oci.Errorf(http.StatusServiceUnavailable, oci.CodeUnavailable,
			"the proxy is downloading %d blobs, as many as it downloads at once; retry later", all)
	case one > 0 && m.perUpstream[t.reg.Namespace] >= one:
		e = oci.Errorf(http.StatusServiceUnavailable, oci.CodeUnavailable,
			"the proxy is downloading %d blobs from %s, as many as it downloads at once from one upstream; retry later", one, t.reg.Host)
	default:
		return nil
	}
	e.RetryAfter = fillRetryAfter
	return e
}

// peekFill returns the fill in flight for d from t's upstream with a
// reference, or nil.
func (m *Mirror) peekFill(t target, d digest.Digest) *fill {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.fills[fillKey{ns: t.reg.Namespace, d: d}]
	if f != nil {
		f.refs++
	}
	return f
}

// release drops a reference; the last one closes the spool. When only
// the fill's own reference is left and its blob will not be kept, the
// fill stops: nobody would get anything from it.
func (m *Mirror) release(f *fill) {
	m.mu.Lock()
	f.refs--
	last, alone := f.refs == 0, f.refs == 1 && f.unkept
	m.mu.Unlock()
	if alone {
		f.stop(errNobodyWaits)
	}
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

// dropKeep marks f's blob as one that will not be kept: the fill stops
// as soon as nobody reads it (at once if nobody does). It reports whether
// that is news.
func (m *Mirror) dropKeep(f *fill) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f.unkept {
		return false
	}
	f.unkept = true
	if f.refs <= 1 {
		f.stop(errNobodyWaits)
	}
	return true
}

// kept reports whether f's blob is still to be kept.
func (m *Mirror) kept(f *fill) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !f.unkept
}

// runFill is the fill's goroutine (docs/architecture.md, "The fill"): it
// runs on a context detached from the client that started it, bounded by
// FillTimeout, so a client hanging up does not waste the download (unless
// the blob will not be kept and nobody else reads it). Its steps: fetch
// from upstream, spool (clients read as it grows), verify, then commit —
// or end the fill with the reason it could not.
func (m *Mirror) runFill(ctx context.Context, t target, f *fill, prove bool) {
	go func() {
		select {
		case <-m.abandoned:
			f.stop(nil)
		case <-ctx.Done():
		}
	}()
	defer m.release(f)
	log := logx.From(ctx).WithFields(map[string]any{logx.FieldUpstream: t.reg.Host, logx.FieldRepo: t.repo, logx.FieldDigest: f.digest})

	if !prove {
		if _, err := m.store.StatBlob(ctx, f.digest); err == nil {
			m.endFill(f, errStored)
			return
		}
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
	m.endFill(f, m.fillFrom(ctx, t, f, body, size))
}

// fillFrom spools body, verifies it and commits it (or relays it when the
// cache cannot take it), and returns how the fill ended (nil: committed).
func (m *Mirror) fillFrom(ctx context.Context, t target, f *fill, body io.Reader, size int64) error {
	log := logx.From(ctx).WithFields(map[string]any{logx.FieldUpstream: t.reg.Host, logx.FieldRepo: t.repo, logx.FieldDigest: f.digest})
	up, err := m.startUpload(ctx, f, size)
	if err != nil {
		m.diskError(ctx, err)
		return m.relay(ctx, t, f, nil, body, size, nil)
	}
	if size >= 0 && !m.opts.Cache.Admit(size) {
		m.dropKeep(f)
		log.WithField("bytes", size).Warn("blob is larger than the cache's whole size bound: streamed to its clients, not kept")
	}
	if err := m.spool(ctx, t, f, up, body, size); err != nil {
		return err
	}
	if err := m.verify(ctx, t, f, up, size); err != nil {
		return err
	}
	if size < 0 && !m.opts.Cache.Admit(up.Size()) && m.dropKeep(f) {
		// Sent without a length: only now is it known not to fit. It must
		// not empty the cache to make room for itself.
		log.WithField("bytes", up.Size()).Warn("blob sent without a length is larger than the cache's whole size bound: streamed to its clients, not kept")
	}
	if !m.kept(f) {
		m.cancelUpload(ctx, up)
		return errNotKept
	}
	settle(ctx, f, body)
	return m.commitUnlessPurged(ctx, t, f, up, size)
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

// startUpload opens the upload the fill spools into and publishes it to
// the fill's readers.
func (m *Mirror) startUpload(ctx context.Context, f *fill, size int64) (*storage.Upload, error) {
	// Bytes streamed from another replica stay in the local spool until
	// the commit, which finds them committed by that replica (the bucket
	// receives the blob once) or writes them itself.
	up, err := m.store.NewUpload(ctx, f.digest.Algorithm(), storage.UploadOptions{Deferred: f.fromPeer()})
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.size, f.upload = size, up
	f.mu.Unlock()
	close(f.ready)
	return up, nil
}

// spoolCheck is how many bytes a fill spools between two looks at the
// disk's free space (Cache.LowOnDisk) and, for a blob of unknown size, at
// whether it still fits the cache.
const spoolCheck = 1 << 20

// spool copies upstream's body into the upload; readers get the bytes as
// soon as they are spooled, the hash follows on the upload's own
// goroutine (their last byte waits for verify anyway). When the disk
// fails, or gets low, the rest of the blob is relayed to the readers and
// nothing is kept (errRelayed, or how the relay failed). On failure the
// upload is removed and the error says whose fault it was: errNoCache for
// the disk, an *oci.Error for upstream.
func (m *Mirror) spool(ctx context.Context, t target, f *fill, up *storage.Upload, body io.Reader, size int64) error {
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	buf := *bufp
	var next int64
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			k, werr := up.WriteThen(buf[:n], func(k int) { f.progress(int64(k)) })
			if werr != nil {
				m.diskError(ctx, werr)
				return m.relay(ctx, t, f, up, body, size, buf[k:n])
			}
			if size >= 0 && up.Size() > size {
				return m.failFill(ctx, up, oci.Errorf(http.StatusBadGateway, oci.CodeBlobUnknown, "upstream %s sent more than the %d bytes it announced for %s", t.reg.Host, size, f.digest))
			}
			if up.Size() >= next {
				next = up.Size() + spoolCheck
				if m.opts.Cache.LowOnDisk() {
					m.cannotStore(ctx, causeLowOnDisk, nil)
					return m.relay(ctx, t, f, up, body, size, nil)
				}
				m.checkFits(ctx, f, up.Size(), size)
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

// checkFits drops the keeping of a blob sent without a length once more
// of it was spooled than the cache holds at all: it will not be kept, and
// the fill stops when nobody reads it.
func (m *Mirror) checkFits(ctx context.Context, f *fill, spooled, size int64) {
	if size < 0 && !m.opts.Cache.Admit(spooled) && m.dropKeep(f) {
		logx.From(ctx).WithField(logx.FieldDigest, f.digest).WithField("bytes", spooled).
			Warn("blob sent without a length is larger than the cache's whole size bound: streamed to its clients, not kept")
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
		return m.mismatch(ctx, t, f, err)
	}
	f.markVerified()
	return nil
}

// mismatch reports upstream content that does not match its digest.
func (m *Mirror) mismatch(ctx context.Context, t target, f *fill, err error) error {
	m.opts.Observer.DigestMismatch(t.reg.Host)
	logx.From(ctx).WithError(err).WithField(logx.FieldDigest, f.digest).Error("blob fill: upstream content does not match its digest; nothing committed")
	return oci.Wrap(http.StatusBadGateway, oci.CodeBlobUnknown, err, "upstream %s sent content that does not match %s", t.reg.Host, f.digest)
}

// markVerified lets the readers have every byte.
func (f *fill) markVerified() {
	f.mu.Lock()
	f.verified = true
	f.changedLocked()
	f.mu.Unlock()
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
// links it to the repository and records it. A blob stored meanwhile (by
// a fill of the same digest from another upstream) is not stored again:
// these verified bytes link it to this repository. A storage failure is a
// disk error (logged once per cause): the clients already have every
// verified byte, and the cache keeps nothing.
func (m *Mirror) commit(ctx context.Context, t target, f *fill, up *storage.Upload, size int64) error {
	log := logx.From(ctx).WithField(logx.FieldDigest, f.digest)
	lock := &m.commits[int(f.digest.Encoded()[0])%len(m.commits)]
	lock.Lock()
	defer lock.Unlock()
	if _, err := m.store.StatBlob(ctx, f.digest); err == nil {
		m.cancelUpload(ctx, up)
		m.link(ctx, t, f.digest, up.Size())
		log.Debug("blob fill verified; the blob was stored meanwhile: linked")
		return nil
	}
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
// why; it returns err for the fill's readers. A fill stopped because
// nobody reads a blob it would not keep says so instead.
func (m *Mirror) failFill(ctx context.Context, up *storage.Upload, err error) error {
	if up != nil {
		m.cancelUpload(ctx, up)
	}
	if errors.Is(context.Cause(ctx), errNobodyWaits) {
		logx.From(ctx).Info("blob fill stopped: nobody waits for a blob that will not be kept; nothing committed")
		return err
	}
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
	f.sourcedLocked()
	f.mu.Unlock()
}

// sourcedLocked closes f.sourced unless it is closed; f.mu is held.
func (f *fill) sourcedLocked() {
	select {
	case <-f.sourced:
	default:
		close(f.sourced)
	}
}

// streamsFromPeer waits until the fill's Fetcher chose its source (or the
// fill ended, or ctx did) and reports whether that source is another
// replica. Deciding asks only Redis, never a peer, so two replicas
// waiting on each other's fills cannot deadlock.
func (f *fill) streamsFromPeer(ctx context.Context) (bool, error) {
	select {
	case <-f.sourced:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	return f.fromPeer(), nil
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
	f.changedLocked()
	f.mu.Unlock()
}

// changedLocked wakes the readers; f.mu is held.
func (f *fill) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// endFill removes f from the map (a later request starts afresh) and marks
// it done with err (nil on success).
func (m *Mirror) endFill(f *fill, err error) {
	k := fillKey{ns: f.ns, d: f.digest}
	m.mu.Lock()
	if m.fills[k] == f {
		delete(m.fills, k)
	}
	m.mu.Unlock()
	f.mu.Lock()
	f.done, f.err = true, err
	f.changedLocked()
	f.sourcedLocked()
	f.mu.Unlock()
	closeReady(f)
}

// closeReady closes f.ready unless it is closed; only the fill's
// goroutine calls it.
func closeReady(f *fill) {
	select {
	case <-f.ready:
	default:
		close(f.ready)
	}
}

// attach registers a reader that starts at offset 0 (until seek). It is
// refused (false) when the fill relays and no longer holds every byte: a
// reader that came too late for the relay. Mirror.mu may be held.
func (f *fill) attach() (*fillReader, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w := f.relay; w != nil && w.start > w.spooled {
		return nil, false
	}
	rd := &fillReader{end: -1}
	f.readers[rd] = struct{}{}
	return rd, true
}

// seek sets the bytes [off, end) rd answers (end -1: to the blob's end),
// once the blob's size is known; rd is still at offset 0.
func (f *fill) seek(rd *fillReader, off, end int64) {
	f.mu.Lock()
	rd.off, rd.end = off, end
	f.mu.Unlock()
}

// detach ends a reader (nil: none): a relaying fill no longer keeps
// bytes for it.
func (f *fill) detach(rd *fillReader) {
	if rd == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.readers, rd)
	if f.relay != nil {
		f.relay.wake()
	}
}

// relaying reports whether f relays instead of spooling: nothing of it
// is kept.
func (f *fill) relaying() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.relay != nil
}

// view is what a reader may do with a fill right now.
type view struct {
	// avail is how many bytes may be sent: all that was written once the
	// fill is verified, else all but the last byte, so that a failed fill
	// always cuts a response short.
	avail int64
	// written is how many bytes arrived; spooled is how many of them are in the spool; the others are in
	// the relay's window (relaying).
	written  int64
	spooled  int64
	relaying bool
	verified bool
	done     bool
	err      error // the fill failed before its bytes were verified
	changed  <-chan struct{}
}

// step records that rd reached off and returns the fill's view.
func (f *fill) step(rd *fillReader, off int64) view {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rd.off != off {
		rd.off = off
		if f.relay != nil {
			f.relay.wake()
		}
	}
	v := view{avail: f.written, written: f.written, spooled: f.written, verified: f.verified, done: f.done, changed: f.changed}
	if f.relay != nil {
		v.spooled, v.relaying = f.relay.spooled, true
	}
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
// up to the end of the blob), for the reader rd. Bytes in the spool go
// through a file of the reader's own on it, so the kernel copies them
// (sendfile), or else through ReadAt; those a relaying fill holds in
// memory are copied from its window. It returns the offset reached, so
// that a fill that could not be cached can be continued from upstream.
func copyFill(ctx context.Context, w io.Writer, f *fill, rd *fillReader, off, end int64) (int64, error) {
	c := &fillCopy{f: f, rd: rd, w: w}
	defer c.close()
	if err := c.open(off); err != nil {
		return off, err
	}
	for {
		if end >= 0 && off >= end {
			return off, nil
		}
		v := f.step(rd, off)
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
			n, err := c.copy(off, limit, v.spooled)
			off += n
			if err != nil {
				return off, err
			}
			continue
		}
		if v.relaying && !v.verified && end >= 0 && off == end-1 && off >= v.spooled && off < v.written {
			return c.finishTail(ctx, off)
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

// fillCopy is copyFill's means: the reader's file on the spool, or a
// buffer for ReadAt and the relay's window.
type fillCopy struct {
	f     *fill
	rd    *fillReader
	w     io.Writer
	spool *os.File
	bufp  *[]byte
}

// finishTail ends a range whose last byte, at off, a relaying fill holds
// in its window: the byte is taken out of the window (which then keeps
// nothing for this reader, and cannot be held up by it) and sent once the
// whole blob is verified.
func (c *fillCopy) finishTail(ctx context.Context, off int64) (int64, error) {
	var last [1]byte
	if _, err := c.f.fromWindow(last[:], off); err != nil {
		return off, err
	}
	c.f.seek(c.rd, off+1, off+1)
	for {
		v := c.f.step(c.rd, off+1)
		switch {
		case v.err != nil:
			return off, v.err
		case v.verified:
			if _, err := c.w.Write(last[:]); err != nil {
				return off, err
			}
			return off + 1, nil
		case v.done:
			return off, io.ErrUnexpectedEOF
		}
		if err := wait(ctx, v.changed); err != nil {
			return off, err
		}
	}
}

// open opens the reader's own file on the spool, at off; without one
// (no /proc, or a fill that never spooled) the buffer serves.
func (c *fillCopy) open(off int64) error {
	if c.f.upload == nil {
		return nil
	}
	spool, err := c.f.upload.OpenSpool()
	if err != nil {
		return nil //nolint:nilerr // ReadAt serves instead
	}
	c.spool = spool
	if _, err := spool.Seek(off, io.SeekStart); err != nil {
		return err
	}
	return nil
}

func (c *fillCopy) buf() []byte {
	if c.bufp == nil {
		c.bufp = copyBufPool.Get().(*[]byte)
	}
	return *c.bufp
}

func (c *fillCopy) close() {
	if c.spool != nil {
		c.spool.Close() //nolint:errcheck // a read-only descriptor of the spool
	}
	if c.bufp != nil {
		copyBufPool.Put(c.bufp)
	}
}

// copy sends bytes from off on, up to limit, from the spool (below
// spooled) or the relay's window; it returns how many it sent.
func (c *fillCopy) copy(off, limit, spooled int64) (int64, error) {
	if off >= spooled {
		buf := c.buf()
		k, err := c.f.fromWindow(buf[:min(int64(len(buf)), limit-off)], off)
		if err != nil {
			return 0, err
		}
		n, err := c.w.Write(buf[:k])
		return int64(n), err
	}
	limit = min(limit, spooled)
	if c.spool != nil {
		// The file's offset is off: it only ever moves forward with the
		// reader, and bytes from the window do not touch it.
		return io.CopyN(c.w, c.spool, limit-off)
	}
	buf := c.buf()
	k, err := c.f.upload.ReadAt(buf[:min(int64(len(buf)), limit-off)], off)
	if k > 0 {
		k, err = c.w.Write(buf[:k])
	}
	return int64(k), err
}
