package auth

import (
	"net"
	"net/url"
	"testing"
)

// FuzzRealmAllowed: whatever realm an upstream's challenge names, a realm
// on an IP literal is allowed only on the endpoint's own IP and port (no
// extra hosts configured here), and only http and https realms pass.
func FuzzRealmAllowed(f *testing.F) {
	for _, seed := range []struct{ registry, endpoint, realm string }{
		{"registry-1.docker.io", "https://registry-1.docker.io", "https://auth.docker.io/token"},
		{"registry.gitlab.com", "https://registry.gitlab.com", "https://gitlab.com/jwt/auth"},
		{"a.github.io", "https://a.github.io", "https://b.github.io/token"},
		{"10.0.0.1:5000", "https://10.0.0.1:5000", "https://10.0.0.1:5001/token"},
		{"[::1]:5000", "https://[::1]:5000", "https://[::1]:5000/token"},
		{"reg.test", "http://reg.test", "ftp://reg.test/token"},
		{"reg.test.", "https://REG.test", "https://reg.test.:443/x"},
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
		if ip := net.ParseIP(u.Hostname()); ip != nil {
			ep, port := hostAndPort(endpoint)
			if epIP := net.ParseIP(ep); epIP == nil || !epIP.Equal(ip) || urlPort(u) != port {
				t.Fatalf("realm %q on an IP allowed for endpoint %q", realm, endpoint)
			}
		}
	})
}
