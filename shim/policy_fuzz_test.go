package shim

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// FuzzDecidePolicy: under any tunnel policy (extra open ports, loopback
// opened by allowNetworks), a CONNECT target is tunnelled only to an open
// port and never to an IP literal the policy's address rule refuses nor
// to a local or metadata name unless loopback is open; it is intercepted
// only as a registry the policy names. FuzzDecide checks the target's one
// spelling under the default policy.
func FuzzDecidePolicy(f *testing.F) {
	for _, seed := range []struct {
		target   string
		loopback bool
		port     uint16
	}{
		{"registry-1.docker.io:443", false, 0}, {"quay.io:0443", false, 0}, {"github.com:22", false, 22}, {"github.com:22", false, 0},
		{"127.0.0.1:7000", true, 7000}, {"127.0.0.1:7000", false, 7000}, {"[::1]:443", true, 0}, {"[::ffff:127.0.0.1]:443", true, 0},
		{"[::ffff:169.254.169.254]:443", true, 0}, {"169.254.169.254:80", true, 80}, {"[fd00:ec2::254]:443", false, 0},
		{"LOCALHOST.:443", false, 0}, {"x.localhost:443", true, 0}, {"metadata.google.internal.:443", true, 0}, {"0.0.0.0:443", true, 0},
		{"203.0.113.10:443", false, 0}, {"2130706433:443", false, 0}, {"github.com", false, 0}, {"a b:443", false, 0},
	} {
		f.Add(seed.target, seed.loopback, seed.port)
	}
	registries := []string{"docker.io", "auth.docker.io", "quay.io", "registry.test:25443"}
	f.Fuzz(func(t *testing.T, target string, loopback bool, extraPort uint16) {
		p := Policy{
			Intercepted: func(h string) bool { return slices.Contains(registries, h) },
			ByAddress: func(ap netip.AddrPort) []string {
				if ap.String() == "203.0.113.10:443" {
					return []string{"quay.io"}
				}
				return nil
			},
			AllowPorts: []int{443},
		}
		if extraPort != 0 {
			p.AllowPorts = append(p.AllowPorts, int(extraPort))
		}
		if loopback {
			p.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
		}
		v, err := Decide(target, p)
		if err != nil {
			if !errors.Is(err, ErrBadTarget) {
				t.Fatalf("Decide(%q): %v", target, err)
			}
			return
		}
		switch v.Decision {
		case Intercept:
			if !slices.Contains(registries, v.Registry) {
				t.Fatalf("Decide(%q) intercepts as %q, which the policy does not name", target, v.Registry)
			}
		case Tunnel:
			switch {
			case !slices.Contains(p.AllowPorts, v.Target.Port):
				t.Fatalf("Decide(%q) tunnels to port %d, open %v", target, v.Target.Port, p.AllowPorts)
			case v.Target.Addr.IsValid() && !Allowed(v.Target.Addr, p.AllowNetworks):
				t.Fatalf("Decide(%q) tunnels to %s", target, v.Target.Addr)
			case !v.Target.Addr.IsValid() && deniedName(v.Target.Host) && !p.allowsAll():
				t.Fatalf("Decide(%q) tunnels to the local or metadata name %q", target, v.Target.Host)
			}
		}
	})
}
