package logx

import (
	"net/url"
	"strings"
)

// Redacted replaces the value of every query parameter that RedactURI
// does not keep.
const Redacted = "REDACTED"

// keptParams are the query parameters whose values RedactURI keeps: the
// registry API's own, which name content and never authorize anything.
// ns, n, last and artifactType are read by the mirror (upstream selection,
// tag list pagination, referrers filter); service and scope are the Bearer
// token request's, which the shim forwards to token realms; digest, mount
// and from are the distribution spec's push parameters, which the shim
// passes through. Everything else may be a credential: presigned storage
// URLs (X-Amz-Signature, X-Goog-Signature, sig), tokens (token,
// access_token), upload state (_state), OAuth codes, passwords.
var keptParams = map[string]bool{
	"ns":           true,
	"n":            true,
	"last":         true,
	"artifactType": true,
	"service":      true,
	"scope":        true,
	"digest":       true,
	"mount":        true,
	"from":         true,
}

// RedactURI returns u's request URI (path and query, as in an HTTP
// request line) fit for a log line: the value of every query parameter
// outside a small allowlist (ns, n, last, artifactType, service, scope,
// digest, mount, from) is replaced by Redacted. Parameter names, their
// order and the allowed values stay as the client wrote them, so the line
// still shows what was asked. The access line's path is RedactURI's; use
// it wherever a URL a client or upstream sent goes into a log line.
func RedactURI(u *url.URL) string {
	if u == nil {
		return ""
	}
	if u.RawQuery == "" {
		return u.RequestURI()
	}
	c := *u
	c.RawQuery = redactQuery(u.RawQuery)
	return c.RequestURI()
}

// redactQuery redacts a raw query pair by pair. It splits on ';' as well
// as '&': net/url no longer does, but a server behind the proxy might, and
// "n=1;token=x" must not pass as the harmless n.
func redactQuery(raw string) string {
	var b strings.Builder
	b.Grow(len(raw))
	for raw != "" {
		pair, sep, rest := raw, "", ""
		if i := strings.IndexAny(raw, "&;"); i >= 0 {
			pair, sep, rest = raw[:i], raw[i:i+1], raw[i+1:]
		}
		b.WriteString(redactPair(pair))
		b.WriteString(sep)
		raw = rest
	}
	return b.String()
}

// redactPair keeps "name=value" when name is allowed, and a pair without
// a value ("name", "name="); otherwise it keeps the name and replaces the
// value.
func redactPair(pair string) string {
	rawName, value, _ := strings.Cut(pair, "=")
	if value == "" {
		return pair
	}
	if name, err := url.QueryUnescape(rawName); err == nil && keptParams[name] {
		return pair
	}
	return rawName + "=" + Redacted
}
