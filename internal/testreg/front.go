package testreg

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
)

// routeRE splits a /v2/ path into repository name, endpoint and rest; the
// greedy name makes the last endpoint keyword win, as in distribution.
var routeRE = regexp.MustCompile(`^/v2/(.+)/(manifests|blobs|tags|referrers)/(.+)$`)

// classify returns the request kind and repository name of a path.
func classify(path string) (kind, repo string) {
	m := routeRE.FindStringSubmatch(path)
	if m == nil {
		return KindOther, ""
	}
	switch {
	case m[2] == "manifests":
		return KindManifest, m[1]
	case m[2] == "blobs" && (m[3] == "uploads" || strings.HasPrefix(m[3], "uploads/")):
		return KindOther, m[1]
	case m[2] == "blobs":
		return KindBlob, m[1]
	case m[2] == "tags":
		return KindTags, m[1]
	default:
		return KindReferrers, m[1]
	}
}

// serveFront is the registry's public handler: count, status fault, auth,
// blob redirect and body faults, then distribution.
func (r *Registry) serveFront(w http.ResponseWriter, req *http.Request) {
	if r.opts.RealmHost == "" && r.opts.Auth == AuthToken && req.URL.Path == "/token" {
		r.serveToken(w, req)
		return
	}
	kind, repo := classify(req.URL.Path)
	sw := r.counted(w, req, kind)
	isV2 := strings.HasPrefix(req.URL.Path, "/v2/")
	if isV2 && r.opts.Headers != nil {
		for k, v := range r.opts.Headers() {
			sw.Header()[http.CanonicalHeaderKey(k)] = v
		}
	}
	if isV2 && req.URL.Path != "/v2/" && r.serveRevalFault(sw, req) {
		return
	}
	if f := r.faults.get(); f > 0 && isV2 && req.URL.Path != "/v2/" {
		if f == http.StatusTooManyRequests {
			sw.Header().Set("Retry-After", "7")
		}
		writeOCIError(sw, int(f), errorCode(int(f)), fmt.Sprintf("testreg fault: status %d", int(f)))
		return
	}
	if kind == KindBlob && r.serveClaimed(sw, req) {
		return
	}
	if isV2 && !r.authorize(sw, req, repo) {
		return
	}
	if kind == KindBlob && r.opts.RedirectBlob != nil && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
		if loc := r.opts.RedirectBlob(req.Method, req.URL.Path); loc != "" {
			sw.Header().Set("Location", loc)
			sw.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
	}
	if kind == KindBlob && req.Method == http.MethodGet {
		if r.opts.BlobRedirect {
			r.redirectBlob(sw, req)
			return
		}
		r.serveBlobBody(sw, req)
		return
	}
	if kind == KindTags && r.serveTagPages(sw, req, repo) {
		return
	}
	if kind == KindManifest && req.Method == http.MethodGet && r.opts.CanonicalManifestDigest {
		serveCanonicalDigest(sw, req, r.app)
		return
	}
	r.app.ServeHTTP(sw, req)
}

// redirectBlob answers a GET for an existing blob with 307 to the CDN, and
// lets distribution answer (404 …) otherwise.
func (r *Registry) redirectBlob(w http.ResponseWriter, req *http.Request) {
	probe := req.Clone(req.Context())
	probe.Method = http.MethodHead
	rec := httptest.NewRecorder()
	r.app.ServeHTTP(rec, probe)
	if rec.Code != http.StatusOK {
		r.app.ServeHTTP(w, req)
		return
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.Header().Set("Location", r.CDNURL+req.URL.Path)
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// serveCDN is the blob CDN: no auth, records whether credentials leaked to
// it, serves blob bytes (with body faults) from distribution.
func (r *Registry) serveCDN(w http.ResponseWriter, req *http.Request) {
	sw := r.counted(w, req, KindCDN)
	if req.Header.Get("Authorization") != "" {
		r.cdnAuth.Store(true)
	}
	if kind, _ := classify(req.URL.Path); kind != KindBlob ||
		(req.Method != http.MethodGet && req.Method != http.MethodHead) {
		http.Error(sw, "not found", http.StatusNotFound)
		return
	}
	r.serveBlobBody(sw, req)
}

// CDNSawAuthorization reports whether any request to the CDN carried an
// Authorization header (which a well-behaved client strips on redirect).
func (r *Registry) CDNSawAuthorization() bool { return r.cdnAuth.Load() }

// serveBlobBody fetches the blob from the inner, fault-free listener and
// copies it to w, applying the current body fault.
func (r *Registry) serveBlobBody(w http.ResponseWriter, req *http.Request) {
	out, err := http.NewRequestWithContext(req.Context(), req.Method, r.inner.URL+req.URL.Path, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, h := range []string{"Range", "If-Range", "If-None-Match", "If-Match", "Accept"} {
		if v := req.Header.Values(h); len(v) > 0 {
			out.Header[h] = v
		}
	}
	resp, err := r.inner.Client().Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if r.faults.get() == FaultNoLength {
		w.Header().Del("Content-Length")
	}
	w.WriteHeader(resp.StatusCode)
	if req.Method != http.MethodGet || (resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent) {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	r.applyBodyFault(w, req, resp)
}

// oci error envelope
type ociError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeOCIError writes {"errors":[{code,message}]} with status.
func writeOCIError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Errors []ociError `json:"errors"`
	}{[]ociError{{Code: code, Message: msg}}})
}

// errorCode picks the OCI error code registries use for a status.
func errorCode(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "UNAUTHORIZED"
	case http.StatusForbidden:
		return "DENIED"
	case http.StatusNotFound:
		return "NAME_UNKNOWN"
	case http.StatusTooManyRequests:
		return "TOOMANYREQUESTS"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	default:
		return "UNKNOWN"
	}
}
