package auth

import (
	"net"
	"net/url"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// RealmAllowed returns the default policy for Bearer token realms of one
// registry, which receive the registry's credentials. A realm is allowed
// when its host (port ignored) equals the registry host or the endpoint
// host, shares their registrable domain (auth.docker.io for
// registry-1.docker.io, gitlab.com for registry.gitlab.com), or is listed
// in extra (hosts, ports ignored). Registrable domains come from the
// public suffix list, private section included: tenants of a shared
// suffix (a.github.io and b.github.io, two *.herokuapp.com apps, two
// storage accounts under blob.core.windows.net) are strangers to each
// other. A realm that is an IP literal is allowed only when it is the
// endpoint's own IP and port (a port left out is the scheme's default) or
// its IP is listed in extra. Only http and https realms pass; Transport
// further requires https unless the registry itself is plain http.
//
// registryHost is the registry's name (host[:port]); endpointHost is
// where requests go, as host[:port] (https assumed) or
// scheme://host[:port].
func RealmAllowed(registryHost, endpointHost string, extra []string) func(*url.URL) bool {
	reg := hostOnly(registryHost)
	ep, epPort := hostAndPort(endpointHost)
	epIP := net.ParseIP(ep)
	domains := map[string]bool{}
	for _, h := range []string{reg, ep} {
		if d := registrableDomain(h); d != "" {
			domains[d] = true
		}
	}
	extras := map[string]bool{}
	for _, e := range extra {
		if h := hostOnly(e); h != "" {
			extras[h] = true
		}
	}
	return func(u *url.URL) bool {
		if u == nil || (u.Scheme != "https" && u.Scheme != "http") {
			return false
		}
		h := hostOnly(u.Host)
		switch {
		case h == "":
			return false
		case extras[h]:
			return true
		case net.ParseIP(h) != nil:
			return epIP != nil && epIP.Equal(net.ParseIP(h)) && urlPort(u) == epPort
		case h == reg || h == ep:
			return true
		}
		d := registrableDomain(h)
		return d != "" && domains[d]
	}
}

// hostOnly lower-cases a host, dropping a scheme, path, port, IPv6
// brackets and a trailing dot.
func hostOnly(s string) string {
	h, _ := hostAndPort(s)
	return h
}

// hostAndPort splits host[:port] or scheme://host[:port][/path] into the
// lower-case host (without IPv6 brackets or a trailing dot) and the port;
// a port left out is the scheme's default, https's when there is no
// scheme.
func hostAndPort(s string) (host, port string) {
	s = strings.ToLower(strings.TrimSpace(s))
	scheme := "https"
	if sch, rest, ok := strings.Cut(s, "://"); ok {
		scheme, s = sch, rest
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		s, port = h, p
	}
	if port == "" {
		port = defaultPort(scheme)
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	return strings.TrimSuffix(s, "."), port
}

// urlPort is u's port, or its scheme's default.
func urlPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	return defaultPort(strings.ToLower(u.Scheme))
}

// defaultPort is the port of an http or https URL that names none.
func defaultPort(scheme string) string {
	if scheme == "http" {
		return "80"
	}
	return "443"
}

// registrableDomain is the registrable domain of a DNS name by the public
// suffix list (eTLD+1): gitlab.com for registry.gitlab.com, foo.co.uk for
// reg.foo.co.uk, a.github.io for a.github.io. IP literals, single-label
// names and public suffixes themselves have none.
func registrableDomain(h string) string {
	if h == "" || net.ParseIP(h) != nil || !strings.Contains(h, ".") {
		return ""
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(h)
	if err != nil {
		return ""
	}
	return d
}
