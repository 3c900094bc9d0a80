package testreg

import (
	"net/http"
	"sync"
)

// Request kinds used by Count and RequestRecord.Kind.
const (
	KindManifest  = "manifest"  // /v2/<name>/manifests/<ref>
	KindBlob      = "blob"      // /v2/<name>/blobs/<digest> (not uploads)
	KindTags      = "tags"      // /v2/<name>/tags/list
	KindReferrers = "referrers" // /v2/<name>/referrers/<digest>
	KindToken     = "token"     // the token server
	KindCDN       = "cdn"       // the blob CDN (BlobRedirect)
	KindOther     = "other"     // /v2/, uploads, catalog, anything else
)

// RequestRecord is one request seen by the registry's front handler, token
// server or CDN. Status is 0 while no response header has been written.
type RequestRecord struct {
	Method string
	Kind   string
	Path   string
	Status int
}

type countKey struct{ method, kind string }

// counter counts requests as they arrive, so a client that has its response
// always sees its own request counted.
type counter struct {
	mu      sync.Mutex
	counts  map[countKey]int64
	records []*RequestRecord
}

// begin counts a request and returns its record for the status.
func (c *counter) begin(method, kind, path string) *RequestRecord {
	rec := &RequestRecord{Method: method, Kind: kind, Path: path}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = make(map[countKey]int64)
	}
	c.counts[countKey{method, kind}]++
	c.records = append(c.records, rec)
	return rec
}

func (c *counter) setStatus(rec *RequestRecord, status int) {
	c.mu.Lock()
	rec.Status = status
	c.mu.Unlock()
}

// Count returns how many requests of this method ("" for any) and kind
// (KindManifest, KindBlob, …) arrived since Start or the last ResetCounts.
func (r *Registry) Count(method, kind string) int64 {
	r.counts.mu.Lock()
	defer r.counts.mu.Unlock()
	if method != "" {
		return r.counts.counts[countKey{method, kind}]
	}
	var n int64
	for k, v := range r.counts.counts {
		if k.kind == kind {
			n += v
		}
	}
	return n
}

// Requests returns a snapshot of every request recorded, in arrival order.
func (r *Registry) Requests() []RequestRecord {
	r.counts.mu.Lock()
	defer r.counts.mu.Unlock()
	out := make([]RequestRecord, len(r.counts.records))
	for i, rec := range r.counts.records {
		out[i] = *rec
	}
	return out
}

// ResetCounts forgets all counts and records, and clears CDNSawAuthorization.
func (r *Registry) ResetCounts() {
	r.counts.mu.Lock()
	r.counts.counts = nil
	r.counts.records = nil
	r.counts.mu.Unlock()
	r.cdnAuth.Store(false)
}

// statusWriter records the response status in the request's record. It
// unwraps for http.ResponseController (Flush, Hijack).
type statusWriter struct {
	http.ResponseWriter
	c     *counter
	rec   *RequestRecord
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		w.c.setStatus(w.rec, code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Flush lets handlers that type-assert http.Flusher flush through.
func (w *statusWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap exposes the underlying writer to http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// counted wraps w so its status lands in a new record of this kind.
func (r *Registry) counted(w http.ResponseWriter, req *http.Request, kind string) *statusWriter {
	return &statusWriter{ResponseWriter: w, c: &r.counts, rec: r.counts.begin(req.Method, kind, req.URL.Path)}
}
