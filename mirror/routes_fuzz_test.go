package mirror_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gmarcy/container-registry-proxy/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// FuzzMirrorRequest: whatever request line a client sends to the mirror
// (path, encoded or doubled slashes, dot segments, ?ns=, any method), it
// gets either the genuine content of the one image upstream holds, bytes
// that hash to the digest named, or an OCI error: JSON with a code, a
// status the proxy chooses for bad input (400, 401, 403, 404, 405, 416),
// never a server error.
func FuzzMirrorRequest(f *testing.F) {
	reg := testreg.Start(f, testreg.Options{})
	img := reg.PushImage(f, "org/app", "v1", []byte("layer bytes"))
	layer := img.Layers[0].Digest.String()
	for _, seed := range []struct {
		method string
		target string
	}{
		{"GET", "/v2/"}, {"HEAD", "/v2"}, {"GET", "/v2/quay.io/org/app/manifests/v1"}, {"GET", "/v2/org/app/manifests/v1?ns=quay.io"},
		{"GET", "/v2/quay.io/org/app/blobs/" + layer}, {"HEAD", "/v2/org/app/blobs/" + layer + "?ns=quay.io"},
		{"GET", "/v2/quay.io/org/app/manifests/" + img.ManifestDigest.String()}, {"GET", "/v2/quay.io/org/app/tags/list?n=1"},
		{"GET", "/v2/quay.io/org/app/referrers/" + img.ManifestDigest.String()}, {"GET", "/v2/org/app/manifests/v1?ns=quay.io%2Fx"},
		{"GET", "/v2/org/app/manifests/v1?ns=a%20b&ns=quay.io"}, {"GET", "/v2/quay.io/org/../org/app/manifests/v1"},
		{"GET", "/v2/quay.io/org%2Fapp/manifests/v1"}, {"GET", "/v2/quay.io//org/app/manifests/v1"}, {"GET", "/v2/./quay.io/org/app/manifests/v1"},
		{"GET", "/v2/quay.io/org/app/blobs/sha256:" + strings.Repeat("0", 64)}, {"GET", "/v2/quay.io/org/app/blobs/SHA256:ab"},
		{"GET", "/v2/quay.io/org/app/manifests/%2e%2e"}, {"GET", "/v2/ghcr.io/org/app/manifests/v1"}, {"GET", "/v2/169.254.169.254/x/manifests/v1"},
		{"PUT", "/v2/quay.io/org/app/manifests/v1"}, {"DELETE", "/v2/quay.io/org/app/blobs/" + layer}, {"POST", "/v2/quay.io/org/app/blobs/uploads/"},
		{"GET", "/"}, {"GET", "/_cluster/blobs/" + layer}, {"GET", "/v2/quay.io/org/app/blobs/" + layer + "/x"}, {"GET", "/v2/quay.io/Org/app/tags/list"},
	} {
		f.Add(seed.method, seed.target, "")
	}
	f.Add("GET", "/v2/quay.io/org/app/blobs/"+layer, "bytes=0-1,5-")
	h := newFuzzMirror(f, reg)
	f.Fuzz(func(t *testing.T, method, target, rng string) {
		raw := method + " " + target + " HTTP/1.1\r\nHost: mirror.test\r\n"
		if rng != "" {
			raw += "Range: " + rng + "\r\n"
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw + "\r\n")))
		if err != nil {
			return // the server answers 400 itself
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req.WithContext(ctx))
		checkMirrorAnswer(t, req, rec)
	})
}

// newFuzzMirror is a mirror of reg as quay.io on in-memory storage,
// behind the access log (which redacts the query of every request).
func newFuzzMirror(f *testing.F, reg *testreg.Registry) http.Handler {
	store, err := storage.New(inmemory.New(), storage.Options{SpoolDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	client, err := upstream.New(upstream.Options{
		Host: "quay.io", Endpoint: reg.URL, ConnectTimeout: 5 * time.Second, ReadTimeout: 20 * time.Second, SendTimeout: 20 * time.Second, Log: logx.From,
	})
	if err != nil {
		f.Fatal(err)
	}
	m, err := mirror.New(store, []mirror.Registry{{Host: "quay.io", Client: client}}, mirror.Options{FillTimeout: time.Minute})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.Drain(ctx); err != nil {
			f.Errorf("drain: %v", err)
		}
	})
	log := logrus.New()
	log.SetOutput(io.Discard)
	h := logx.AccessLog(log, m)
	// The properties below mean something only if content is served.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/quay.io/org/app/manifests/v1", nil))
	if rec.Code != http.StatusOK {
		f.Fatalf("the image upstream holds: %d %s", rec.Code, rec.Body)
	}
	return h
}

// checkMirrorAnswer asserts that an answer is genuine content or an OCI
// error of a status chosen for bad input.
func checkMirrorAnswer(t *testing.T, req *http.Request, rec *httptest.ResponseRecorder) {
	t.Helper()
	status, body := rec.Code, rec.Body.Bytes()
	switch status {
	case http.StatusOK, http.StatusPartialContent:
		checkContent(t, req, rec)
		return
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound,
		http.StatusMethodNotAllowed, http.StatusRequestedRangeNotSatisfiable:
	default:
		t.Fatalf("%s %s: status %d: %s", req.Method, req.RequestURI, status, body)
	}
	if req.Method == http.MethodHead {
		return
	}
	var env oci.Envelope
	if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") || json.Unmarshal(body, &env) != nil ||
		len(env.Errors) == 0 || env.Errors[0].Code == "" {
		t.Fatalf("%s %s: %d with %q: %s", req.Method, req.RequestURI, status, rec.Header().Get("Content-Type"), body)
	}
}

// checkContent asserts that a 200 or 206 answer carries bytes that hash
// to the digest the path or Docker-Content-Digest names.
func checkContent(t *testing.T, req *http.Request, rec *httptest.ResponseRecorder) {
	t.Helper()
	if req.Method != http.MethodGet || rec.Code != http.StatusOK {
		return
	}
	path := req.URL.Path
	var want string
	switch {
	case strings.Contains(path, "/blobs/"):
		want = path[strings.LastIndex(path, "/")+1:]
	case strings.Contains(path, "/manifests/"):
		want = rec.Header().Get("Docker-Content-Digest")
	default:
		return
	}
	d, err := digest.Parse(want)
	if err != nil || d.Algorithm().FromBytes(rec.Body.Bytes()) != d {
		t.Fatalf("GET %s: 200 with %d bytes that are not %s", req.RequestURI, rec.Body.Len(), want)
	}
}
