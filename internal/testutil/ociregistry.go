package testutil

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// RegistryRequest is one request a test registry answered.
type RegistryRequest struct {
	Method, Path string
	Status       int
}

// RequestLog records the requests a registry answered.
type RequestLog struct {
	mu   sync.Mutex
	reqs []RegistryRequest
}

// Counted returns h recording each request it answers in l.
func (l *RequestLog) Counted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, req)
		l.mu.Lock()
		l.reqs = append(l.reqs, RegistryRequest{Method: req.Method, Path: req.URL.Path, Status: sw.status})
		l.mu.Unlock()
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Requests returns the requests answered since the last ResetCounts.
func (l *RequestLog) Requests() []RegistryRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]RegistryRequest(nil), l.reqs...)
}

// Count returns how many answered requests had method and a path
// containing part.
func (l *RequestLog) Count(method, part string) int {
	n := 0
	for _, q := range l.Requests() {
		if q.Method == method && strings.Contains(q.Path, part) {
			n++
		}
	}
	return n
}

// ResetCounts forgets the requests answered so far.
func (l *RequestLog) ResetCounts() {
	l.mu.Lock()
	l.reqs = nil
	l.mu.Unlock()
}

// OCIRegistry is go-containerregistry's registry (pkg/registry, what
// `crane registry serve` runs) with its referrers API turned on, in memory,
// on a loopback port over plain HTTP, recording the requests it answers.
// distribution v3 (internal/testreg) has no referrers API, and
// docker-registry 2.8 (DockerRegistry) neither. Note that it reports a
// referrer's artifactType as its config's media type, not the manifest's
// artifactType field: give referrers a config of their artifact type.
type OCIRegistry struct {
	RequestLog
	// URL is http://127.0.0.1:<port>; Host is its host:port.
	URL, Host string

	srv *httptest.Server
}

// StartOCIRegistry starts an empty OCIRegistry, closed at the end of the
// test.
func StartOCIRegistry(t testing.TB) *OCIRegistry {
	t.Helper()
	r := &OCIRegistry{}
	h := ggcrregistry.New(ggcrregistry.WithReferrersSupport(true), ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(r.Counted(h))
	r.URL = r.srv.URL
	r.Host = strings.TrimPrefix(r.URL, "http://")
	t.Cleanup(r.Stop)
	return r
}

// PushBlob uploads data to repo and returns its digest.
func (r *OCIRegistry) PushBlob(t testing.TB, repo string, data []byte) string {
	t.Helper()
	return pushBlob(t, r.URL, repo, data)
}

// PushManifest PUTs a manifest under ref (a tag or its digest) and
// returns its digest.
func (r *OCIRegistry) PushManifest(t testing.TB, repo, ref, mediaType string, body []byte) string {
	t.Helper()
	return pushManifest(t, r.URL, repo, ref, mediaType, body)
}

// Stop takes the registry away: its port refuses connections.
func (r *OCIRegistry) Stop() {
	r.srv.CloseClientConnections()
	r.srv.Close()
}
