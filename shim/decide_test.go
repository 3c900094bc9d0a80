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
	base := Policy{Intercepted: intercepted}
	loopbackEcho := Policy{Intercepted: intercepted, AllowPorts: []int{443, 7000}, AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	cases := []struct {
		name   string
		target string
		policy Policy
		want   Decision
		bad    bool
	}{
		{"docker hub api", "registry-1.docker.io:443", base, Intercept, false},
		{"docker hub index (crane)", "index.docker.io:443", base, Intercept, false},
		{"docker hub short", "docker.io:443", base, Intercept, false},
		{"docker hub auth", "auth.docker.io:443", base, Intercept, false},
		{"docker hub upper case", "Registry-1.Docker.IO:443", base, Intercept, false},
		{"configured", "quay.io:443", base, Intercept, false},
		{"configured with port", "registry.test:25443", base, Intercept, false},
		{"same host other port", "registry.test:443", base, Tunnel, false},
		{"docker hub off", "registry-1.docker.io:443", Policy{Intercepted: func(string) bool { return false }}, Tunnel, false},
		{"other host", "github.com:443", base, Tunnel, false},
		{"other port", "github.com:22", base, Deny, false},
		{"loopback v4", "127.0.0.1:443", base, Deny, false},
		{"loopback v4 other", "127.1.2.3:443", base, Deny, false},
		{"loopback v6", "[::1]:443", base, Deny, false},
		{"localhost", "localhost:443", base, Deny, false},
		{"sub localhost", "app.localhost:443", base, Deny, false},
		{"link-local", "169.254.10.1:443", base, Deny, false},
		{"metadata v4", "169.254.169.254:80", base, Deny, false},
		{"metadata v4 443", "169.254.169.254:443", base, Deny, false},
		{"metadata ecs", "169.254.170.2:443", base, Deny, false},
		{"metadata v6", "[fd00:ec2::254]:443", base, Deny, false},
		{"metadata alibaba", "100.100.100.200:443", base, Deny, false},
		{"metadata gcp name", "metadata.google.internal:443", base, Deny, false},
		{"link-local v6", "[fe80::1]:443", base, Deny, false},
		{"unspecified", "0.0.0.0:443", base, Deny, false},
		{"unspecified v6", "[::]:443", base, Deny, false},
		{"mapped loopback", "[::ffff:127.0.0.1]:443", base, Deny, false},
		{"public ip", "203.0.113.7:443", base, Tunnel, false},
		{"loopback allowed", "127.0.0.1:7000", loopbackEcho, Tunnel, false},
		{"loopback allowed wrong port", "127.0.0.1:7001", loopbackEcho, Deny, false},
		{"metadata still denied", "169.254.169.254:443", loopbackEcho, Deny, false},
		{"no port", "github.com", base, Deny, true},
		{"empty", "", base, Deny, true},
		{"port zero", "github.com:0", base, Deny, true},
		{"port too big", "github.com:70000", base, Deny, true},
		{"garbage host", "gith%ub.com:443", base, Deny, true},
		{"space", "a b:443", base, Deny, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, reason, err := Decide(tc.target, tc.policy)
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
		})
	}
}
