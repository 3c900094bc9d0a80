package auth

import (
	"net"
	"net/url"
	"strings"
)

// RealmAllowed returns the default policy for Bearer token realms of one
// registry: a realm is allowed when its host (port ignored) equals the
// registry host or the endpoint host, shares their registrable domain
// (auth.docker.io for registry-1.docker.io, gitlab.com for
// registry.gitlab.com), or is listed in extra (hosts, ports ignored). A
// realm that is an IP literal is allowed only when it is the endpoint's own
// IP or listed in extra. Only http and https realms pass; Transport further
// requires https unless the registry itself is plain http.
func RealmAllowed(registryHost, endpointHost string, extra []string) func(*url.URL) bool {
	reg, ep := hostOnly(registryHost), hostOnly(endpointHost)
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
			return epIP != nil && epIP.Equal(net.ParseIP(h))
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
	s = strings.ToLower(strings.TrimSpace(s))
	if _, rest, ok := strings.Cut(s, "://"); ok {
		s = rest
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	return strings.TrimSuffix(s, ".")
}

// secondLevel lists second-level labels under two-letter country TLDs that
// act as public suffixes (co.uk, com.au, …), so that "last two labels"
// does not lump unrelated domains together.
var secondLevel = map[string]bool{"co": true, "com": true, "net": true, "org": true, "gov": true, "edu": true, "ac": true, "or": true, "ne": true, "go": true}

// registrableDomain approximates the registrable domain of a DNS name: its
// last two labels (three under co.uk-style suffixes). IP literals and
// single-label names have none.
func registrableDomain(h string) string {
	if h == "" || net.ParseIP(h) != nil {
		return ""
	}
	labels := strings.Split(h, ".")
	n := 2
	if len(labels) >= 3 && len(labels[len(labels)-1]) == 2 && secondLevel[labels[len(labels)-2]] {
		n = 3
	}
	if len(labels) < n {
		return ""
	}
	return strings.Join(labels[len(labels)-n:], ".")
}
