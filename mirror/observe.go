package mirror

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// Observer is told what the mirror does (metrics). Its methods are called
// on request and fill paths and must not block.
type Observer interface {
	// Answered is told once per manifest or blob request answered with
	// content (2xx or 304): kind "blob", "manifest" (by digest) or "tag"
	// (manifest by tag), cache the X-Cache status in lower case (hit,
	// miss, stale, revalidated, pass), bytes the body bytes sent.
	Answered(upstream, kind, cache string, bytes int64)
	// Fetched is told about blob and manifest bytes read from upstream.
	Fetched(upstream string, bytes int64)
	// FillStarted and FillEnded bracket each blob download from upstream
	// (d: its duration, committed or not).
	FillStarted(upstream string)
	FillEnded(upstream string, d time.Duration)
	// DigestMismatch is told when upstream content did not match its
	// digest (nothing was cached, the client was cut short).
	DigestMismatch(upstream string)
	// Postponed is told when a tag's revalidation was postponed because
	// upstream's rate limit is nearly used up (the answer is stale).
	Postponed(upstream string)
	// Throttled is told when a request was answered without asking
	// upstream because upstream asked to wait (a 429, or a 503 with
	// Retry-After): a cached record answered stale, or anything else
	// answered with upstream's status and the remaining Retry-After.
	Throttled(upstream string)
}

// nopObserver is the default Observer.
type nopObserver struct{}

func (nopObserver) Answered(string, string, string, int64) {}
func (nopObserver) Fetched(string, int64)                  {}
func (nopObserver) FillStarted(string)                     {}
func (nopObserver) FillEnded(string, time.Duration)        {}
func (nopObserver) DigestMismatch(string)                  {}
func (nopObserver) Postponed(string)                       {}
func (nopObserver) Throttled(string)                       {}

// Request kinds reported to Observer.Answered.
const (
	kindBlob     = "blob"
	kindManifest = "manifest"
	kindTag      = "tag"
)

// errDigestMismatch is the cause of errors for upstream content that does
// not match its digest.
var errDigestMismatch = errors.New("content does not match its digest")

// observe wraps w so that the answer to a request of kind for upstream is
// reported to the Observer when the returned func runs (deferred by the
// handler, so that it also runs when a response is cut short).
func (m *Mirror) observe(w http.ResponseWriter, upstream, kind string) (http.ResponseWriter, func()) {
	aw := &answerWriter{ResponseWriter: w}
	return aw, func() {
		cache := w.Header().Get("X-Cache")
		if aw.status < 200 || aw.status >= 400 || cache == "" {
			return
		}
		m.opts.Observer.Answered(upstream, kind, strings.ToLower(cache), aw.bytes)
	}
}

// observeFill reports a fill starting; the returned func reports its end.
func (m *Mirror) observeFill(upstream string) func() {
	start := time.Now()
	m.opts.Observer.FillStarted(upstream)
	return func() { m.opts.Observer.FillEnded(upstream, time.Since(start)) }
}

// fetched wraps an upstream body so that the bytes read from it are
// reported as fetched when it is closed.
func (m *Mirror) fetched(upstream string, body io.ReadCloser) io.ReadCloser {
	return &fetchedBody{ReadCloser: body, obs: m.opts.Observer, upstream: upstream}
}

type fetchedBody struct {
	io.ReadCloser
	obs      Observer
	upstream string
	n        int64
	closed   bool
}

func (b *fetchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *fetchedBody) Close() error {
	if !b.closed {
		b.closed = true
		b.obs.Fetched(b.upstream, b.n)
	}
	return b.ReadCloser.Close()
}

// answerWriter records the status and body bytes of a response. It keeps
// io.ReaderFrom, so that a cached file still goes out with sendfile.
type answerWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *answerWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *answerWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom passes through to the underlying writer (sendfile for files).
func (w *answerWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
	}
	w.bytes += n
	return n, err
}

// Flush implements http.Flusher.
func (w *answerWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *answerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
