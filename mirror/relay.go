package mirror

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
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
	now := m.opts.Now()
	m.errMu.Lock()
	last, seen := m.errLogged[cause]
	if !seen || now.Sub(last) > 5*time.Minute {
		m.errLogged[cause] = now
	}
	m.errMu.Unlock()
	if !seen || now.Sub(last) > 5*time.Minute {
		logx.From(ctx).WithError(err).WithField("cause", cause).
			Error("cache cannot store blobs; serving them from upstream without caching (logged once per cause every 5 minutes)")
	}
}
