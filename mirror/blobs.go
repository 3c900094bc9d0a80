package mirror

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

func (m *Mirror) handleBlob(w http.ResponseWriter, r *http.Request) error {
	t, d, err := m.resolveDigest(r)
	if err != nil {
		return err
	}
	w, answered := m.observe(w, t.reg.Host, kindBlob)
	defer answered()
	if r, err = m.authorize(r, t, "blob", d.String()); err != nil {
		return err
	}
	return m.serveBlob(w, r, t, d, false)
}

// serveBlob answers a blob GET or HEAD from storage or a fill (started
// for a GET when none runs), for a client or, forPeer, another replica.
func (m *Mirror) serveBlob(w http.ResponseWriter, r *http.Request, t target, d digest.Digest, forPeer bool) error {
	// Hits of clients' GETs may be redirected to the storage; a replica
	// gets the bytes (Options.Redirect).
	redirect := m.opts.Redirect && !forPeer && r.Method == http.MethodGet
	// Two rounds at most: a fill may find the blob committed by someone
	// else and send us back to storage.
	for range 2 {
		served, prove, err := m.serveIfStored(w, r, t, d, redirect)
		if served || err != nil {
			return err
		}
		var f *fill
		var rd *fillReader
		started := false
		if r.Method == http.MethodHead {
			if f = m.peekFill(t, d); f == nil {
				return m.headUpstream(w, r, t, d)
			}
		} else if f, rd, started, err = m.joinFill(r.Context(), t, d, forPeer, prove); err != nil {
			return err
		}
		if forPeer && !started {
			// A peer is offered a fill only once it is known not to
			// stream from a third replica.
			if chained, err := f.streamsFromPeer(r.Context()); err != nil || chained {
				f.detach(rd)
				m.release(f)
				if err != nil {
					return err
				}
				return oci.Errorf(http.StatusConflict, oci.CodeUnavailable, "the fill of %s here streams from another replica", d)
			}
		}
		err = m.serveFill(w, r, t, f, rd, started)
		if errors.Is(err, errNoCache) {
			return m.serveRelay(w, r, t, d)
		}
		if !errors.Is(err, errStored) {
			return err
		}
	}
	return oci.Errorf(http.StatusServiceUnavailable, oci.CodeUnavailable, "blob %s is being replaced; retry", d)
}

// serveIfStored answers from the cache when d is stored and linked to t's
// repository (or confirmed upstream): with a redirect to the storage when
// redirect is set and the storage makes one, else with the bytes. served
// is false when it is not stored, or when only a fill through t's
// upstream may link it (prove): the caller fills it.
func (m *Mirror) serveIfStored(w http.ResponseWriter, r *http.Request, t target, d digest.Digest, redirect bool) (served, prove bool, err error) {
	ctx := r.Context()
	unpin := m.opts.Cache.Pin(d)
	defer unpin()
	linked := false
	if redirect {
		// Stat, not open: a redirected hit reads nothing from the storage.
		size, err := m.store.StatBlob(ctx, d)
		if err != nil {
			unstored(ctx, err)
			return false, false, nil
		}
		if err := m.ensureLinked(ctx, t, d); err != nil {
			return unlinked(err)
		}
		if m.redirectHit(w, r, d, size) {
			return true, false, nil
		}
		linked = true
	}
	rc, size, err := m.openStored(ctx, d)
	if errors.Is(err, storage.ErrResourceExhausted) {
		outOfDescriptors(w, r, err)
		return true, false, nil
	}
	if err != nil {
		unstored(ctx, err)
		return false, false, nil
	}
	defer rc.Close()
	if !linked {
		if err := m.ensureLinked(ctx, t, d); err != nil {
			return unlinked(err)
		}
	}
	return true, false, m.serveStored(w, r, d, rc, size)
}

// unlinked is serveIfStored's answer when ensureLinked refused: errProve
// sends the request to a fill through its upstream, other errors to the
// client.
func unlinked(err error) (served, prove bool, _ error) {
	if errors.Is(err, errProve) {
		return false, true, nil
	}
	return true, false, err
}

// unstored logs why a blob could not be read from the cache, unless it is
// simply not there (once a minute: it may fail every request); the blob is
// then fetched from upstream.
func unstored(ctx context.Context, err error) {
	if !errors.Is(err, storage.ErrNotFound) {
		logx.Every(logx.From(ctx), "cache storage unreadable", time.Minute).WithError(err).Warn("cache storage unreadable; fetching from upstream")
	}
}

// outOfDescriptors answers a stored blob that cannot be opened because the
// process ran out of file descriptors: 503 with Retry-After (fetching it
// again would need descriptors too), logged once a minute with the count
// of the requests answered so meanwhile.
func outOfDescriptors(w http.ResponseWriter, r *http.Request, err error) {
	logx.Every(logx.From(r.Context()), "out of file descriptors", time.Minute).WithError(err).
		Error("out of file descriptors: cached blobs are answered 503; raise the limit (ulimit -n, systemd LimitNOFILE) or lower the load")
	e := oci.Wrap(http.StatusServiceUnavailable, oci.CodeUnavailable, err, "the proxy is out of file descriptors; retry")
	e.RetryAfter = "1"
	oci.WriteError(w, r, e)
}

// ensureLinked makes sure repo may be served the stored blob d: it was
// fetched for it, or upstream confirms with one HEAD that repo contains
// it. Blob data is shared by all repositories; this keeps one
// repository's path from reading another's private layers. Upstream's
// word is not enough when another registry, one whose content is not
// public, links the blob (needsProof): then errProve, and only a fill
// through t's upstream that verifies links it.
func (m *Mirror) ensureLinked(ctx context.Context, t target, d digest.Digest) error {
	linked, err := m.store.HasLink(ctx, t.reg.Namespace, t.repo, d)
	if linked {
		return nil
	}
	if err != nil {
		// Not knowing is not being linked: upstream is asked.
		logx.Every(logx.From(ctx), "repository link unreadable", time.Minute).WithError(err).Warn("repository link unreadable; asking upstream")
	}
	if m.needsProof(ctx, t, d) {
		return errProve
	}
	return m.confirmContains(ctx, t, d, true)
}

// confirmContains asks t's upstream with one HEAD, shared by concurrent
// requests, whether t's repository contains d; with link, a yes is
// recorded (the blob is stored).
func (m *Mirror) confirmContains(ctx context.Context, t target, d digest.Digest, link bool) error {
	key := t.reg.Host + "|" + t.repo + "|" + d.String() + "|" + strconv.FormatBool(link)
	_, err := m.links.Do(ctx, key, func(fctx context.Context) (struct{}, error) {
		size, err := t.reg.Client.StatBlob(fctx, t.repo, d)
		if err != nil {
			return struct{}{}, err
		}
		if link {
			m.link(fctx, t, d, size)
		}
		return struct{}{}, nil
	})
	return leftErr(ctx, err)
}

// link records that t's repository contains the cached blob d. A failure
// (a full disk) is logged once a minute: it may recur on every hit.
func (m *Mirror) link(ctx context.Context, t target, d digest.Digest, size int64) {
	err := m.store.Link(ctx, t.reg.Namespace, t.repo, d, storage.LinkInfo{Size: size, LinkedAt: m.opts.Now().UTC()})
	if err == nil {
		err = m.opts.Cache.Linked(ctx, d, t.reg.Namespace, t.repo)
	}
	if err != nil {
		logx.Every(logx.From(ctx), "linking blob to repository", time.Minute).WithField(logx.FieldDigest, d).WithError(err).Warn("linking blob to repository")
	}
}

// openStored opens a committed blob and returns its size: with the
// filesystem driver from the open file itself, so a hit costs one path
// lookup. The caller holds a pin, so eviction cannot remove it meanwhile.
func (m *Mirror) openStored(ctx context.Context, d digest.Digest) (io.ReadCloser, int64, error) {
	rc, err := m.store.OpenBlob(ctx, d, 0)
	if err != nil {
		return nil, 0, err
	}
	if f, ok := rc.(*os.File); ok {
		fi, err := f.Stat()
		if err != nil {
			rc.Close()
			return nil, 0, err
		}
		return rc, fi.Size(), nil
	}
	size, err := m.store.StatBlob(ctx, d)
	if err != nil {
		rc.Close()
		return nil, 0, err
	}
	return rc, size, nil
}

// serveStored answers from a committed blob. A file (the filesystem
// driver) is seeked and handed to the response untouched but for a
// length limit, so the kernel copies it (sendfile); other drivers' readers
// are opened at the range's start. rc stays the caller's to close.
func (m *Mirror) serveStored(w http.ResponseWriter, r *http.Request, d digest.Digest, rc io.ReadCloser, size int64) error {
	ctx := r.Context()
	br, err := blobRange(r, d, size)
	if err != nil {
		return rangeError(w, size, err)
	}
	m.opts.Cache.Hit(d)
	var body io.Reader = rc
	if br.start > 0 {
		if s, ok := rc.(io.Seeker); ok {
			if _, err := s.Seek(br.start, io.SeekStart); err != nil {
				return oci.Wrap(http.StatusInternalServerError, oci.CodeUnknown, err, "reading cached blob")
			}
		} else {
			at, err := m.store.OpenBlob(ctx, d, br.start)
			if err != nil {
				return oci.Wrap(http.StatusInternalServerError, oci.CodeUnknown, err, "reading cached blob")
			}
			defer at.Close()
			body = at
		}
	}
	if !writeBlobHead(w, r, d, br, true, CacheHit) {
		return nil
	}
	if _, err := copyBody(w, body, br.end-br.start); err != nil {
		logx.From(ctx).WithError(err).Debug("blob response cut short")
		panic(http.ErrAbortHandler)
	}
	return nil
}

// copyBody sends n bytes of body to w. A file goes through the
// response's ReadFrom inside an io.LimitedReader, which keeps sendfile.
func copyBody(w io.Writer, body io.Reader, n int64) (int64, error) {
	if f, ok := body.(*os.File); ok {
		return io.CopyN(w, f, n)
	}
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	written, err := io.CopyBuffer(w, io.LimitReader(body, n), *bufp)
	if err == nil && written < n {
		err = io.ErrUnexpectedEOF
	}
	return written, err
}

// headUpstream answers a HEAD for a blob that is neither stored (nor
// linked) nor being filled, with one upstream HEAD; it starts no download
// and links nothing: a repository is linked to a blob only when the blob
// is stored.
func (m *Mirror) headUpstream(w http.ResponseWriter, r *http.Request, t target, d digest.Digest) error {
	size, err := t.reg.Client.StatBlob(r.Context(), t.repo, d)
	if err != nil {
		return err
	}
	writeBlobHead(w, r, d, whole(size), size >= 0, CacheMiss)
	return nil
}

// serveFill streams a blob from a fill in flight as the reader rd (nil
// for a HEAD, or for a GET that came too late for a relaying fill),
// waiting for bytes as they arrive; started says this request started
// the fill (its answer is a MISS even when the fill is already complete).
// It releases the caller's reference on f, and rd.
func (m *Mirror) serveFill(w http.ResponseWriter, r *http.Request, t target, f *fill, rd *fillReader, started bool) error {
	// Released first, then detached: a fill this reader leaves alone
	// stops before its window lets it read on.
	defer f.detach(rd)
	defer m.release(f)
	ctx := r.Context()
	if f.repo != t.repo {
		// Another repository of the same upstream: upstream says whether
		// this one contains the blob. The link is made when it is stored.
		if err := m.confirmContains(ctx, t, f.digest, false); err != nil {
			return err
		}
	}
	select {
	case <-f.ready:
	case <-ctx.Done():
		return clientGone(ctx.Err())
	}
	f.mu.Lock()
	size, up, ferr, verified, relaying := f.size, f.upload, f.err, f.verified, f.relay != nil
	f.mu.Unlock()
	if up == nil && !relaying {
		return ferr
	}
	if verified && !started && !relaying {
		// A late joiner: every byte is here and the blob is being
		// committed. Wait for the commit and answer from the cache.
		if err := waitDone(ctx, f); err != nil {
			return err
		}
		if ferrAfter(f) == nil {
			return errStored
		}
	}
	br, known := whole(size), size >= 0
	if known {
		var err error
		if br, err = blobRange(r, f.digest, size); err != nil {
			return rangeError(w, size, err)
		}
	}
	if rd == nil && r.Method != http.MethodHead {
		return errNoCache // too late for the relay: a relay of its own
	}
	if rd != nil {
		f.seek(rd, br.start, br.end)
	}
	cache := CacheMiss
	if relaying {
		cache = CachePass
	}
	if !writeBlobHead(w, r, f.digest, br, known, cache) {
		return nil
	}
	return m.streamFill(w, r, t, f, rd, br)
}

// streamFill sends the bytes br of the fill f to rd's response. The
// headers go out first, not with the first bytes: a client (or a replica
// streaming this fill) learns the blob is coming while upstream is slow
// to send it. An answer from a fill that ended up relaying, or finished
// from upstream, is logged PASS: the blob was not cached.
func (m *Mirror) streamFill(w http.ResponseWriter, r *http.Request, t target, f *fill, rd *fillReader, br byteRange) error {
	ctx := r.Context()
	_ = http.NewResponseController(w).Flush() //nolint:errcheck // a writer that cannot flush sends the headers with the body
	off, err := copyFill(ctx, w, f, rd, br.start, br.end)
	if f.relaying() {
		setCache(w, r, CachePass)
	}
	if errors.Is(err, errNoCache) {
		// The cache gave up on this blob (its disk failed): finish the
		// answer straight from upstream.
		setCache(w, r, CachePass)
		err = m.relayRest(ctx, w, t, f.digest, off, br.end)
	}
	if err != nil {
		// Never let a client take a short body for a complete one.
		logx.From(ctx).WithError(err).Info("blob response cut short")
		panic(http.ErrAbortHandler)
	}
	return nil
}

// waitDone waits until f ended (committed or not), or ctx ends.
func waitDone(ctx context.Context, f *fill) error {
	for {
		f.mu.Lock()
		done, changed := f.done, f.changed
		f.mu.Unlock()
		if done {
			return nil
		}
		if err := wait(ctx, changed); err != nil {
			return clientGone(err)
		}
	}
}

// ferrAfter returns the fill's final error (nil when it committed).
func ferrAfter(f *fill) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
