package shim

import (
	"errors"
	"net/netip"
	"testing"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	intercepted := func(h string) bool {
		switch h {
		case "docker.io", "auth.docker.io", "quay.io", "registry.test:25443":
			return true
		}
		return false
	}
	byAddress := func(ap netip.AddrPort) []string {
		switch ap.String() {
		case "203.0.113.10:443":
			return []string{"quay.io"}
		case "[2001:db8::10]:25443":
			return []string{"registry.test:25443"}
		case "203.0.113.20:443":
			return []string{"docker.io", "quay.io"}
		}
		return nil
	}
	base := Policy{Intercepted: intercepted, ByAddress: byAddress}
	loopbackEcho := Policy{Intercepted: intercepted, AllowPorts: []int{443, 7000}, AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	cases := []struct {
		name   string
		target string
		policy Policy
		want   Decision
		bad    bool
		// registry is the intercepted registry, for Intercept.
		registry string
	}{
		{"docker hub api", "registry-1.docker.io:443", base, Intercept, false, ""},
		{"docker hub index (crane)", "index.docker.io:443", base, Intercept, false, ""},
		{"docker hub short", "docker.io:443", base, Intercept, false, ""},
		{"docker hub auth", "auth.docker.io:443", base, Intercept, false, ""},
		{"docker hub upper case", "Registry-1.Docker.IO:443", base, Intercept, false, ""},
		{"configured", "quay.io:443", base, Intercept, false, ""},
		{"configured with port", "registry.test:25443", base, Intercept, false, ""},
		{"same host other port", "registry.test:443", base, Tunnel, false, ""},
		{"docker hub off", "registry-1.docker.io:443", Policy{Intercepted: func(string) bool { return false }}, Tunnel, false, ""},
		{"other host", "github.com:443", base, Tunnel, false, ""},
		{"other port", "github.com:22", base, Deny, false, ""},
		{"loopback v4", "127.0.0.1:443", base, Deny, false, ""},
		{"loopback v4 other", "127.1.2.3:443", base, Deny, false, ""},
		{"loopback v6", "[::1]:443", base, Deny, false, ""},
		{"localhost", "localhost:443", base, Deny, false, ""},
		{"sub localhost", "app.localhost:443", base, Deny, false, ""},
		{"link-local", "169.254.10.1:443", base, Deny, false, ""},
		{"metadata v4", "169.254.169.254:80", base, Deny, false, ""},
		{"metadata v4 443", "169.254.169.254:443", base, Deny, false, ""},
		{"metadata ecs", "169.254.170.2:443", base, Deny, false, ""},
		{"metadata v6", "[fd00:ec2::254]:443", base, Deny, false, ""},
		{"metadata alibaba", "100.100.100.200:443", base, Deny, false, ""},
		{"metadata gcp name", "metadata.google.internal:443", base, Deny, false, ""},
		{"link-local v6", "[fe80::1]:443", base, Deny, false, ""},
		{"unspecified", "0.0.0.0:443", base, Deny, false, ""},
		{"unspecified v6", "[::]:443", base, Deny, false, ""},
		{"mapped loopback", "[::ffff:127.0.0.1]:443", base, Deny, false, ""},
		{"public ip", "203.0.113.7:443", base, Tunnel, false, ""},
		{"loopback allowed", "127.0.0.1:7000", loopbackEcho, Tunnel, false, ""},
		{"loopback allowed wrong port", "127.0.0.1:7001", loopbackEcho, Deny, false, ""},
		{"metadata still denied", "169.254.169.254:443", loopbackEcho, Deny, false, ""},
		{"no port", "github.com", base, Deny, true, ""},
		{"empty", "", base, Deny, true, ""},
		{"port zero", "github.com:0", base, Deny, true, ""},
		{"port too big", "github.com:70000", base, Deny, true, ""},
		{"garbage host", "gith%ub.com:443", base, Deny, true, ""},
		{"space", "a b:443", base, Deny, true, ""},
		{"zero-padded port", "quay.io:0443", base, Intercept, false, "quay.io"},
		{"zero-padded other port", "registry.test:025443", base, Intercept, false, "registry.test:25443"},
		{"trailing dot", "quay.io.:443", base, Intercept, false, "quay.io"},
		{"docker hub trailing dot upper case", "REGISTRY-1.DOCKER.IO.:443", base, Intercept, false, "docker.io"},
		{"registry address", "203.0.113.10:443", base, Intercept, false, "quay.io"},
		{"registry address mapped", "[::ffff:203.0.113.10]:0443", base, Intercept, false, "quay.io"},
		{"registry v6 address", "[2001:DB8:0::10]:25443", base, Intercept, false, "registry.test:25443"},
		{"registry address other port", "203.0.113.10:8443", base, Deny, false, ""},
		{"shared registry address", "203.0.113.20:443", base, Deny, false, ""},
		{"mapped metadata", "[::ffff:169.254.169.254]:443", base, Deny, false, ""},
		{"metadata name trailing dot", "Metadata.Google.Internal.:443", base, Deny, false, ""},
		{"localhost trailing dot", "localhost.:443", base, Deny, false, ""},
		{"port too long", "quay.io:00000000000443", base, Deny, true, ""},
		{"signed port", "quay.io:+443", base, Deny, true, ""},
		{"port 65536", "quay.io:65536", base, Deny, true, ""},
		{"empty port", "quay.io:", base, Deny, true, ""},
		{"empty host", ":443", base, Deny, true, ""},
		{"short loopback", "127.1:443", base, Deny, true, ""},
		{"hex loopback", "0x7f000001:443", base, Deny, true, ""},
		{"octal loopback", "0177.0.0.1:443", base, Deny, true, ""},
		{"decimal loopback", "2130706433:443", base, Deny, true, ""},
		{"userinfo", "user@quay.io:443", base, Deny, true, ""},
		{"zone", "[fe80::1%eth0]:443", base, Deny, true, ""},
		{"two dots", "quay..io:443", base, Deny, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := Decide(tc.target, tc.policy)
			got, reason := v.Decision, v.Reason
			if tc.bad {
				if !errors.Is(err, ErrBadTarget) {
					t.Fatalf("Decide(%q) error = %v, want ErrBadTarget", tc.target, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decide(%q): %v", tc.target, err)
			}
			if got != tc.want {
				t.Fatalf("Decide(%q) = %v (%s), want %v", tc.target, got, reason, tc.want)
			}
			if got == Deny && reason == "" {
				t.Fatal("a denial must say why")
			}
			if tc.registry != "" && v.Registry != tc.registry {
				t.Fatalf("Decide(%q) intercepts as %q, want %q", tc.target, v.Registry, tc.registry)
			}
		})
	}
}
