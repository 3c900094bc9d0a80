package netguard

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
)

// selfOn is a Self listening on addrs whose host has the interface
// addresses local.
func selfOn(local []string, addrs ...string) *Self {
	s := &Self{local: func() ([]netip.Addr, error) {
		var out []netip.Addr
		for _, a := range local {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}}
	for _, a := range addrs {
		s.Add(&net.TCPAddr{IP: net.ParseIP(netip.MustParseAddrPort(a).Addr().String()), Port: int(netip.MustParseAddrPort(a).Port())})
	}
	return s
}

func TestGuardCheck(t *testing.T) {
	t.Parallel()
	allow10 := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	allowLoop := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	anySelf := selfOn([]string{"192.0.2.10", "10.1.1.1"}, "0.0.0.0:3128")
	tests := []struct {
		name    string
		opts    Options
		target  string
		addr    string
		wantErr string // the reason, "" allowed
	}{
		{name: "public", target: "cdn.example:443", addr: "93.184.216.34:443"},
		{name: "loopback", target: "evil.example:80", addr: "127.0.0.1:80", wantErr: ReasonLoopback},
		{name: "private", target: "10.1.2.3:443", addr: "10.1.2.3:443", wantErr: ReasonPrivate},
		{name: "metadata", target: "169.254.169.254:80", addr: "169.254.169.254:80", wantErr: ReasonMetadata},
		{name: "endpoint ip and port", opts: Options{Endpoint: "127.0.0.1:5000"}, target: "127.0.0.1:5000", addr: "127.0.0.1:5000"},
		{name: "endpoint ip v4-mapped", opts: Options{Endpoint: "127.0.0.1:5000"}, target: "[::ffff:127.0.0.1]:5000", addr: "[::ffff:127.0.0.1]:5000"},
		{name: "endpoint ip, other port", opts: Options{Endpoint: "127.0.0.1:5000"}, target: "127.0.0.1:22", addr: "127.0.0.1:22", wantErr: ReasonLoopback},
		{name: "endpoint ip, other ip", opts: Options{Endpoint: "127.0.0.1:5000"}, target: "127.0.0.2:5000", addr: "127.0.0.2:5000", wantErr: ReasonLoopback},
		{name: "endpoint ipv6", opts: Options{Endpoint: "[::1]:5000"}, target: "[::1]:5000", addr: "[::1]:5000"},
		{name: "endpoint ipv6, other port", opts: Options{Endpoint: "[::1]:5000"}, target: "[::1]:5001", addr: "[::1]:5001", wantErr: ReasonLoopback},
		{name: "endpoint name at its port", opts: Options{Endpoint: "Registry.Local.:5000"}, target: "registry.local:5000", addr: "10.0.0.5:5000"},
		{name: "endpoint name, other port", opts: Options{Endpoint: "registry.local:5000"}, target: "registry.local:5001", addr: "10.0.0.5:5001", wantErr: ReasonPrivate},
		{name: "endpoint localhost reached as 127.0.0.1", opts: Options{Endpoint: "localhost:5000"}, target: "127.0.0.1:5000", addr: "127.0.0.1:5000"},
		{name: "endpoint localhost, other port", opts: Options{Endpoint: "localhost:5000"}, target: "127.0.0.1:6000", addr: "127.0.0.1:6000", wantErr: ReasonLoopback},
		{name: "allowed network", opts: Options{Allow: allow10}, target: "minio.corp:9000", addr: "10.9.8.7:9000"},
		{name: "allowed network, v4-mapped", opts: Options{Allow: allow10}, target: "minio.corp:9000", addr: "[::ffff:10.9.8.7]:9000"},
		{name: "outside the allowed network", opts: Options{Allow: allow10}, target: "192.168.1.1:80", addr: "192.168.1.1:80", wantErr: ReasonPrivate},
		{name: "own listener on loopback, although allowed", opts: Options{Allow: allowLoop, Self: anySelf}, target: "127.0.0.1:3128", addr: "127.0.0.1:3128", wantErr: ReasonSelf},
		{name: "own listener on ::1, although allowed", opts: Options{Allow: allowLoop, Self: anySelf}, target: "[::1]:3128", addr: "[::1]:3128", wantErr: ReasonSelf},
		{name: "own listener, although the endpoint", opts: Options{Endpoint: "127.0.0.1:3128", Self: anySelf}, target: "127.0.0.1:3128", addr: "127.0.0.1:3128", wantErr: ReasonSelf},
		{name: "own listener on an interface address", opts: Options{Allow: allow10, Self: anySelf}, target: "proxy.corp:3128", addr: "10.1.1.1:3128", wantErr: ReasonSelf},
		{name: "own listener on a public interface address", opts: Options{Self: anySelf}, target: "proxy.example:3128", addr: "192.0.2.10:3128", wantErr: ReasonSelf},
		{name: "own listener at 0.0.0.0", opts: Options{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Self: anySelf}, target: "0.0.0.0:3128", addr: "0.0.0.0:3128", wantErr: ReasonSelf},
		{name: "another host at the listener's port", opts: Options{Allow: allow10, Self: anySelf}, target: "other.corp:3128", addr: "10.2.2.2:3128"},
		{name: "the listener's address at another port", opts: Options{Allow: allowLoop, Self: anySelf}, target: "127.0.0.1:3129", addr: "127.0.0.1:3129"},
		{name: "own specific listener", opts: Options{Allow: allowLoop, Self: selfOn(nil, "127.0.0.1:40000")}, target: "localhost:40000", addr: "127.0.0.1:40000", wantErr: ReasonSelf},
		{name: "specific listener, other loopback address", opts: Options{Allow: allowLoop, Self: selfOn(nil, "127.0.0.1:40000")}, target: "127.0.0.2:40000", addr: "127.0.0.2:40000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := New(tt.opts).Check(t.Context(), tt.target, netip.MustParseAddrPort(tt.addr))
			checkRefusal(t, err, tt.wantErr)
		})
	}
}

func checkRefusal(t *testing.T, err error, reason string) {
	t.Helper()
	var re *RefusedError
	switch {
	case reason == "" && err != nil:
		t.Fatalf("refused: %v", err)
	case reason == "":
	case !errors.As(err, &re) || !errors.Is(err, ErrForbidden):
		t.Fatalf("err = %v, want a refusal (%s)", err, reason)
	case re.Reason != reason:
		t.Fatalf("refused as %q (%v), want %q", re.Reason, err, reason)
	}
}

// TestGuardTrust: a forward proxy the operator named (HTTPS_PROXY) is
// reached on a private address, but never when it is the process itself.
func TestGuardTrust(t *testing.T) {
	t.Parallel()
	g := New(Options{Self: selfOn(nil, "127.0.0.1:3128")})
	g.Trust("Corp-Proxy.:3128")
	g.Trust("localhost:3128")
	checkRefusal(t, g.Check(t.Context(), "corp-proxy:3128", netip.MustParseAddrPort("10.0.0.5:3128")), "")
	checkRefusal(t, g.Check(t.Context(), "other:3128", netip.MustParseAddrPort("10.0.0.5:3128")), ReasonPrivate)
	checkRefusal(t, g.Check(t.Context(), "localhost:3128", netip.MustParseAddrPort("127.0.0.1:3128")), ReasonSelf)
}

// TestGuardCheckTarget: what another proxy will dial is judged by its
// spelling: IPs in every form, localhost and metadata names.
func TestGuardCheckTarget(t *testing.T) {
	t.Parallel()
	g := New(Options{Endpoint: "[::1]:5000", Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	for target, reason := range map[string]string{
		"127.1:80":                      ReasonLoopback,
		"0x7f.1:80":                     ReasonLoopback,
		"[::ffff:127.0.0.1]:80":         ReasonLoopback,
		"localhost:8080":                ReasonLoopback,
		"api.localhost:8080":            ReasonLoopback,
		"metadata.google.internal:80":   ReasonMetadata,
		"192.168.0.1:443":               ReasonPrivate,
		"100.64.0.1:443":                ReasonShared,
		"[fd00::1]:443":                 ReasonUniqueLocal,
		"[::1]:5000":                    "",
		"10.1.2.3:9000":                 "",
		"registry.example.com:443":      "",
		"storage.googleapis.com:443":    "",
		"93.184.216.34:443":             "",
		"[2606:4700:4700::1111]:443":    "",
		"no-port":                       "not host:port",
		"169.254.169.254:80":            ReasonMetadata,
		"instance-data.ec2.internal:80": ReasonMetadata,
	} {
		checkRefusal(t, g.CheckTarget(t.Context(), target), reason)
	}
}

// TestGuardDial: connections are judged at connect time, after
// resolution. A loopback server at another port than the endpoint's
// never sees a connection; the endpoint's does.
func TestGuardDial(t *testing.T) {
	t.Parallel()
	endpoint, _ := countingListener(t)
	other, otherConns := countingListener(t)
	dial := New(Options{Endpoint: endpoint}).DialContext(&net.Dialer{})
	c, err := dial(t.Context(), "tcp", endpoint)
	if err != nil {
		t.Fatalf("dialling the endpoint: %v", err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("reading the endpoint's greeting: %q %v", b, err)
	}
	c.Close()
	_, port, _ := net.SplitHostPort(other)
	for _, target := range []string{other, "localhost:" + port} {
		if c, err := dial(t.Context(), "tcp", target); err == nil {
			c.Close()
			t.Fatalf("dialling %s (another loopback port) succeeded", target)
		} else if !errors.Is(err, ErrForbidden) {
			t.Fatalf("dialling %s: %v, want a refusal", target, err)
		}
	}
	// A refused connection is never attempted: nothing can be in flight.
	if n := otherConns.Load(); n != 0 {
		t.Fatalf("the other loopback server accepted %d connections, want 0", n)
	}
}

// countingListener listens on a loopback port, greeting ("x") and
// counting every connection it accepts.
func countingListener(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			_, _ = c.Write([]byte("x"))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), &n
}

// TestSelfOnEveryAddress: a real listener on the unspecified address
// covers loopback and every address of the host's interfaces at its port,
// and nothing at another port.
func TestSelfOnEveryAddress(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var self Self
	self.Add(ln.Addr())
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	addrs, err := interfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range append(addrs, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.53"), netip.MustParseAddr("::ffff:127.0.0.1")) {
		if !self.Has(a, port) {
			t.Errorf("%s at the listener's port %d is not taken as the listener", a, port)
		}
		if self.Has(a, port+1) {
			t.Errorf("%s at port %d is taken as the listener at %d", a, port+1, port)
		}
	}
	if self.Has(netip.MustParseAddr("192.0.2.77"), port) {
		t.Error("an address of no interface is taken as the listener")
	}
	var none *Self
	if none.Has(netip.MustParseAddr("127.0.0.1"), port) {
		t.Error("a nil Self holds an address")
	}
}
