package shim

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// connectSpelled sends CONNECT target to the test shim and, when it is
// answered 200, one GET of path over TLS with serverName (an IP literal
// is verified against the certificate, not sent as SNI). It returns the
// CONNECT status line, the CONNECT body of a refusal (one line), and the
// GET's status.
func connectSpelled(t *testing.T, ts *testShim, target, serverName, path string) (line, reason string, status int) {
	t.Helper()
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Bounds the test when a target is (wrongly) tunnelled somewhere
	// that does not answer.
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	line = resp.Status
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return line, strings.TrimSpace(string(b)), 0
	}
	tc := tls.Client(&bufConn{Conn: conn, r: br}, &tls.Config{ServerName: serverName, RootCAs: ts.pool, NextProtos: []string{"http/1.1"}})
	fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, serverName)
	got, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return line, "TLS or HTTP inside the tunnel: " + err.Error(), 0
	}
	got.Body.Close()
	return line, "", got.StatusCode
}

// TestConnectSpellings: a CONNECT target is decided in one spelling:
// case, a trailing dot and leading zeros in the port do not turn an
// intercepted registry into a tunnel (which skipped the cache and its
// rules), the inet_aton spellings of addresses and other odd targets are
// refused as bad requests, and a CONNECT to the address and port of a
// registry's endpoint is intercepted as that registry when only one
// registry has it, refused when several share it.
func TestConnectSpellings(t *testing.T) {
	t.Parallel()
	ts := newTestShim(t, testShimOptions{})
	const manifest = "/v2/org/app/manifests/v1"
	intercepted := []struct{ target, sni, want string }{
		{"quay.io:0443", "quay.io", "mirror GET /v2/quay.io/org/app/manifests/v1"},
		{"QUAY.IO.:443", "quay.io", "mirror GET /v2/quay.io/org/app/manifests/v1"},
		{"registry.test:05000", "registry.test", "mirror GET /v2/registry.test_5000/org/app/manifests/v1"},
		{"Registry-1.Docker.IO.:00443", "registry-1.docker.io", "mirror GET /v2/docker.io/org/app/manifests/v1"},
	}
	for _, tc := range intercepted {
		line, reason, status := connectSpelled(t, ts, tc.target, tc.sni, manifest)
		if status != http.StatusOK || !strings.HasPrefix(ts.rec.last(), tc.want) {
			t.Errorf("CONNECT %s: %s %s, GET %d reached %q; want it intercepted into %q", tc.target, line, reason, status, ts.rec.last(), tc.want)
		}
	}
	_, upPort, _ := net.SplitHostPort(ts.up.url.Host)
	refused := []struct{ target, status, reason string }{
		{"127.1:443", "400", "bad host"},
		{"0x7f000001:443", "400", "bad host"},
		{"0177.0.0.1:443", "400", "bad host"},
		{"2130706433:443", "400", "bad host"},
		{"quay.io:+443", "400", ""}, // refused by net/http already
		{"quay.io:65536", "400", "bad port"},
		{"quay.io:00000000000443", "400", "bad port"},
		{"quay.io:0", "400", "bad port"},
		{"quay.io:", "400", "bad port"},
		{"user@quay.io:443", "400", ""}, // refused by net/http already
		{"[fe80::1%25eth0]:443", "400", "zone"},
		{"[::ffff:127.0.0.1]:443", "403", "loopback"},
		{"[::ffff:169.254.169.254]:443", "403", "metadata"},
		// The three registries share the recording registry's endpoint.
		{"127.0.0.1:" + upPort, "403", "shared by the cached registries docker.io, quay.io, registry.test:5000"},
	}
	for _, tc := range refused {
		line, reason, _ := connectSpelled(t, ts, tc.target, "x", "/")
		if !strings.HasPrefix(line, tc.status) || !strings.Contains(reason, tc.reason) {
			t.Errorf("CONNECT %s: %s %q; want %s naming %q", tc.target, line, reason, tc.status, tc.reason)
		}
	}
	if got := ts.rec.last(); !strings.HasPrefix(got, intercepted[len(intercepted)-1].want) {
		t.Fatalf("a refused CONNECT reached %q", got)
	}
}

// TestConnectToARegistryEndpointAddress: with one registry on an endpoint
// address, a CONNECT to that address and port in any spelling is that
// registry: intercepted, served from the mirror, its certificate minted
// for the address; the SNI may name the registry, not another host. The
// same address at another port is no registry.
func TestConnectToARegistryEndpointAddress(t *testing.T) {
	t.Parallel()
	ts := newTestShim(t, testShimOptions{hosts: []string{"quay.io"}})
	_, upPort, _ := net.SplitHostPort(ts.up.url.Host)
	const manifest = "/v2/org/app/manifests/v1"
	for _, tc := range []struct{ target, sni string }{
		{"127.0.0.1:" + upPort, "127.0.0.1"},
		{"[::ffff:127.0.0.1]:0" + upPort, "127.0.0.1"},
		{"127.0.0.1:" + upPort, "quay.io"},
	} {
		line, reason, status := connectSpelled(t, ts, tc.target, tc.sni, manifest)
		if status != http.StatusOK || !strings.HasPrefix(ts.rec.last(), "mirror GET /v2/quay.io"+manifest[3:]) {
			t.Errorf("CONNECT %s (SNI %s): %s %s, GET %d reached %q; want quay.io from the mirror", tc.target, tc.sni, line, reason, status, ts.rec.last())
		}
	}
	// Another name in the SNI gets no certificate.
	line, reason, _ := connectSpelled(t, ts, "127.0.0.1:"+upPort, "github.com", manifest)
	if !strings.HasPrefix(line, "200") || !strings.Contains(reason, "TLS") {
		t.Errorf("SNI github.com inside a CONNECT to quay.io's address: %s %q; want the handshake refused", line, reason)
	}
	line, reason, _ = connectSpelled(t, ts, "127.0.0.1:1", "x", "/")
	if !strings.HasPrefix(line, "403") || !strings.Contains(reason, "loopback") {
		t.Errorf("CONNECT 127.0.0.1:1: %s %q; want 403 loopback", line, reason)
	}
}

// TestAbsoluteFormSpellings: an HTTP_PROXY client's absolute-form URL is
// read in the same one spelling as CONNECT targets: a zero-padded port 80
// and a trailing dot still reach the mirror, an unclean path is refused
// before the route, and an odd host is a bad request.
func TestAbsoluteFormSpellings(t *testing.T) {
	t.Parallel()
	ts := newTestShim(t, testShimOptions{})
	send := func(url string) (int, string) {
		t.Helper()
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", url)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, u := range []string{"http://quay.io:0080/v2/org/app/manifests/v1", "http://QUAY.IO./v2/org/app/manifests/v1"} {
		status, body := send(u)
		if status != http.StatusOK || !strings.HasPrefix(ts.rec.last(), "mirror GET /v2/quay.io/org/app/manifests/v1") {
			t.Errorf("GET %s: %d %s, reached %q; want the mirror", u, status, body, ts.rec.last())
		}
	}
	before := ts.rec.last()
	for _, tc := range []struct {
		url    string
		status int
		body   string
	}{
		{"http://quay.io/v2%2forg/app/manifests/v1", 400, `"code":"UNSUPPORTED"`},
		{"http://quay.io/x/../v2/org/app/manifests/v1", 400, `"code":"UNSUPPORTED"`},
		{"http://quay.io:080808/v2/", 400, "bad port"},
		{"http://127.1/v2/", 400, "bad host"},
		{"http://[::ffff:127.0.0.1]/", 403, "loopback"},
	} {
		status, body := send(tc.url)
		if status != tc.status || !strings.Contains(body, tc.body) {
			t.Errorf("GET %s: %d %s; want %d with %q", tc.url, status, body, tc.status, tc.body)
		}
	}
	if got := ts.rec.last(); got != before {
		t.Fatalf("a refused request reached %q", got)
	}
}
