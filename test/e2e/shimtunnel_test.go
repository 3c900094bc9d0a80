//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

// tunnelTarget is a loopback HTTPS server that is not a registry: GET
// /blob answers fixed random bytes, POST /echo answers the request body.
type tunnelTarget struct {
	srv  *httptest.Server
	blob []byte
	hits atomic.Int64
}

func startTunnelTarget(t *testing.T) *tunnelTarget {
	t.Helper()
	tt := &tunnelTarget{blob: make([]byte, 3<<20+17)}
	if _, err := rand.Read(tt.blob); err != nil {
		t.Fatal(err)
	}
	tt.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tt.hits.Add(1)
		switch r.URL.Path {
		case "/blob":
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(tt.blob)
		case "/echo":
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = io.Copy(w, r.Body)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(tt.srv.Close)
	return tt
}

// Addr is "127.0.0.1:<port>".
func (tt *tunnelTarget) Addr() string { return tt.srv.Listener.Addr().String() }

// Port is the server's port.
func (tt *tunnelTarget) Port() string {
	_, port, _ := net.SplitHostPort(tt.Addr())
	return port
}

// curlViaProxy runs curl with the proxy given explicitly (not from the
// environment, which cleanEnv has emptied) and -k for the target's
// self-signed certificate.
func curlViaProxy(t *testing.T, p *proxy, args ...string) (string, error) {
	t.Helper()
	return tryRun(t, nil, "curl", append([]string{"--silent", "--show-error", "--fail", "--max-time", "60", "--proxy", p.URL, "-k"}, args...)...)
}

// rawConnect sends CONNECT target to the proxy and returns the status line
// and, on 200, the connection positioned after the response header.
func rawConnect(t *testing.T, p *proxy, target string) (string, net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", p.Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(conn)
	status, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("CONNECT %s: reading the status line: %v", target, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("CONNECT %s: reading the header: %v", target, err)
		}
		if l == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(status), conn, br
}

// TestShimTunnel: a CONNECT to a host that is not a registry is spliced
// byte for byte when connect.allowPorts and connect.allowNetworks open it
// (curl over TLS to a loopback HTTPS server, and raw bytes with half-close
// to a TCP echo server); with the default configuration the same CONNECT
// to 127.0.0.1 is refused with 403 and nothing reaches the server.
func TestShimTunnel(t *testing.T) {
	t.Parallel()
	requireTools(t, "curl")
	u := startUpstreams(t)
	tt := startTunnelTarget(t)
	echo := testutil.EchoServer(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	open := startProxyWith(t, u, fmt.Sprintf("connect:\n  allowPorts: [443, %s, %s]\n  allowNetworks: [127.0.0.1/32]\n", tt.Port(), echoPort))
	closed := startProxy(t, u)
	dir := t.TempDir()

	t.Run("curl GET", func(t *testing.T) {
		mark := open.Mark()
		out := filepath.Join(dir, "blob")
		if o, err := curlViaProxy(t, open, "-o", out, "https://"+tt.Addr()+"/blob"); err != nil {
			t.Fatalf("curl through the tunnel: %v\n%s", err, o)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, tt.blob) {
			t.Errorf("curl got %d bytes through the tunnel, want the server's %d identical bytes", len(got), len(tt.blob))
		}
		lines := open.waitLogLines(t, mark, "method=CONNECT", connectField(tt.Addr()), "decision=tunnel")
		if len(lines) > 0 && !strings.Contains(lines[0], "bytes_down=") {
			t.Errorf("tunnel access line without bytes_down: %s", lines[0])
		}
	})

	t.Run("curl POST echo", func(t *testing.T) {
		body := filepath.Join(dir, "body")
		if err := os.WriteFile(body, tt.blob[:1<<20], 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "echoed")
		if o, err := curlViaProxy(t, open, "--data-binary", "@"+body, "-o", out, "https://"+tt.Addr()+"/echo"); err != nil {
			t.Fatalf("curl POST through the tunnel: %v\n%s", err, o)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, tt.blob[:1<<20]) {
			t.Errorf("echo through the tunnel: got %d bytes, want 1 MiB identical", len(got))
		}
	})

	t.Run("raw bytes with half-close", func(t *testing.T) {
		status, conn, br := rawConnect(t, open, echo)
		if !strings.Contains(status, " 200 ") {
			t.Fatalf("CONNECT %s: %q, want 200", echo, status)
		}
		msg := make([]byte, 1<<20+3)
		_, _ = rand.Read(msg)
		go func() {
			_, _ = conn.Write(msg)
			_ = conn.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(br)
		if err != nil || !bytes.Equal(got, msg) {
			t.Errorf("tunnel echoed %d bytes (err %v), want %d identical", len(got), err, len(msg))
		}
	})

	t.Run("loopback refused by default", func(t *testing.T) {
		before := tt.hits.Load()
		mark := closed.Mark()
		out, err := tryRun(t, nil, "curl", "--silent", "--show-error", "--max-time", "30", "--proxy", closed.URL, "-k",
			"-o", "/dev/null", "-w", "%{http_connect}", "https://"+tt.Addr()+"/blob")
		// -w prints the CONNECT status last, after curl's own error line.
		if err == nil || !strings.HasSuffix(strings.TrimSpace(out), "403") {
			t.Errorf("curl CONNECT 127.0.0.1 via the default proxy: err %v, output %q; want the CONNECT answered 403", err, out)
		}
		status, _, _ := rawConnect(t, closed, tt.Addr())
		if !strings.Contains(status, " 403 ") {
			t.Errorf("raw CONNECT %s via the default proxy: %q, want 403", tt.Addr(), status)
		}
		lines := closed.waitLogLines(t, mark, "method=CONNECT", connectField(tt.Addr()), "decision=deny")
		if len(lines) > 0 && !strings.Contains(lines[0], "loopback") {
			t.Errorf("deny line does not name loopback as the reason: %s", lines[0])
		}
		if n := tt.hits.Load() - before; n != 0 {
			t.Errorf("the loopback server saw %d requests through a refused CONNECT", n)
		}
	})
}
