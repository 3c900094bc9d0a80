package shim

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// rawIntercepted sends one request, written as is (requestLine is
// "METHOD TARGET"), inside an intercepted CONNECT to host through the
// test shim, and returns the answer's status and body.
func rawIntercepted(t *testing.T, ts *testShim, host, requestLine string) (int, string) {
	t.Helper()
	conn, br, line := connectTo(t, ts.addr, host+":443")
	defer conn.Close()
	if !strings.Contains(line, " 200 ") {
		t.Fatalf("CONNECT %s: %q", host, line)
	}
	tc := tls.Client(&bufConn{Conn: conn, r: br}, &tls.Config{ServerName: host, RootCAs: ts.pool, NextProtos: []string{"http/1.1"}})
	defer tc.Close()
	fmt.Fprintf(tc, "%s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", requestLine, host)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatalf("%s: %v", requestLine, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestUncleanPathsAreRefused: inside an intercepted connection a path
// that is not canonical ("//v2/", "/./v2/", "/x/../v2/", encoded slashes
// or dots, a backslash, a NUL) is refused with 400 UNSUPPORTED for every
// method, pushes off: before, such paths did not look like /v2/ and were
// passed through to the registry, writes included. Neither the mirror
// nor the registry sees them; canonical paths still route as before.
func TestUncleanPathsAreRefused(t *testing.T) {
	t.Parallel()
	ts := newTestShim(t, testShimOptions{})
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	paths := []string{
		"//v2/org/app/manifests/v1",
		"/./v2/org/app/manifests/v1",
		"/x/../v2/org/app/manifests/v1",
		"/v2/org/../org/app/manifests/v1",
		"/v2/org/app/blobs/uploads/.",
		"/v2//org/app/manifests/v1",
		"/%2e/v2/org/app/manifests/v1",
		"/%2E%2E/v2/org/app/manifests/v1",
		"/v2%2forg/app/manifests/v1",
		"/v2/org%2Fapp/manifests/v1",
		"/v2/org/app/blobs/" + d + "%5c",
		"/v2/%252e%252e/org/app/manifests/v1",
		"/v2\\org/app/manifests/v1",
		"/v2/org/app/manifests/v1%00",
		"*",
	}
	for _, p := range paths {
		for _, m := range []string{"GET", "DELETE", "PUT", "POST", "PATCH"} {
			if p == "*" && m != "GET" {
				continue
			}
			status, body := rawIntercepted(t, ts, "quay.io", m+" "+p)
			if status != http.StatusBadRequest || !strings.Contains(body, `"code":"UNSUPPORTED"`) || !strings.Contains(body, "registry clients send canonical paths") {
				t.Errorf("%s %s: %d %s; want 400 UNSUPPORTED", m, p, status, body)
			}
			if got := ts.rec.last(); got != "" {
				t.Fatalf("%s %s reached %q", m, p, got)
			}
		}
	}
	// The canonical forms clients send still route: through the mirror,
	// and to the registry for non-API paths and the token host.
	for _, tc := range []struct{ host, line, want string }{
		{"quay.io", "GET /v2/org/app/manifests/v1", "mirror GET /v2/quay.io/org/app/manifests/v1"},
		{"quay.io", "GET /v2/org/app/blobs/sha256%3A0123", "mirror GET /v2/quay.io/org/app/blobs/sha256:0123"},
		{"quay.io", "HEAD /v2/", "mirror HEAD /v2/"},
		{"quay.io", "GET /api/v1/repository/", "upstream GET /api/v1/repository/"},
		{"auth.docker.io", "GET /token?scope=repository%3Ax%2Fy%3Apull", "upstream GET /token?scope=repository%3Ax%2Fy%3Apull"},
	} {
		status, body := rawIntercepted(t, ts, tc.host, tc.line)
		if status/100 != 2 || !strings.HasPrefix(ts.rec.last(), tc.want) {
			t.Errorf("%s %s: %d %s, reached %q; want %q", tc.host, tc.line, status, body, ts.rec.last(), tc.want)
		}
	}
}

func TestCheckPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw string
		ok  bool
	}{
		{"/v2/", true}, {"/v2", true}, {"/", true}, {"/v2/a/b/blobs/uploads/", true},
		{"/v2/a/manifests/sha256%3Aab", true}, {"/v2/a/blobs/uploads/0f-1?_state=a%2Fb%25", true},
		{"/v2/a%2fb/tags/list", false}, {"/v2/a/..", false}, {"/v2/a/./b", false}, {"//", false},
		{"/v2/a%5Cb", false}, {"/v2/%25", false}, {"/v2/a%09b", false}, {"/v2/a%7fb", false},
	} {
		u, err := url.ParseRequestURI(tc.raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkPath(u); (err == nil) != tc.ok {
			t.Errorf("checkPath(%q) = %v, want ok %v", tc.raw, err, tc.ok)
		}
	}
}
