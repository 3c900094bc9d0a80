package auth

import (
	"net/url"
	"testing"
)

func TestRealmAllowed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name               string
		registry, endpoint string
		extra              []string
		realm              string
		want               bool
	}{
		{"docker hub auth host", "docker.io", "registry-1.docker.io", nil, "https://auth.docker.io/token", true},
		{"same host", "quay.io", "quay.io", nil, "https://quay.io/v2/auth", true},
		{"ghcr same host", "ghcr.io", "ghcr.io", nil, "https://ghcr.io/token", true},
		{"gitlab parent domain", "registry.gitlab.com", "registry.gitlab.com", nil, "https://gitlab.com/jwt/auth", true},
		{"port ignored", "registry.test:25443", "registry.test:25443", nil, "https://registry.test:8443/token", true},
		{"sibling subdomain", "registry.example.com", "registry.example.com", nil, "https://auth.example.com/token", true},
		{"foreign domain", "quay.io", "quay.io", nil, "https://evil.example/token", false},
		{"suffix trick", "example.com", "example.com", nil, "https://notexample.com/token", false},
		{"co.uk not lumped", "reg.foo.co.uk", "reg.foo.co.uk", nil, "https://auth.bar.co.uk/token", false},
		{"co.uk same", "reg.foo.co.uk", "reg.foo.co.uk", nil, "https://auth.foo.co.uk/token", true},
		{"extra host", "gitlab.example.com", "registry.example.org", []string{"auth.other.net"}, "https://auth.other.net/jwt", true},
		{"extra with port and scheme", "a.test", "a.test", []string{"https://Auth.Other.Net:8443"}, "https://auth.other.net:8443/jwt", true},
		{"extra with port, other port", "a.test", "a.test", []string{"https://Auth.Other.Net:8443"}, "https://auth.other.net/jwt", false},
		{"extra with and without port", "a.test", "a.test", []string{"auth.other.net:8443", "auth.other.net"}, "https://auth.other.net:9999/jwt", true},
		{"extra single label with port", "a.test", "a.test", []string{"localhost:7000"}, "http://localhost:7001/jwt", false},
		{"endpoint differs from registry", "myreg", "mirror.corp.example:5000", nil, "https://auth.corp.example/token", true},
		{"ip and port of the endpoint", "registry.test:25443", "127.0.0.1:25443", nil, "http://127.0.0.1:25443/token", true},
		{"ip of the endpoint, other port", "registry.test:25443", "127.0.0.1:25443", nil, "http://127.0.0.1:9999/token", false},
		{"ip of the endpoint, default port", "registry.test", "https://10.0.0.1", nil, "https://10.0.0.1/token", true},
		{"ip of the endpoint, default port spelled out", "registry.test", "10.0.0.1", nil, "https://10.0.0.1:443/token", true},
		{"ip of an http endpoint, other scheme's port", "registry.test", "http://10.0.0.1", nil, "https://10.0.0.1/token", false},
		{"ip of an http endpoint", "registry.test", "http://10.0.0.1", nil, "http://10.0.0.1/token", true},
		{"ip listed in extra, any port", "registry.test", "10.0.0.1:5000", []string{"10.0.0.1"}, "https://10.0.0.1:6000/token", true},
		{"ip differs from endpoint", "registry.test:25443", "127.0.0.1:25443", nil, "https://127.0.0.2/token", false},
		{"ip realm for dns endpoint", "registry.test", "registry.test", nil, "https://10.0.0.1/token", false},
		{"metadata ip", "registry.test", "registry.test", nil, "http://169.254.169.254/latest", false},
		{"ipv6 equal", "r.test", "[::1]:5000", nil, "https://[::1]:5000/t", true},
		{"ipv6 other port", "r.test", "[::1]:5000", nil, "https://[::1]:6000/t", false},
		{"single label, same port", "localhost:5000", "localhost:5000", nil, "https://localhost:5000/t", true},
		{"single label, other port", "localhost:5000", "localhost:5000", nil, "https://localhost:6000/t", false},
		{"single label endpoint, other port", "registry.test:5000", "http://localhost:5000", nil, "http://localhost:6000/t", false},
		{"single label endpoint, default port", "myreg", "http://myreg", nil, "http://myreg/t", true},
		{"single label registry, default port", "myreg", "http://myreg", nil, "https://myreg/t", true},
		{"single label registry, other port", "myreg", "http://myreg", nil, "https://myreg:8443/t", false},
		{"ip endpoint, realm v4-mapped", "registry.test", "http://127.0.0.1:5000", nil, "http://[::ffff:127.0.0.1]:5000/t", true},
		{"ip endpoint, realm v4-mapped other port", "registry.test", "http://127.0.0.1:5000", nil, "http://[::ffff:127.0.0.1]:6000/t", false},
		{"ip registry, other port", "127.0.0.1:5000", "https://127.0.0.1:5000", nil, "https://127.0.0.1:5001/t", false},
		{"numeric spelling of the endpoint ip", "registry.test", "http://127.0.0.1:5000", nil, "http://127.1:6000/t", false},
		{"numeric spelling is no domain", "10.1", "http://10.1", nil, "http://20.10.1/t", false},
		{"single label other", "localhost:5000", "localhost:5000", nil, "https://otherhost/t", false},
		{"bad scheme", "quay.io", "quay.io", nil, "ftp://quay.io/t", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.realm)
			if err != nil {
				t.Fatal(err)
			}
			if got := RealmAllowed(tt.registry, tt.endpoint, tt.extra)(u); got != tt.want {
				t.Fatalf("RealmAllowed(%q, %q, %q)(%s) = %v, want %v", tt.registry, tt.endpoint, tt.extra, tt.realm, got, tt.want)
			}
		})
	}
}

// TestRealmAllowedSharedSuffixes: tenants of a public suffix of the list's
// private section (github.io, herokuapp.com, cloudfront.net, appspot.com,
// blob.core.windows.net, s3.amazonaws.com) are different sites: one
// tenant's registry never sends its credentials to another tenant's
// realm. Registries on an ordinary domain still reach their realm on a
// sibling host.
func TestRealmAllowedSharedSuffixes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		registry, realm string
		want            bool
	}{
		{"github pages tenants", "a.github.io", "https://b.github.io/token", false},
		{"github pages suffix itself", "a.github.io", "https://github.io/token", false},
		{"github pages own host", "a.github.io", "https://a.github.io/token", true},
		{"github pages own subdomain", "registry.a.github.io", "https://auth.a.github.io/token", true},
		{"heroku apps", "registry.herokuapp.com", "https://evil.herokuapp.com/token", false},
		{"cloudfront distributions", "d111.cloudfront.net", "https://d222.cloudfront.net/token", false},
		{"app engine apps", "reg.appspot.com", "https://other.appspot.com/token", false},
		{"azure storage accounts", "mine.blob.core.windows.net", "https://theirs.blob.core.windows.net/token", false},
		{"s3 buckets", "mine.s3.amazonaws.com", "https://theirs.s3.amazonaws.com/token", false},
		{"gitlab", "registry.gitlab.com", "https://gitlab.com/jwt/auth", true},
		{"docker hub", "registry-1.docker.io", "https://auth.docker.io/token", true},
		{"docker hub by its canonical name", "docker.io", "https://auth.docker.io/token", true},
		{"icann suffix", "reg.foo.co.uk", "https://auth.bar.co.uk/token", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, err := url.Parse(tt.realm)
			if err != nil {
				t.Fatal(err)
			}
			if got := RealmAllowed(tt.registry, tt.registry, nil)(u); got != tt.want {
				t.Fatalf("RealmAllowed(%q)(%s) = %v, want %v", tt.registry, tt.realm, got, tt.want)
			}
		})
	}
}
