package shim

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

// connectRecorder is an Observer that keeps what it was told.
type connectRecorder struct {
	mu        sync.Mutex
	decisions map[string]int
	open, max int
}

func (c *connectRecorder) Connect(d string) { c.mu.Lock(); c.decisions[d]++; c.mu.Unlock() }
func (c *connectRecorder) TunnelOpened() {
	c.mu.Lock()
	c.open++
	c.max = max(c.max, c.open)
	c.mu.Unlock()
}
func (c *connectRecorder) TunnelClosed() { c.mu.Lock(); c.open--; c.mu.Unlock() }

// proxyUsers is a ProxyAuthenticator: Proxy-Authorization header → user.
type proxyUsers map[string]string

func (p proxyUsers) ProxyUser(h string) (string, bool) {
	u, ok := p[h]
	return u, ok
}

func TestObserverSeesConnectDecisionsAndTunnels(t *testing.T) {
	t.Parallel()
	echo := testutil.EchoServer(t)
	echoPort, _ := strconv.Atoi(strings.TrimPrefix(echo, "127.0.0.1:"))

	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	obs := &connectRecorder{decisions: map[string]int{}}
	nets := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	sh, err := New(http.NotFoundHandler(), NewMinter(ca, MinterOptions{}), Options{
		Registries: []Registry{{Host: "registry.test:5000"}},
		Tunnel: TunnelOptions{
			ConnectTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, SendTimeout: 5 * time.Second,
			AllowPorts: []int{443, echoPort}, AllowNetworks: nets,
		},
		ProxyAuth: proxyUsers{"Basic good": "alice"},
		Observer:  obs,
		Logger:    quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sh)
	t.Cleanup(func() { srv.Close(); sh.Close() })

	connect := func(target, auth string) (net.Conn, *bufio.Reader, string) {
		t.Helper()
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
		if auth != "" {
			fmt.Fprintf(conn, "Proxy-Authorization: %s\r\n", auth)
		}
		fmt.Fprint(conn, "\r\n")
		br := bufio.NewReader(conn)
		line, _ := br.ReadString('\n')
		for {
			h, err := br.ReadString('\n')
			if err != nil || h == "\r\n" {
				break
			}
		}
		return conn, br, line
	}
	cases := []struct{ target, auth, status string }{
		{"registry.test:5000", "", "200"},
		{"registry.test:5000", "Basic bad", "407"},
		{"no-port", "", "400"},
		{"169.254.169.254:443", "", "403"},
	}
	for _, tc := range cases {
		conn, _, line := connect(tc.target, tc.auth)
		conn.Close()
		if !strings.Contains(line, " "+tc.status+" ") {
			t.Fatalf("CONNECT %s: %q, want %s", tc.target, line, tc.status)
		}
	}
	conn, br, line := connect(echo, "")
	if !strings.Contains(line, " 200 ") {
		t.Fatalf("tunnel: %q", line)
	}
	fmt.Fprint(conn, "ping\n")
	if got, _ := br.ReadString('\n'); got != "ping\n" {
		t.Fatalf("tunnel echoed %q", got)
	}
	obs.mu.Lock()
	openWhileUsed := obs.open
	obs.mu.Unlock()
	conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := sh.Shutdown(ctx); err != nil { // waits for every CONNECT handler
		t.Fatal(err)
	}

	obs.mu.Lock()
	defer obs.mu.Unlock()
	want := map[string]int{"intercept": 1, "proxy-auth-failed": 1, "bad-request": 1, "deny": 1, "tunnel": 1}
	if fmt.Sprint(obs.decisions) != fmt.Sprint(want) {
		t.Fatalf("decisions %v, want %v", obs.decisions, want)
	}
	if openWhileUsed != 1 || obs.open != 0 || obs.max != 1 {
		t.Fatalf("tunnels open while used %d, after %d, max %d; want 1, 0, 1", openWhileUsed, obs.open, obs.max)
	}
}
