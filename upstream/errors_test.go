package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/oci"
)

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	ociBody := func(code, msg string) string {
		return `{"errors":[{"code":"` + code + `","message":"` + msg + `"}]}`
	}
	tests := []struct {
		name           string
		call           string // manifest, blob, stat, get
		status         int
		body           string
		header         map[string]string
		wantStatus     int
		wantCode       string
		wantRetryAfter string
		wantIs         error
		wantHits       int64
	}{
		{name: "manifest 404", call: "manifest", status: 404, body: ociBody("MANIFEST_UNKNOWN", "manifest unknown"), wantStatus: 404, wantCode: oci.CodeManifestUnknown, wantIs: oci.ErrManifestUnknown, wantHits: 1},
		{name: "manifest 404 without body", call: "manifest", status: 404, wantStatus: 404, wantCode: oci.CodeManifestUnknown, wantIs: oci.ErrManifestUnknown, wantHits: 1},
		{name: "manifest 404 name unknown", call: "manifest", status: 404, body: ociBody("NAME_UNKNOWN", "repository name not known"), wantStatus: 404, wantCode: oci.CodeNameUnknown, wantHits: 1},
		{name: "blob 404", call: "blob", status: 404, body: ociBody("BLOB_UNKNOWN", "blob unknown"), wantStatus: 404, wantCode: oci.CodeBlobUnknown, wantIs: oci.ErrBlobUnknown, wantHits: 1},
		{name: "stat blob 404", call: "stat", status: 404, wantStatus: 404, wantCode: oci.CodeBlobUnknown, wantIs: oci.ErrBlobUnknown, wantHits: 1},
		{name: "get 404", call: "get", status: 404, body: "not json", wantStatus: 404, wantCode: oci.CodeNameUnknown, wantHits: 1},
		{name: "401", call: "manifest", status: 401, body: ociBody("UNAUTHORIZED", "authentication required"), wantStatus: 401, wantCode: oci.CodeUnauthorized, wantHits: 1},
		{name: "403", call: "blob", status: 403, wantStatus: 403, wantCode: oci.CodeDenied, wantHits: 1},
		{name: "429 with Retry-After", call: "manifest", status: 429, header: map[string]string{"Retry-After": "120"}, body: ociBody("TOOMANYREQUESTS", "pull rate limit"), wantStatus: 429, wantCode: oci.CodeTooManyRequests, wantRetryAfter: "120", wantHits: 1},
		{name: "429 default Retry-After", call: "manifest", status: 429, wantStatus: 429, wantCode: oci.CodeTooManyRequests, wantRetryAfter: "10", wantHits: 1},
		{name: "429 unreadable Retry-After", call: "manifest", status: 429, header: map[string]string{"Retry-After": "soon"}, wantStatus: 429, wantCode: oci.CodeTooManyRequests, wantRetryAfter: "10", wantHits: 1},
		{name: "429 Retry-After as a date", call: "get", status: 429, header: map[string]string{"Retry-After": "Thu, 01 Jan 2026 00:01:30 GMT"}, wantStatus: 429, wantCode: oci.CodeTooManyRequests, wantRetryAfter: "90", wantHits: 1},
		{name: "429 Retry-After bounded", call: "blob", status: 429, header: map[string]string{"Retry-After": "86400"}, wantStatus: 429, wantCode: oci.CodeTooManyRequests, wantRetryAfter: "600", wantHits: 1},
		{name: "503 with Retry-After not retried", call: "manifest", status: 503, header: map[string]string{"Retry-After": "120"}, wantStatus: 503, wantCode: oci.CodeUnavailable, wantRetryAfter: "120", wantHits: 1},
		{name: "503 with a date not retried", call: "stat", status: 503, header: map[string]string{"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"}, wantStatus: 503, wantCode: oci.CodeUnavailable, wantRetryAfter: "600", wantHits: 1},
		{name: "503 Retry-After 0 retried", call: "blob", status: 503, header: map[string]string{"Retry-After": "0"}, wantStatus: 503, wantCode: oci.CodeUnavailable, wantRetryAfter: "0", wantHits: 3},
		{name: "500", call: "manifest", status: 500, wantStatus: 502, wantCode: oci.CodeUnavailable, wantHits: 1},
		{name: "503 retried twice", call: "blob", status: 503, wantStatus: 502, wantCode: oci.CodeUnavailable, wantHits: 3},
		{name: "400 keeps standard code", call: "manifest", status: 400, body: ociBody("MANIFEST_INVALID", "bad"), wantStatus: 400, wantCode: oci.CodeManifestInvalid, wantHits: 1},
		{name: "405 nonstandard code", call: "get", status: 405, body: ociBody("WHATEVER", "no"), wantStatus: 405, wantCode: oci.CodeUnsupported, wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits atomic.Int64
			r, _ := newTestRegistry(t, func(w http.ResponseWriter, req *http.Request) {
				hits.Add(1)
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}, Options{Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }})
			err := call(t.Context(), r, tt.call)
			var oe *oci.Error
			if !errors.As(err, &oe) {
				t.Fatalf("err = %v, want *oci.Error", err)
			}
			if oe.Status != tt.wantStatus || oe.Code != tt.wantCode || oe.RetryAfter != tt.wantRetryAfter {
				t.Errorf("got %d %s RetryAfter=%q, want %d %s %q", oe.Status, oe.Code, oe.RetryAfter, tt.wantStatus, tt.wantCode, tt.wantRetryAfter)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(%v) false for %v", tt.wantIs, err)
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Status != tt.status {
				t.Errorf("no StatusError with status %d in %v", tt.status, err)
			}
			if !strings.Contains(oe.Message, "registry.test:25443") {
				t.Errorf("message %q does not name the upstream", oe.Message)
			}
			if hits.Load() != tt.wantHits {
				t.Errorf("upstream requests = %d, want %d", hits.Load(), tt.wantHits)
			}
		})
	}
}

// call runs one Registry method and returns its error.
func call(ctx context.Context, r *Registry, which string) error {
	switch which {
	case "manifest":
		_, rc, err := r.Manifest(ctx, "team/app", "latest", false)
		if rc != nil {
			rc.Close()
		}
		return err
	case "blob":
		rc, _, err := r.Blob(ctx, "team/app", testDigest)
		if rc != nil {
			rc.Close()
		}
		return err
	case "stat":
		_, err := r.StatBlob(ctx, "team/app", testDigest)
		return err
	case "get":
		resp, err := r.Get(ctx, "team/app", "tags/list", nil)
		if resp != nil {
			resp.Body.Close()
		}
		return err
	}
	panic(which)
}

// TestConnectionErrors is not parallel: its 100ms timeouts measure the
// proxy's, and must not also measure a machine busy with other tests
// (the idle-body case needs the headers within them).
func TestConnectionErrors(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/blobs/") {
			// Headers and a first chunk, then silence.
			w.Header().Set("Content-Length", "100")
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
		}
		<-release
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })

	tests := []struct {
		name       string
		endpoint   string
		opts       Options
		ctxTimeout time.Duration
		read       bool // the error shows while reading the body
		wantStatus int
		wantMsg    string
	}{
		{name: "connection refused", endpoint: closedURL, wantStatus: 502, wantMsg: "connection refused"},
		{name: "response header timeout", endpoint: hang.URL, opts: Options{ReadTimeout: 100 * time.Millisecond}, wantStatus: 504, wantMsg: "timed out"},
		{name: "context deadline", endpoint: hang.URL, ctxTimeout: 100 * time.Millisecond, wantStatus: 504, wantMsg: "timed out"},
		{name: "idle body read timeout", endpoint: hang.URL, opts: Options{ReadTimeout: 100 * time.Millisecond}, read: true, wantStatus: 504, wantMsg: "timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Credentials = auth.Credentials{Username: "bob", Password: "secretpw"}
			r := newRegistryFor(t, tt.endpoint, tt.opts)
			ctx := t.Context()
			if tt.ctxTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxTimeout)
				defer cancel()
			}
			var err error
			if tt.read {
				rc, _, berr := r.Blob(ctx, "team/app", testDigest)
				if berr != nil {
					t.Fatalf("Blob: %v", berr)
				}
				_, err = io.ReadAll(rc)
				rc.Close()
			} else {
				_, _, err = r.Manifest(ctx, "team/app", "latest", false)
			}
			var oe *oci.Error
			if !errors.As(err, &oe) || oe.Status != tt.wantStatus || oe.Code != oci.CodeUnavailable {
				t.Fatalf("err = %v, want %d UNAVAILABLE", err, tt.wantStatus)
			}
			if !strings.Contains(oe.Message, "registry.test:25443") || !strings.Contains(oe.Message, tt.wantMsg) {
				t.Errorf("message %q should name the upstream and say %q", oe.Message, tt.wantMsg)
			}
			if strings.Contains(oe.Message, "/v2/") || strings.Contains(err.Error(), "secretpw") {
				t.Errorf("message leaks the URL or credentials: %v", err)
			}
		})
	}
}
