package mirror

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
)

func (m *Mirror) handleBlob(w http.ResponseWriter, r *http.Request) error {
	t, err := m.resolve(r)
	if err != nil {
		return err
	}
	d, err := oci.ParseDigest(mux.Vars(r)["digest"])
	if err != nil {
		return err
	}
	setRoute(r, t, d.String())
	w, answered := m.observe(w, t.reg.Host, kindBlob)
	defer answered()
	if r, err = m.authorize(r, t, "blob", d.String()); err != nil {
		return err
	}
	ctx := r.Context()
	// Two rounds at most: a fill may find the blob committed by someone
	// else and send us back to storage.
	for range 2 {
		unpin := m.pin(d)
		rc, size, err := m.openStored(ctx, d)
		if err == nil {
			defer unpin()
			defer rc.Close()
			if err := m.ensureLinked(ctx, t, d); err != nil {
				return err
			}
			return m.serveStored(w, r, d, rc, size)
		}
		unpin()
		if !errors.Is(err, storage.ErrNotFound) {
			logx.From(ctx).WithError(err).Warn("cache storage unreadable; fetching from upstream")
		}
		var f *fill
		started := false
		if r.Method == http.MethodHead {
			if f = m.peekFill(d); f == nil {
				return m.headUpstream(w, r, t, d)
			}
		} else {
			f, started = m.joinFill(ctx, t, d)
		}
		err = m.serveFill(w, r, t, f, started)
		if errors.Is(err, errNoCache) {
			return m.serveRelay(w, r, t, d)
		}
		if !errors.Is(err, errStored) {
			return err
		}
	}
	return oci.Errorf(http.StatusServiceUnavailable, oci.CodeUnavailable, "blob %s is being replaced; retry", d)
}

// ensureLinked makes sure repo may be served d: it was fetched for it, or
// upstream confirms with one HEAD that repo contains it. Blob data is
// shared by all repositories; this keeps one repository's path from
// reading another's private layers.
func (m *Mirror) ensureLinked(ctx context.Context, t target, d digest.Digest) error {
	if m.store.HasLink(ctx, t.reg.Namespace, t.repo, d) {
		return nil
	}
	key := "link|" + t.reg.Host + "|" + t.repo + "|" + d.String()
	_, err, _ := m.flight.Do(key, func() (any, error) {
		fctx, cancel := detached(ctx, m.opts.ManifestTimeout)
		defer cancel()
		size, err := t.reg.Client.StatBlob(fctx, t.repo, d)
		if err != nil {
			return nil, err
		}
		if err := m.store.Link(fctx, t.reg.Namespace, t.repo, d, storage.LinkInfo{Size: size, LinkedAt: m.opts.Now().UTC()}); err != nil {
			logx.From(ctx).WithError(err).Warn("linking blob to repository")
		} else if m.opts.OnLink != nil {
			m.opts.OnLink(fctx, d, t.reg.Namespace, t.repo)
		}
		return nil, nil
	})
	return err
}

func blobHeaders(w http.ResponseWriter, d digest.Digest) {
	h := w.Header()
	h.Set("Content-Type", oci.MediaTypeOctetStream)
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Etag", `"`+d.String()+`"`)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Cache-Control", "max-age=31536000")
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
			f.Close()
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

// serveStored answers from a committed blob. With the filesystem driver
// the file goes to http.ServeContent untouched (Range, HEAD, sendfile).
func (m *Mirror) serveStored(w http.ResponseWriter, r *http.Request, d digest.Digest, rc io.ReadCloser, size int64) error {
	ctx := r.Context()
	start, end, partial, err := parseRange(r.Header.Get("Range"), size)
	if err != nil {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		return err
	}
	if m.opts.OnHit != nil {
		m.opts.OnHit(d)
	}
	blobHeaders(w, d)
	setCache(w, r, CacheHit)
	if rs, ok := rc.(io.ReadSeeker); ok {
		http.ServeContent(w, r, "", time.Time{}, rs)
		return nil
	}
	if start > 0 {
		rc.Close()
		if rc, err = m.store.OpenBlob(ctx, d, start); err != nil {
			return oci.Wrap(http.StatusInternalServerError, oci.CodeUnknown, err, "reading cached blob")
		}
		defer rc.Close()
	}
	status := writeRangeHeaders(w, start, end, size, partial)
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	if _, err := io.CopyBuffer(w, io.LimitReader(rc, end-start), *bufp); err != nil {
		logx.From(ctx).WithError(err).Debug("blob response cut short")
		panic(http.ErrAbortHandler)
	}
	return nil
}

// headUpstream answers a HEAD for a blob that is neither stored nor being
// filled, with one upstream HEAD; it starts no download.
func (m *Mirror) headUpstream(w http.ResponseWriter, r *http.Request, t target, d digest.Digest) error {
	size, err := t.reg.Client.StatBlob(r.Context(), t.repo, d)
	if err != nil {
		return err
	}
	if err := m.store.Link(r.Context(), t.reg.Namespace, t.repo, d, storage.LinkInfo{Size: size, LinkedAt: m.opts.Now().UTC()}); err != nil {
		logx.From(r.Context()).WithError(err).Warn("linking blob to repository")
	}
	blobHeaders(w, d)
	if size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	setCache(w, r, CacheMiss)
	w.WriteHeader(http.StatusOK)
	return nil
}

// serveFill streams a blob from a fill in flight, waiting for bytes as
// they arrive; started says this request started the fill (its answer is
// a MISS even when the fill is already complete). It releases the
// caller's reference on f.
func (m *Mirror) serveFill(w http.ResponseWriter, r *http.Request, t target, f *fill, started bool) error {
	defer m.release(f)
	ctx := r.Context()
	if f.ns != t.reg.Namespace || f.repo != t.repo {
		if err := m.ensureLinked(ctx, t, f.digest); err != nil {
			return err
		}
	}
	select {
	case <-f.ready:
	case <-ctx.Done():
		return oci.Wrap(http.StatusGatewayTimeout, oci.CodeUnavailable, ctx.Err(), "client went away")
	}
	f.mu.Lock()
	size, up, ferr, verified := f.size, f.upload, f.err, f.verified
	f.mu.Unlock()
	if up == nil {
		return ferr
	}
	if verified && !started {
		// A late joiner: every byte is here and the blob is being
		// committed. Wait for the commit and answer from the cache.
		for v := f.view(); !v.done; v = f.view() {
			if err := wait(ctx, v.changed); err != nil {
				return oci.Wrap(http.StatusGatewayTimeout, oci.CodeUnavailable, err, "client went away")
			}
		}
		if ferrAfter(f) == nil {
			return errStored
		}
	}
	start, end, partial := int64(0), size, false
	if size >= 0 {
		var err error
		if start, end, partial, err = parseRange(r.Header.Get("Range"), size); err != nil {
			w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			return err
		}
	}
	blobHeaders(w, f.digest)
	setCache(w, r, CacheMiss)
	status := http.StatusOK
	if size >= 0 {
		status = writeRangeHeaders(w, start, end, size, partial)
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	off, err := copyFill(ctx, w, f, start, end)
	if errors.Is(err, errNoCache) {
		// The cache gave up on this blob (its disk failed): finish the
		// answer straight from upstream.
		err = m.relayRest(ctx, w, t, f.digest, off, end)
	}
	if err != nil {
		// Never let a client take a short body for a complete one.
		logx.From(ctx).WithError(err).Info("blob response cut short")
		panic(http.ErrAbortHandler)
	}
	return nil
}

// ferrAfter returns the fill's final error (nil when it committed).
func ferrAfter(f *fill) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// writeRangeHeaders sets Content-Length (and Content-Range) and returns
// the status for the byte range [start, end) of a blob of size bytes.
func writeRangeHeaders(w http.ResponseWriter, start, end, size int64, partial bool) int {
	h := w.Header()
	h.Set("Content-Length", strconv.FormatInt(end-start, 10))
	if !partial {
		return http.StatusOK
	}
	h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end-1, 10)+"/"+strconv.FormatInt(size, 10))
	return http.StatusPartialContent
}

// parseRange parses a single-range Range header against size. It returns
// [start, end) and whether the answer is partial. Multi-range and
// malformed headers are ignored (the whole blob is served, as HTTP
// allows); an unsatisfiable range is a 416 RANGE_INVALID.
func parseRange(h string, size int64) (start, end int64, partial bool, err error) {
	if h == "" {
		return 0, size, false, nil
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size, false, nil
	}
	a, b, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, size, false, nil
	}
	unsatisfiable := &oci.Error{Status: http.StatusRequestedRangeNotSatisfiable, Code: oci.CodeRangeInvalid,
		Message: "range " + h + " not satisfiable for a blob of " + strconv.FormatInt(size, 10) + " bytes"}
	if a == "" { // suffix: the last b bytes
		n, perr := strconv.ParseInt(b, 10, 64)
		if perr != nil || n < 0 {
			return 0, size, false, nil
		}
		if n == 0 || size == 0 {
			return 0, 0, false, unsatisfiable
		}
		return max(size-n, 0), size, true, nil
	}
	s, perr := strconv.ParseInt(a, 10, 64)
	if perr != nil || s < 0 {
		return 0, size, false, nil
	}
	e := size - 1
	if b != "" {
		if e, perr = strconv.ParseInt(b, 10, 64); perr != nil || e < s {
			return 0, size, false, nil
		}
	}
	if s >= size {
		return 0, 0, false, unsatisfiable
	}
	return s, min(e, size-1) + 1, true, nil
}
