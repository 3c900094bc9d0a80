package shim

import (
	"errors"
	"net/netip"
	"testing"
)

// FuzzDecide: whatever CONNECT target a client sends, Decide refuses it
// as a bad target or returns a target in one spelling (it parses back to
// itself) with a port of 1 to 65535; it never tunnels to an address that
// Allowed refuses nor to a port that is not open, and an interception
// names a registry.
func FuzzDecide(f *testing.F) {
	for _, s := range []string{
		"quay.io:443", "quay.io:0443", "QUAY.IO.:443", "203.0.113.10:443", "[::ffff:203.0.113.10]:443",
		"127.1:443", "0x7f000001:443", "[::1]:443", "[fe80::1%eth0]:443", "169.254.169.254:443",
		"metadata.google.internal.:443", "user@host:443", "host:65536", "host:", ":443", "", "[::]:443",
		"github.com:443", "a..b:443", "[2001:db8::10]:25443", "registry.test:025443",
	} {
		f.Add(s)
	}
	p := Policy{
		Intercepted: func(h string) bool { return h == "quay.io" || h == "registry.test:25443" },
		ByAddress: func(ap netip.AddrPort) []string {
			if ap.String() == "203.0.113.10:443" {
				return []string{"quay.io"}
			}
			return nil
		},
	}
	f.Fuzz(func(t *testing.T, target string) {
		v, err := Decide(target, p)
		if err != nil {
			if !errors.Is(err, ErrBadTarget) {
				t.Fatalf("Decide(%q): %v, not ErrBadTarget", target, err)
			}
			return
		}
		again, err := ParseTarget(v.Target.String(), 0)
		if err != nil || again != v.Target {
			t.Fatalf("Decide(%q): target %q parses back as %+v, %v", target, v.Target, again, err)
		}
		if v.Target.Port < 1 || v.Target.Port > 65535 {
			t.Fatalf("Decide(%q): port %d", target, v.Target.Port)
		}
		switch v.Decision {
		case Tunnel:
			if (v.Target.Addr.IsValid() && !Allowed(v.Target.Addr, nil)) || v.Target.Port != 443 {
				t.Fatalf("Decide(%q) tunnels to %s", target, v.Target)
			}
		case Intercept:
			if v.Registry == "" {
				t.Fatalf("Decide(%q) intercepts as no registry", target)
			}
		default:
			if v.Reason == "" {
				t.Fatalf("Decide(%q) denies without a reason", target)
			}
		}
	})
}
