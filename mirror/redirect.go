package mirror

import (
	"context"
	"net/http"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/opencontainers/go-digest"
)

// redirectLogEvery is how often a storage that cannot make redirect URLs
// is logged: once, then again after this long if it still cannot.
const redirectLogEvery = 5 * time.Minute

// redirectHit answers a client's GET of the stored blob d (size bytes),
// which it may read (the caller checked its access and the repository's
// link), with 307 to a URL of the storage (Options.Redirect), so that the
// bytes go from the bucket to the client; a Range header goes along with
// the client and the bucket answers it. The answer is a hit: X-Cache HIT,
// an access time, no body (the Observer counts no bytes; its access line
// says redirect=true). The URL is never logged.
//
// It writes nothing and reports false when the proxy answers itself: an
// If-None-Match that names the blob (304) or a Range past its end (416),
// both without a body, a driver without redirects, or a URL that could not
// be made (logged once per redirectLogEvery): the client then gets the
// bytes; redirects never fail a request.
func (m *Mirror) redirectHit(w http.ResponseWriter, r *http.Request, d digest.Digest, size int64) bool {
	if notModified(r, d) {
		return false
	}
	if _, err := blobRange(r, d, size); err != nil {
		return false
	}
	u, err := m.store.RedirectURL(r, d)
	if err != nil {
		m.redirectError(r.Context(), err)
		return false
	}
	if u == "" {
		return false
	}
	m.opts.Cache.Hit(d)
	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Location", u)
	// The URL expires: no cache keeps the answer.
	h.Set("Cache-Control", "no-store")
	setCache(w, r, CacheHit)
	logx.InfoFrom(r.Context()).Set("redirect", true)
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true
}

// redirectError logs that the storage could not make a redirect URL, once
// per redirectLogEvery: every hit meanwhile is served with its bytes, and
// must not add a line each.
func (m *Mirror) redirectError(ctx context.Context, err error) {
	const cause = "redirect URL"
	now := m.opts.Now()
	m.errMu.Lock()
	last, seen := m.errLogged[cause]
	first := !seen || now.Sub(last) > redirectLogEvery
	if first {
		m.errLogged[cause] = now
	}
	m.errMu.Unlock()
	if first {
		logx.From(ctx).WithError(err).
			Warn("storage cannot make redirect URLs; serving blob hits through the proxy (logged once every 5 minutes)")
	}
}
