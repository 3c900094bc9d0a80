package auth

import (
	"net"
	"net/url"
	"testing"
)

// FuzzRealmAllowed: whatever realm an upstream's challenge names (no
// extra hosts configured here), only http and https realms pass, and a
// realm whose host has no registrable domain — an IP literal, a numeric
// spelling, a single-label name such as localhost — is allowed only at
// the registry's or the endpoint's own host and port, never by host (or
// IP) alone.
func FuzzRealmAllowed(f *testing.F) {
	for _, seed := range []struct{ registry, endpoint, realm string }{
		{"registry-1.docker.io", "https://registry-1.docker.io", "https://auth.docker.io/token"},
		{"registry.gitlab.com", "https://registry.gitlab.com", "https://gitlab.com/jwt/auth"},
		{"a.github.io", "https://a.github.io", "https://b.github.io/token"},
		{"10.0.0.1:5000", "https://10.0.0.1:5000", "https://10.0.0.1:5001/token"},
		{"[::1]:5000", "https://[::1]:5000", "https://[::1]:5000/token"},
		{"reg.test", "http://reg.test", "ftp://reg.test/token"},
		{"reg.test.", "https://REG.test", "https://reg.test.:443/x"},
		{"localhost:5000", "http://localhost:5000", "http://localhost:6000/token"},
		{"localhost:5000", "http://localhost:5000", "http://localhost:5000/token"},
		{"registry.test:5000", "http://127.0.0.1:5000", "http://127.0.0.1:22/token"},
		{"registry.test:5000", "http://127.0.0.1:5000", "http://[::ffff:127.0.0.1]:5000/token"},
		{"registry.test:5000", "http://127.0.0.1:5000", "http://127.1:5000/token"},
		{"registry.test:5000", "http://127.0.0.1:5000", "http://0x7f.1:5000/token"},
		{"registry.test", "http://10.0.0.1", "http://10.0.0.1:80/token"},
		{"registry.test", "http://10.0.0.1", "https://10.0.0.1/token"},
		{"myreg", "https://myreg", "https://myreg:8443/token"},
		{"10.1", "http://10.1", "http://20.10.1/token"},
		{"[fd00::1]:5000", "https://[fd00::1]:5000", "https://[fd00::1%25eth0]:5000/token"},
	} {
		f.Add(seed.registry, seed.endpoint, seed.realm)
	}
	f.Fuzz(func(t *testing.T, registry, endpoint, realm string) {
		u, err := url.Parse(realm)
		if err != nil {
			return
		}
		allowed := RealmAllowed(registry, endpoint, nil)(u)
		if !allowed {
			return
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("realm %q with scheme %q allowed", realm, u.Scheme)
		}
		h, p := hostOnly(u.Host), urlPort(u)
		if registrableDomain(h) != "" {
			return
		}
		reg, regPort := hostAndPort(registry)
		ep, epPort := hostAndPort(endpoint)
		if (h != reg || p != regPort) && (h != ep || p != epPort) {
			t.Fatalf("realm %q (host %q port %s, no registrable domain) allowed for registry %q at endpoint %q", realm, h, p, registry, endpoint)
		}
		// An IP realm allowed as the endpoint's (not as the registry's
		// own host and port) is the endpoint's IP at its port.
		if ip := net.ParseIP(h); ip != nil && h == ep && (h != reg || p != regPort) {
			if epIP := net.ParseIP(ep); epIP == nil || !epIP.Equal(ip) || p != epPort {
				t.Fatalf("realm %q on an IP allowed for endpoint %q", realm, endpoint)
			}
		}
	})
}
