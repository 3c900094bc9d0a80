package shim

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
)

// tunnelShim returns a shim that may tunnel to 127.0.0.1:port and
// intercepts nothing.
func tunnelShim(t *testing.T, port int) *Shim {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nets := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	sh, err := New(http.NotFoundHandler(), NewMinter(ca, MinterOptions{}), Options{
		Tunnel: TunnelOptions{AllowPorts: []int{port}, AllowNetworks: nets},
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	return sh
}

// portOf returns the port of a "host:port" address.
func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// connectTo sends CONNECT target to the proxy at proxy and returns the
// connection, a reader past the response header and the status line.
func connectTo(t *testing.T, proxy, target string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	conn, br, line, err := tryConnect(proxy, target)
	if err != nil {
		t.Fatal(err)
	}
	return conn, br, line
}

// tryConnect is connectTo for goroutines other than the test's.
func tryConnect(proxy, target string) (net.Conn, *bufio.Reader, string, error) {
	conn, err := net.Dial("tcp", proxy)
	if err != nil {
		return nil, nil, "", err
	}
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(conn)
	line, _ := br.ReadString('\n')
	for {
		h, err := br.ReadString('\n')
		if err != nil || h == "\r\n" {
			break
		}
	}
	return conn, br, line, nil
}

func TestDecisionZeroValueIsDeny(t *testing.T) {
	t.Parallel()
	var d Decision
	if d != Deny || d.String() != "deny" {
		t.Fatalf("zero Decision is %d (%s), want Deny", d, d)
	}
}
