package shim

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzDecide: whatever a client writes as CONNECT target, the shim
// intercepts only a host its policy names, tunnels only to an allowed port
// and never to an IP literal the address policy refuses (loopback,
// link-local, metadata, …, in any spelling netip reads) or a local or
// metadata name, and refuses a target that is not host:port as a bad
// request.
func FuzzDecide(f *testing.F) {
	for _, seed := range []struct {
		target   string
		loopback bool
		port     uint16
	}{
		{"registry-1.docker.io:443", false, 0}, {"Registry-1.Docker.IO:443", false, 0}, {"quay.io:443", false, 0},
		{"registry.test:25443", false, 0}, {"github.com:22", false, 22}, {"127.0.0.1:443", false, 0}, {"127.0.0.1:7000", true, 7000},
		{"[::1]:443", false, 0}, {"[::ffff:127.0.0.1]:443", false, 0}, {"[::ffff:169.254.169.254]:443", true, 0},
		{"169.254.169.254:80", false, 80}, {"[fd00:ec2::254]:443", false, 0}, {"[fe80::1%25eth0]:443", false, 0},
		{"metadata.google.internal.:443", false, 0}, {"LOCALHOST:443", false, 0}, {"x.localhost.:443", false, 0},
		{"0.0.0.0:443", false, 0}, {"[::]:443", false, 0}, {"quay.io:0443", false, 0}, {"quay.io:+443", false, 0},
		{"github.com", false, 0}, {"", false, 0}, {":443", false, 0}, {"github.com:0", false, 0}, {"github.com:65536", false, 0},
		{"a b:443", false, 0}, {"[github.com]:443", false, 0}, {"2130706433:443", false, 0}, {"0x7f.1:443", false, 0},
	} {
		f.Add(seed.target, seed.loopback, seed.port)
	}
	intercepted := []string{"docker.io", "auth.docker.io", "quay.io", "registry.test:25443"}
	f.Fuzz(func(t *testing.T, target string, loopback bool, extraPort uint16) {
		var hit string
		p := Policy{
			Intercepted: func(h string) bool {
				if slices.Contains(intercepted, h) {
					hit = h
					return true
				}
				return false
			},
			AllowPorts: []int{443},
		}
		if extraPort != 0 {
			p.AllowPorts = append(p.AllowPorts, int(extraPort))
		}
		if loopback {
			p.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
		}
		dec, reason, err := Decide(target, p)
		if err != nil {
			if dec != Deny || !errors.Is(err, ErrBadTarget) {
				t.Fatalf("Decide(%q) = %v, %v", target, dec, err)
			}
			return
		}
		host, port, splitErr := net.SplitHostPort(target)
		if splitErr != nil {
			t.Fatalf("Decide(%q) = %v for no host:port", target, dec)
		}
		switch dec {
		case Intercept:
			if hit == "" {
				t.Fatalf("Decide(%q) intercepts a host the policy does not name", target)
			}
		case Tunnel:
			checkTunnel(t, target, host, port, p)
		default:
			if reason == "" || len(reason) > len(target)+100 {
				t.Fatalf("Decide(%q) denies with reason %q", target, reason)
			}
		}
	})
}

// checkTunnel asserts that a tunnel to host:port is one the policy allows.
func checkTunnel(t *testing.T, target, host, port string, p Policy) {
	t.Helper()
	n, err := strconv.Atoi(port)
	if err != nil || !slices.Contains(p.AllowPorts, n) {
		t.Fatalf("Decide(%q) tunnels to port %q, allowed %v", target, port, p.AllowPorts)
	}
	if addr, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if !Allowed(addr, p.AllowNetworks) {
			t.Fatalf("Decide(%q) tunnels to %s", target, addr)
		}
		return
	}
	if deniedName(host) && !p.allowsAll() {
		t.Fatalf("Decide(%q) tunnels to the local or metadata name %q", target, host)
	}
}
