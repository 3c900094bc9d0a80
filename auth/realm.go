package auth

import (
	"net"
	"net/netip"
	"net/url"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// RealmAllowed returns the default policy for Bearer token realms of one
// registry, which receive the registry's credentials. A realm is allowed
// when its host and port are the registry's or the endpoint's (a port
// left out is the scheme's default), when its host shares their
// registrable domain (auth.docker.io for registry-1.docker.io, gitlab.com
// for registry.gitlab.com), or when it is listed in extra (host: any
// port; host:port: that port). Registrable domains come from the public
// suffix list, private section included: tenants of a shared suffix
// (a.github.io and b.github.io, two *.herokuapp.com apps, two storage
// accounts under blob.core.windows.net) are strangers to each other.
// Hosts without a registrable domain — IP literals and single-label names
// such as localhost — are compared with their port, never alone: the
// endpoint's IP at another port is another service. Only http and https
// realms pass; Transport further requires https unless the registry
// itself is plain http.
//
// registryHost is the registry's name (host[:port]); endpointHost is
// where requests go, as host[:port] (https assumed) or
// scheme://host[:port].
func RealmAllowed(registryHost, endpointHost string, extra []string) func(*url.URL) bool {
	reg, regPort := hostAndPort(registryHost)
	ep, epPort := hostAndPort(endpointHost)
	exact := map[string]bool{net.JoinHostPort(reg, regPort): true, net.JoinHostPort(ep, epPort): true}
	domains := map[string]bool{}
	for _, h := range []string{reg, ep} {
		if d := registrableDomain(h); d != "" {
			domains[d] = true
		}
	}
	extras := map[string]string{} // host → port, "" for any
	for _, e := range extra {
		if h, p := hostAndExplicitPort(e); h != "" {
			if old, seen := extras[h]; !seen || (old != "" && p == "") {
				extras[h] = p
			}
		}
	}
	return func(u *url.URL) bool {
		if u == nil || (u.Scheme != "https" && u.Scheme != "http") {
			return false
		}
		h, p := hostOnly(u.Host), urlPort(u)
		if h == "" {
			return false
		}
		if ep, listed := extras[h]; listed && (ep == "" || ep == p) {
			return true
		}
		if exact[net.JoinHostPort(h, p)] {
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
	s = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), ".")
	if a, err := netip.ParseAddr(s); err == nil {
		s = a.Unmap().WithZone("").String() // one spelling per address
	}
	return s, port
}

// hostAndExplicitPort is hostAndPort with the port as written: "" when
// s names none.
func hostAndExplicitPort(s string) (host, port string) {
	host, port = hostAndPort(s)
	rest := strings.ToLower(strings.TrimSpace(s))
	if _, after, ok := strings.Cut(rest, "://"); ok {
		rest = after
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	if _, _, err := net.SplitHostPort(rest); err != nil {
		port = ""
	}
	return host, port
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
// names, numeric forms and public suffixes themselves have none.
func registrableDomain(h string) string {
	if h == "" || net.ParseIP(h) != nil || !strings.Contains(h, ".") {
		return ""
	}
	// No top-level domain starts with a digit: 127.1, 0x7f.1 and
	// 2130706433.0 are addresses in a resolver's eyes, not names.
	if last := h[strings.LastIndexByte(h, '.')+1:]; last == "" || (last[0] >= '0' && last[0] <= '9') {
		return ""
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(h)
	if err != nil {
		return ""
	}
	return d
}
