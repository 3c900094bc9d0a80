package upstream

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

const testDigest = digest.Digest("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")

// newTestRegistry starts a fake upstream with handler and a Registry for
// it with short retry backoffs.
func newTestRegistry(t *testing.T, handler http.HandlerFunc, opts Options) (*Registry, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return newRegistryFor(t, srv.URL, opts), srv
}

func newRegistryFor(t *testing.T, endpoint string, opts Options) *Registry {
	t.Helper()
	if opts.Host == "" {
		opts.Host = "registry.test:25443"
	}
	opts.Endpoint = endpoint
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.retry.backoff = []time.Duration{time.Millisecond, time.Millisecond}
	return r
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNew(t *testing.T) {
	t.Parallel()
	badCA := writeFile(t, "bad-ca.pem", "not a certificate")
	tests := []struct {
		name         string
		opts         Options
		wantEndpoint string
		wantErr      string
	}{
		{name: "docker hub default", opts: Options{Host: "docker.io"}, wantEndpoint: "https://registry-1.docker.io"},
		{name: "default https", opts: Options{Host: "registry.test:25443"}, wantEndpoint: "https://registry.test:25443"},
		{name: "explicit with prefix", opts: Options{Host: "r.test", Endpoint: "http://127.0.0.1:5000/mirror/"}, wantEndpoint: "http://127.0.0.1:5000/mirror"},
		{name: "bad host", opts: Options{Host: "bad host"}, wantErr: "invalid host"},
		{name: "bad endpoint", opts: Options{Host: "r.test", Endpoint: "http://[::1"}, wantErr: "endpoint"},
		{name: "bad scheme", opts: Options{Host: "r.test", Endpoint: "ftp://r.test"}, wantErr: "scheme"},
		{name: "no host", opts: Options{Host: "r.test", Endpoint: "https:///v2"}, wantErr: "no host"},
		{name: "credentials in endpoint", opts: Options{Host: "r.test", Endpoint: "https://u:secretpw@r.test"}, wantErr: "credentials"},
		{name: "query in endpoint", opts: Options{Host: "r.test", Endpoint: "https://r.test/?a=b"}, wantErr: "query"},
		{name: "missing CA file", opts: Options{Host: "r.test", CAFile: "/nonexistent/ca.pem"}, wantErr: "/nonexistent/ca.pem"},
		{name: "unparsable CA file", opts: Options{Host: "r.test", CAFile: badCA}, wantErr: badCA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want mention of %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secretpw") {
					t.Fatalf("password in error: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Endpoint() != tt.wantEndpoint {
				t.Fatalf("Endpoint() = %q, want %q", r.Endpoint(), tt.wantEndpoint)
			}
		})
	}
	if _, err := New(Options{Host: "r.test", CAFile: badCA}); !errors.Is(err, ErrNoCertificates) {
		t.Fatalf("errors.Is(ErrNoCertificates) failed: %v", err)
	}
}

func TestManifestDescriptor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		head    bool
		headers map[string]string
		body    string
		chunked bool
		want    oci.Descriptor
	}{
		{
			name:    "get with params",
			headers: map[string]string{"Content-Type": "application/vnd.oci.image.index.v1+json; charset=utf-8", "Docker-Content-Digest": testDigest.String()},
			body:    `{"manifests":[]}`,
			want:    oci.Descriptor{MediaType: oci.MediaTypeOCIIndex, Digest: testDigest.String(), Size: 16},
		},
		{
			name:    "head",
			head:    true,
			headers: map[string]string{"Content-Type": oci.MediaTypeDockerManifest, "Docker-Content-Digest": testDigest.String(), "Content-Length": "1234"},
			want:    oci.Descriptor{MediaType: oci.MediaTypeDockerManifest, Digest: testDigest.String(), Size: 1234},
		},
		{
			name:    "no digest, unknown length",
			headers: map[string]string{"Content-Type": oci.MediaTypeOCIManifest},
			body:    `{"config":{}}`,
			chunked: true,
			want:    oci.Descriptor{MediaType: oci.MediaTypeOCIManifest, Size: -1},
		},
		{
			name:    "head without length",
			head:    true,
			headers: map[string]string{"Content-Type": oci.MediaTypeOCIManifest},
			want:    oci.Descriptor{MediaType: oci.MediaTypeOCIManifest, Size: -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotAccept, gotPath, gotMethod, gotUA string
			r, _ := newTestRegistry(t, func(w http.ResponseWriter, req *http.Request) {
				gotAccept, gotPath, gotMethod, gotUA = req.Header.Get("Accept"), req.URL.Path, req.Method, req.UserAgent()
				for k, v := range tt.headers {
					w.Header().Set(k, v)
				}
				if tt.chunked {
					w.(http.Flusher).Flush()
				}
				if req.Method == http.MethodHead && tt.headers["Content-Length"] == "" {
					// Let net/http send no Content-Length.
					w.(http.Flusher).Flush()
				}
				_, _ = io.WriteString(w, tt.body)
			}, Options{})
			desc, rc, err := r.Manifest(t.Context(), "team/app", "latest", tt.head)
			if err != nil {
				t.Fatal(err)
			}
			if desc != tt.want {
				t.Errorf("descriptor = %+v, want %+v", desc, tt.want)
			}
			if tt.head != (rc == nil) {
				t.Errorf("body nil = %v for head=%v", rc == nil, tt.head)
			}
			if rc != nil {
				b, _ := io.ReadAll(rc)
				rc.Close()
				if string(b) != tt.body {
					t.Errorf("body = %q", b)
				}
			}
			wantMethod := map[bool]string{true: "HEAD", false: "GET"}[tt.head]
			if gotAccept != oci.ManifestAccept || gotPath != "/v2/team/app/manifests/latest" || gotMethod != wantMethod || gotUA != DefaultUserAgent {
				t.Errorf("request: %s %s Accept=%q UA=%q", gotMethod, gotPath, gotAccept, gotUA)
			}
		})
	}
}

// tlsCAFile writes srv's certificate as a PEM CA file.
func tlsCAFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	return writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
}

func TestTLS(t *testing.T) {
	t.Parallel()
	var proto atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		proto.Store(req.Proto)
		w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
		_, _ = io.WriteString(w, "{}")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := tlsCAFile(t, srv)

	tests := []struct {
		name      string
		opts      Options
		wantErr   string
		wantProto string
	}{
		{name: "CA file, HTTP/2", opts: Options{CAFile: ca}, wantProto: "HTTP/2.0"},
		{name: "CA file, forced HTTP/1.1", opts: Options{CAFile: ca, ForceHTTP11: true}, wantProto: "HTTP/1.1"},
		{name: "untrusted", opts: Options{}, wantErr: "not trusted"},
		{name: "insecure", opts: Options{Insecure: true}, wantProto: "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.Host, o.Endpoint = "registry.test", srv.URL
			r, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			proto.Store("")
			_, rc, err := r.Manifest(t.Context(), "a", "latest", false)
			if tt.wantErr != "" {
				if oci.StatusOf(err) != 502 || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want 502 %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rc.Close()
			if got := proto.Load(); got != tt.wantProto {
				t.Fatalf("proto = %v, want %s", got, tt.wantProto)
			}
		})
	}
}

// TestTLSVerifiedUnlessInsecure: Options whose only fields are the
// required ones verify the upstream's certificate: a server whose
// certificate nobody trusts is refused with a verification error and
// never sees the request. Insecure: true, and only that, skips the
// verification.
func TestTLSVerifiedUnlessInsecure(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(srv.Close)

	verified, err := New(Options{Host: "registry.test", Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = verified.Manifest(t.Context(), "team/app", "latest", false)
	var (
		unknownAuthority x509.UnknownAuthorityError
		verification     *tls.CertificateVerificationError
	)
	notVerified := errors.As(err, &unknownAuthority) || errors.As(err, &verification)
	if oci.StatusOf(err) != http.StatusBadGateway || !notVerified {
		t.Fatalf("zero Options: err = %v, want a 502 caused by a TLS verification error", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the untrusted server got %d requests, want none", n)
	}

	insecure, err := New(Options{Host: "registry.test", Endpoint: srv.URL, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	_, rc, err := insecure.Manifest(t.Context(), "team/app", "latest", false)
	if err != nil {
		t.Fatalf("Insecure: %v", err)
	}
	rc.Close()
	if n := hits.Load(); n != 1 {
		t.Fatalf("server got %d requests, want 1", n)
	}
}

func TestRedirectedBlob(t *testing.T) {
	t.Parallel()
	var cdnAuth atomic.Value
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		cdnAuth.Store(req.Header.Get("Authorization"))
		w.Header().Set("Content-Length", "4")
		if req.Method == http.MethodGet {
			_, _ = io.WriteString(w, "blob")
		}
	}))
	t.Cleanup(cdn.Close)
	cdnURL := strings.Replace(cdn.URL, "127.0.0.1", "localhost", 1) + "/data?X-Amz-Signature=topsecret"
	r, _ := newTestRegistry(t, func(w http.ResponseWriter, req *http.Request) {
		if u, p, ok := req.BasicAuth(); !ok || u != "bob" || p != "pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="r"`)
			w.WriteHeader(401)
			return
		}
		if strings.HasSuffix(req.URL.Path, "/metadata") {
			http.Redirect(w, req, "http://169.254.169.254/latest/meta-data/", http.StatusTemporaryRedirect)
			return
		}
		if strings.HasSuffix(req.URL.Path, "/loop") {
			http.Redirect(w, req, req.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		http.Redirect(w, req, cdnURL, http.StatusTemporaryRedirect)
	}, Options{Credentials: auth.Credentials{Username: "bob", Password: "pw"}, AllowNetworks: testutil.LoopbackNetworks})

	t.Run("get", func(t *testing.T) {
		rc, size, err := r.Blob(t.Context(), "team/app", testDigest)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != "blob" || size != 4 || cdnAuth.Load().(string) != "" {
			t.Fatalf("body %q size %d cdn Authorization %q", b, size, cdnAuth.Load())
		}
	})
	t.Run("head", func(t *testing.T) {
		size, err := r.StatBlob(t.Context(), "team/app", testDigest)
		if err != nil || size != 4 || cdnAuth.Load().(string) != "" {
			t.Fatalf("size %d err %v cdn Authorization %q", size, err, cdnAuth.Load())
		}
	})
	t.Run("redirect to link-local refused", func(t *testing.T) {
		_, err := r.Get(t.Context(), "team/app", "tags/metadata", nil)
		if oci.StatusOf(err) != 502 || !errors.Is(err, ErrForbiddenAddress) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("redirect loop", func(t *testing.T) {
		_, err := r.Get(t.Context(), "team/app", "tags/loop", nil)
		if oci.StatusOf(err) != 502 || !errors.Is(err, ErrTooManyRedirects) || strings.Contains(err.Error(), "topsecret") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestGet(t *testing.T) {
	t.Parallel()
	var gotQuery url.Values
	var gotAccept string
	r, _ := newTestRegistry(t, func(w http.ResponseWriter, req *http.Request) {
		gotQuery, gotAccept = req.URL.Query(), req.Header.Get("Accept")
		w.Header().Set("Ratelimit-Limit", "100;w=21600")
		w.Header().Set("Ratelimit-Remaining", "42;w=21600")
		_, _ = io.WriteString(w, `{"name":"team/app","tags":["a"]}`)
	}, Options{})
	tests := []struct {
		name, suffix string
		query        url.Values
		wantAccept   string
	}{
		{name: "tags list", suffix: "tags/list", query: url.Values{"n": {"10"}, "last": {"a"}}},
		{name: "referrers", suffix: "referrers/" + testDigest.String(), wantAccept: oci.MediaTypeOCIIndex},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := r.Get(t.Context(), "team/app", tt.suffix, tt.query)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), "team/app") || gotAccept != tt.wantAccept {
				t.Fatalf("status %d body %q accept %q", resp.StatusCode, b, gotAccept)
			}
			if tt.query != nil && gotQuery.Encode() != tt.query.Encode() {
				t.Fatalf("query %v", gotQuery)
			}
		})
	}
	if rem, window, _, ok := r.RateRemaining(); !ok || rem != 42 || window != 6*time.Hour {
		t.Fatalf("RateRemaining() = %d, %v, %v; want 42 in 6h", rem, window, ok)
	}
}

// TestBearerThroughRegistry: a registry whose token realm is its own
// /token answers with one token for several requests.
func TestBearerThroughRegistry(t *testing.T) {
	t.Parallel()
	var hits, tokenHits atomic.Int64
	var realm string
	r, srv := newTestRegistry(t, func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/token" {
			tokenHits.Add(1)
			_, _ = io.WriteString(w, `{"access_token":"t0ken","expires_in":300}`)
			return
		}
		hits.Add(1)
		if req.Header.Get("Authorization") != "Bearer t0ken" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`",service="registry.test"`)
			w.WriteHeader(401)
			return
		}
		w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
		_, _ = io.WriteString(w, "{}")
	}, Options{})
	realm = srv.URL + "/token"
	for i := range 3 {
		_, rc, err := r.Manifest(t.Context(), "team/app", "latest", false)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		rc.Close()
	}
	if hits.Load() != 4 || tokenHits.Load() != 1 {
		t.Fatalf("registry %d token %d, want 4 and 1", hits.Load(), tokenHits.Load())
	}
}

// TestRealmOnAnotherPort: a registry on an IP literal that sends clients
// to a realm on the same IP but another port gets no credentials sent
// there, unless that realm is configured as one of its token realms.
func TestRealmOnAnotherPort(t *testing.T) {
	t.Parallel()
	var realmAuth atomic.Value
	realmAuth.Store("")
	var realmHits atomic.Int64
	realm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		realmHits.Add(1)
		realmAuth.Store(req.Header.Get("Authorization"))
		_, _ = io.WriteString(w, `{"token":"t0ken"}`)
	}))
	t.Cleanup(realm.Close)
	handler := func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "Bearer t0ken" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm.URL+`/token",service="registry.test"`)
			w.WriteHeader(401)
			return
		}
		w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
		_, _ = io.WriteString(w, "{}")
	}
	creds := auth.Credentials{Username: "robot", Password: "robot-pw"}
	tests := []struct {
		name      string
		realms    []string
		allow     []netip.Prefix
		wantHits  int64
		wantError bool
	}{
		{name: "not configured", wantError: true},
		{name: "configured", realms: []string{hostOnly(t, realm.URL)}, wantHits: 1, allow: testutil.LoopbackNetworks},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			realmHits.Store(0)
			r, _ := newTestRegistry(t, handler, Options{Credentials: creds, TokenRealms: tt.realms, AllowNetworks: tt.allow})
			_, rc, err := r.Manifest(t.Context(), "team/app", "latest", false)
			if tt.wantError {
				if oci.StatusOf(err) != http.StatusBadGateway || !errors.Is(err, auth.ErrRealmNotAllowed) {
					t.Fatalf("err = %v, want a 502 caused by auth.ErrRealmNotAllowed", err)
				}
			} else if err != nil {
				t.Fatal(err)
			} else {
				rc.Close()
			}
			if realmHits.Load() != tt.wantHits {
				t.Fatalf("realm requests = %d, want %d", realmHits.Load(), tt.wantHits)
			}
		})
	}
	if got := realmAuth.Load().(string); got == "" {
		t.Fatal("the configured realm got no credentials")
	}
}

// hostOnly is the host of a URL without its port.
func hostOnly(t *testing.T, s string) string {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname()
}

// TestBlobFrom: a download resumed at an offset asks for the rest with a
// Range request and reports the whole size; an upstream that ignores the
// range has the first bytes skipped; one that answers another range is
// refused rather than trusted.
func TestBlobFrom(t *testing.T) {
	t.Parallel()
	content := []byte("0123456789abcdefghij")
	for _, tc := range []struct {
		name    string
		respond func(w http.ResponseWriter, req *http.Request)
		want    string
		wantErr bool
	}{
		{name: "range honoured", respond: func(w http.ResponseWriter, req *http.Request) {
			http.ServeContent(w, req, "blob", time.Time{}, bytes.NewReader(content))
		}, want: "abcdefghij"},
		{name: "range ignored", respond: func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			_, _ = w.Write(content)
		}, want: "abcdefghij"},
		{name: "another range", respond: func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-19/20")
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(content)
		}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var gotRange atomic.Value
			r, _ := newTestRegistry(t, func(w http.ResponseWriter, req *http.Request) {
				gotRange.Store(req.Header.Get("Range"))
				tc.respond(w, req)
			}, Options{})
			rc, size, err := r.BlobFrom(t.Context(), "team/app", testDigest, 10)
			if tc.wantErr {
				if err == nil {
					rc.Close()
					t.Fatal("a Content-Range starting elsewhere was accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(rc)
			rc.Close()
			if string(b) != tc.want || size != 20 || gotRange.Load() != "bytes=10-" {
				t.Errorf("body %q size %d Range %q", b, size, gotRange.Load())
			}
		})
	}
}
