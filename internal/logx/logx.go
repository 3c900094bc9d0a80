package logx

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

type ctxKey int

const (
	entryKey ctxKey = iota
	infoKey
)

// Fixed field names of the proxy's log lines: every package logs the same
// fact under the same key, so that one query (upstream=quay.io, cache=MISS)
// finds the access lines and the lines logged while serving them.
const (
	FieldUpstream = "upstream"
	FieldRepo     = "repo"
	FieldRef      = "ref"
	FieldDigest   = "digest"
	FieldCache    = "cache"
	FieldStatus   = "status"
	FieldBytes    = "bytes"
	FieldDuration = "dur_ms"
)

// Info is what a handler learnt about a request, reported on its access
// line. Handlers fill it through the setters, which are safe for
// concurrent use.
type Info struct {
	mu       sync.Mutex
	upstream string
	repo     string
	ref      string
	cache    string
	extra    logrus.Fields
}

// Set records an extra field for the access line (CONNECT decisions and
// byte counts, for instance).
func (i *Info) Set(key string, value any) {
	if i == nil {
		return
	}
	i.mu.Lock()
	if i.extra == nil {
		i.extra = logrus.Fields{}
	}
	i.extra[key] = value
	i.mu.Unlock()
}

// SetRoute records the upstream, repository and reference (tag or digest).
func (i *Info) SetRoute(upstream, repo, ref string) {
	if i == nil {
		return
	}
	i.mu.Lock()
	i.upstream, i.repo, i.ref = upstream, repo, ref
	i.mu.Unlock()
}

// SetCache records the cache status (HIT, MISS, STALE, REVALIDATED, PASS).
func (i *Info) SetCache(status string) {
	if i == nil {
		return
	}
	i.mu.Lock()
	i.cache = status
	i.mu.Unlock()
}

// Route returns the recorded upstream, repository and reference.
func (i *Info) Route() (upstream, repo, ref string) {
	if i == nil {
		return "", "", ""
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.upstream, i.repo, i.ref
}

func (i *Info) fields() logrus.Fields {
	i.mu.Lock()
	defer i.mu.Unlock()
	f := logrus.Fields{}
	for k, v := range i.extra {
		f[k] = v
	}
	if i.upstream != "" {
		f[FieldUpstream] = i.upstream
	}
	if i.repo != "" {
		f[FieldRepo] = i.repo
	}
	if i.ref != "" {
		f[FieldRef] = i.ref
	}
	if i.cache != "" {
		f[FieldCache] = i.cache
	}
	return f
}

// WithEntry returns ctx carrying e.
func WithEntry(ctx context.Context, e *logrus.Entry) context.Context {
	return context.WithValue(ctx, entryKey, e)
}

// From returns the request's log entry, or one on the standard logger.
func From(ctx context.Context) *logrus.Entry {
	if e, ok := ctx.Value(entryKey).(*logrus.Entry); ok {
		return e
	}
	return logrus.NewEntry(logrus.StandardLogger())
}

// InfoFrom returns the request's Info, or nil (whose setters do nothing).
func InfoFrom(ctx context.Context) *Info {
	i, _ := ctx.Value(infoKey).(*Info)
	return i
}

// AccessLog wraps next: it puts an entry and an Info in the request's
// context and writes one access line when the request is done.
func AccessLog(logger *logrus.Logger, next http.Handler) http.Handler {
	return AccessLogWith(logger, nil, next)
}

// AccessLogWith is AccessLog with fields of its own on every line (e.g.
// the CONNECT target of intercepted requests).
//
// The line's path is RedactURI's: query values other than the registry
// API's harmless parameters never reach the log. The entry in the
// request's context carries method and path too, so every line logged
// while serving the request names it.
//
// A handler that panics (http.ErrAbortHandler cuts a response short on
// purpose) still gets its line, with aborted=true; the panic then goes on
// to net/http, which closes the connection.
func AccessLogWith(logger *logrus.Logger, fields func(*http.Request) logrus.Fields, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		entry := logrus.NewEntry(logger).WithFields(logrus.Fields{"method": r.Method, "path": RedactURI(r.URL)})
		if fields != nil {
			entry = entry.WithFields(fields(r))
		}
		info := &Info{}
		ctx := context.WithValue(WithEntry(r.Context(), entry), infoKey, info)
		rw := &responseWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			fields := info.fields()
			fields[FieldStatus] = rw.status
			fields[FieldBytes] = rw.bytes
			fields[FieldDuration] = time.Since(start).Milliseconds()
			fields["remote"] = r.RemoteAddr
			e := entry.WithFields(fields)
			if p := recover(); p != nil {
				e.WithField("aborted", true).Info("request")
				panic(p)
			}
			e.Info("request")
		}()
		next.ServeHTTP(rw, r.WithContext(ctx))
	})
}

// responseWriter records status and bytes. It keeps io.ReaderFrom so that
// a file copied into the response still goes out with sendfile.
type responseWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

// WriteHeader records the response's status: the first final one, so an
// informational header (103 Early Hints) sent before it does not count.
func (w *responseWriter) WriteHeader(code int) {
	informational := code >= 100 && code < 200 && code != http.StatusSwitchingProtocols
	if !w.wroteHeader && !informational {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write counts the body bytes sent.
func (w *responseWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom passes through to the underlying writer (sendfile for files).
func (w *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	w.wroteHeader = true
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(src)
		w.bytes += n
		return n, err
	}
	n, err := io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
	w.bytes += n
	return n, err
}

// Flush implements http.Flusher.
func (w *responseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack implements http.Hijacker for CONNECT handling.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := w.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, fmt.Errorf("logx: hijacking the connection: %w", http.ErrNotSupported)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
