package shim

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// auth.Guard is the ProxyAuthenticator cmd passes.
var _ ProxyAuthenticator = (*auth.Guard)(nil)

func TestNewRejectsInvalidOptions(t *testing.T) {
	t.Parallel()
	ca := mintTestCA(t)
	minter := NewMinter(ca, MinterOptions{})
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	mirror := http.NotFoundHandler()
	for _, tc := range []struct {
		name   string
		mirror http.Handler
		minter *Minter
		opts   Options
		want   string // in the error message
	}{
		{"no mirror", nil, minter, Options{}, "mirror"},
		{"no minter", mirror, nil, Options{}, "minter"},
		{"empty host", mirror, minter, Options{Registries: []Registry{{}}}, `invalid registry host ""`},
		{"bad host", mirror, minter, Options{Registries: []Registry{{Host: "a b"}}}, `invalid registry host "a b"`},
		{"listed twice", mirror, minter, Options{Registries: []Registry{{Host: "quay.io"}, {Host: "Quay.io:443"}}}, `"quay.io" is listed twice`},
		{"docker hub aliases are one registry", mirror, minter, Options{Registries: []Registry{{Host: "docker.io"}, {Host: "index.docker.io"}}}, `"docker.io" is listed twice`},
		{"bad namespace", mirror, minter, Options{Registries: []Registry{{Host: "quay.io", Namespace: "Quay/"}}}, `invalid namespace "Quay/"`},
		{"endpoint without scheme", mirror, minter, Options{Registries: []Registry{{Host: "quay.io", Endpoint: "quay.io"}}}, `endpoint "quay.io"`},
		{"endpoint with credentials", mirror, minter, Options{Registries: []Registry{{Host: "quay.io", Endpoint: "https://u:p@quay.io"}}}, "without credentials"},
		{"missing CA file", mirror, minter, Options{Registries: []Registry{{Host: "quay.io", CAFile: "/nonexistent/ca.pem"}}}, "/nonexistent/ca.pem"},
		{"CA file without certificates", mirror, minter, Options{Registries: []Registry{{Host: "quay.io", CAFile: notPEM}}}, "no PEM certificates"},
		{"docker hub without its registry", mirror, minter, Options{DockerHub: true, Registries: []Registry{{Host: "quay.io"}}}, "DockerHub needs a registry for docker.io"},
		{"token host as a registry", mirror, minter, Options{DockerHub: true, Registries: []Registry{{Host: "docker.io"}, {Host: "auth.docker.io"}}}, "token host"},
		{"required proxy auth nobody can pass", mirror, minter, Options{RequireProxyAuth: true}, "RequireProxyAuth needs a ProxyAuth"},
		{"pushes without a purger", mirror, minter, Options{AllowPush: true}, "Purger is nil"},
		{"own-auth pushes without a purger", mirror, minter, Options{AllowPushWithOwnAuth: true}, "Purger is nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sh, err := New(tc.mirror, tc.minter, tc.opts)
			if err == nil {
				sh.Close()
				t.Fatal("New accepted the options")
			}
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v; want ErrInvalidOptions mentioning %q", err, tc.want)
			}
		})
	}
}

func TestHandlesProxyRequestsOnly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		method string
		target string
		want   bool
	}{
		{"CONNECT", "CONNECT", "quay.io:443", true},
		{"absolute form", "GET", "http://quay.io/v2/", true},
		{"origin form", "GET", "/v2/", false},
		{"origin form setup", "GET", "/setup/systemd", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequestWithContext(t.Context(), tc.method, tc.target, nil)
			if tc.target[0] == '/' {
				r.URL.Scheme, r.URL.Host = "", "" // as net/http parses an origin-form request
			}
			if got := Handles(r); got != tc.want {
				t.Fatalf("Handles(%s %s) = %v, want %v", tc.method, tc.target, got, tc.want)
			}
		})
	}
}

func TestOriginFormReachingTheShimGetsAnOCIError(t *testing.T) {
	t.Parallel()
	sh, err := New(http.NotFoundHandler(), NewMinter(mintTestCA(t), MinterOptions{}), Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	srv := httptest.NewServer(sh)
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/v2/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env oci.Envelope
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/json" ||
		len(env.Errors) != 1 || env.Errors[0].Code != oci.CodeUnsupported {
		t.Fatalf("GET /v2/ at the shim: %d %s %+v, want 400 and one UNSUPPORTED error", resp.StatusCode, resp.Header.Get("Content-Type"), env)
	}
}

func TestPassThroughVerifiesTheEndpoint(t *testing.T) {
	t.Parallel()
	up := newTLSUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "from the registry")
	}))
	for _, tc := range []struct {
		name   string
		reg    Registry
		status int
		code   string // of the OCI error, when status is not 200
	}{
		{"certificate not trusted", Registry{Host: "quay.io", Endpoint: up.srv.URL}, http.StatusBadGateway, oci.CodeUnavailable},
		{"trusted through CAFile", Registry{Host: "quay.io", Endpoint: up.srv.URL, CAFile: up.caFile}, http.StatusOK, ""},
		{"insecure registry", Registry{Host: "quay.io", Endpoint: up.srv.URL, Insecure: true}, http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca := mintTestCA(t)
			sh, err := New(http.NotFoundHandler(), NewMinter(ca, MinterOptions{}), Options{Registries: []Registry{tc.reg}, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(sh)
			t.Cleanup(func() { srv.Close(); sh.Close() })
			// A non-API path is always passed through to the endpoint.
			req, err := http.NewRequestWithContext(t.Context(), "GET", "https://quay.io/api/v1/repository", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := proxyClient(t, srv.Listener.Addr().String(), minterRoots(ca)).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
			}
			if tc.code != "" && !strings.Contains(string(body), `"code":"`+tc.code+`"`) {
				t.Fatalf("body %s, want an OCI %s error", body, tc.code)
			}
			if tc.code == "" && string(body) != "from the registry" {
				t.Fatalf("body %q, want the registry's", body)
			}
		})
	}
}
