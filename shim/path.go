package shim

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// checkPath refuses an intercepted request whose path is not in the form
// registry clients send: origin-form ("/…"), no empty segment except a
// trailing one ("/v2/"), no "." or ".." segment, no backslash or control
// character, and no percent-encoded '/', '\' or '%' (the one encoding
// after which the path names something else than it seems to). The shim
// routes on the path as written, while the registry behind it (or a
// server in front of that) may clean or decode it first: "//v2/…",
// "/x/../v2/…" or "/%2e/v2/…" looked like non-API paths and were passed
// through for any method, pushes off or not. Clients never send such
// paths, so they are refused, not cleaned: 400 UNSUPPORTED, and nothing
// reaches the mirror or the registry.
func checkPath(u *url.URL) error {
	p := u.Path
	if !strings.HasPrefix(p, "/") {
		return badPath(u, "not origin-form")
	}
	if strings.ContainsFunc(p, func(c rune) bool { return c < 0x20 || c == 0x7f || c == '\\' || c == '%' }) {
		return badPath(u, "control character, backslash or encoded '%'")
	}
	segs := strings.Split(p[1:], "/")
	for i, seg := range segs {
		switch {
		case seg == "" && i < len(segs)-1:
			return badPath(u, "empty segment")
		case seg == "." || seg == "..":
			return badPath(u, "dot segment")
		}
	}
	raw := strings.ToLower(u.RawPath)
	for _, enc := range []string{"%2f", "%5c"} {
		if strings.Contains(raw, enc) {
			return badPath(u, "encoded '/' or '\\'")
		}
	}
	return nil
}

func badPath(u *url.URL, what string) error {
	return oci.Errorf(http.StatusBadRequest, oci.CodeUnsupported,
		"request path %q refused (%s): registry clients send canonical paths", u.EscapedPath(), what)
}
