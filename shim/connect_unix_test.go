//go:build unix

package shim

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

// The tests here watch connections through bare system calls, which exist
// on every unix.

// pendingConn accepts, without waiting, a connection that reached ln and
// reports whether there was one.
func pendingConn(t *testing.T, ln *net.TCPListener) bool {
	t.Helper()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := false
	// The listener's descriptor is non-blocking: accept answers EAGAIN
	// when no connection is waiting.
	err = rc.Control(func(fd uintptr) {
		nfd, _, err := syscall.Accept(int(fd))
		if err == nil {
			got = true
			syscall.Close(nfd)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestOnlyTunnelDecisionsOpenTunnels(t *testing.T) {
	t.Parallel()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	target := ln.Addr().String()
	sh := tunnelShim(t, portOf(t, target))
	for _, tc := range []struct {
		name    string
		dec     Decision
		status  string
		reaches bool
	}{
		{"tunnel, the control: it does reach the target", Tunnel, "200", true},
		{"zero value", Decision(0), "403", false},
		{"deny", Deny, "403", false},
		{"negative", Decision(-1), "403", false},
		{"one past the last", Decision(3), "403", false},
		{"far off", Decision(99), "403", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tgt, err := ParseTarget(r.Host, 0)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				sh.carryOut(w, r, Verdict{Decision: tc.dec, Target: tgt}, "")
			}))
			defer srv.Close()
			conn, _, line := connectTo(t, srv.Listener.Addr().String(), target)
			defer conn.Close()
			if !strings.Contains(line, " "+tc.status+" ") {
				t.Fatalf("decision %d (%s): %q, want %s", int(tc.dec), tc.dec, line, tc.status)
			}
			// The tunnel dials before it answers 200, so by now any
			// connection the decision opened is waiting on ln.
			if got := pendingConn(t, ln); got != tc.reaches {
				t.Fatalf("decision %d (%s): a connection reached the target: %v, want %v", int(tc.dec), tc.dec, got, tc.reaches)
			}
		})
	}
}

// rawConn is a TCP client made of bare system calls. The race detector
// treats every read through the net package as synchronising with every
// earlier write in the process, which would order anything a test learns
// from the shim before whatever the test does next. A rawConn's reads do
// not, so the test learns that a tunnel is open the way a client on
// another machine would: without ordering the shim's memory.
type rawConn struct{ fd int }

// rawDial connects to addr ("127.0.0.1:port").
func rawDial(t *testing.T, addr string) *rawConn {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.CloseOnExec(fd) // the setup tests run scripts meanwhile
	c := &rawConn{fd: fd}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		t.Fatal(err)
	}
	return c
}

// send writes s whole.
func (c *rawConn) send(t *testing.T, s string) {
	t.Helper()
	for p := []byte(s); len(p) > 0; {
		n, err := syscall.SendmsgN(c.fd, p, nil, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
}

// recvUntil reads until what it read ends with suffix, or the connection
// ends, and returns what it read.
func (c *rawConn) recvUntil(t *testing.T, suffix string) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 512)
	for !strings.HasSuffix(string(got), suffix) {
		n, _, err := syscall.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, syscall.ECONNRESET) || (err == nil && n == 0) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	return string(got)
}

// TestShutdownWhileConnecting shuts the shim down while a tunnel is open
// and clients keep connecting: each new CONNECT gets a tunnel or, once the
// shutdown began, 503; the open tunnel lasts until the deadline, when it
// is cut and Shutdown says so. Under -race it also catches a CONNECT
// handler counted in without ordering against Shutdown's wait
// (sync.WaitGroup's Add racing its Wait).
func TestShutdownWhileConnecting(t *testing.T) {
	t.Parallel()
	echo := testutil.EchoServer(t)
	sh := tunnelShim(t, portOf(t, echo))
	srv := httptest.NewServer(sh)
	defer srv.Close()
	proxy := srv.Listener.Addr().String()

	held := rawDial(t, proxy)
	held.send(t, "CONNECT "+echo+" HTTP/1.1\r\nHost: "+echo+"\r\n\r\n")
	if resp := held.recvUntil(t, "\r\n\r\n"); !strings.HasPrefix(resp, "HTTP/1.1 200 ") {
		t.Fatalf("CONNECT before the shutdown: %q", resp)
	}
	held.send(t, "ping\n")
	if got := held.recvUntil(t, "\n"); got != "ping\n" {
		t.Fatalf("tunnel echoed %q", got)
	}

	// The deadline only ends the held tunnel; nothing below waits for
	// it to pass except the last two checks, which are about it.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- sh.Shutdown(ctx) }()

	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for range 4 {
		wg.Go(func() {
			for {
				conn, _, line, err := tryConnect(proxy, echo)
				if err != nil {
					errs <- err.Error()
					return
				}
				conn.Close()
				switch {
				case strings.Contains(line, " 503 "):
					return
				case !strings.Contains(line, " 200 "):
					errs <- "CONNECT during the shutdown: neither a tunnel nor 503: " + line
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if rest := held.recvUntil(t, "\n"); rest != "" {
		t.Fatalf("the held tunnel sent %q, want its end at the deadline", rest)
	}
	if err := <-shutdown; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline's error (a tunnel was cut)", err)
	}
}
