package auth

import (
	"strings"
	"testing"
)

// FuzzParseChallenges: whatever WWW-Authenticate headers an upstream
// sends, parsing stays within its bounds (16 challenges of 32 parameters,
// no more bytes of values than of input), yields lower-case token schemes
// and parameter names, and the challenges written back as a header parse
// to the same challenges.
func FuzzParseChallenges(f *testing.F) {
	for _, seed := range []struct{ a, b string }{
		{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`, ""},
		{`Basic realm="Registry Realm"`, `Bearer realm="https://ghcr.io/token"`},
		{`Negotiate abc==, Basic realm=x`, ""},
		{`Bearer realm="a\"b\\c", error="invalid_token"`, ""},
		{`Bearer realm="unterminated`, ""},
		{`, ,Basic,,Bearer realm=x,,`, ""},
		{`=x, realm="no scheme"`, ""},
		{`Bearer REALM=x, Realm=y`, ""},
		{"Bearer realm=\"\x00\r\n\"", ""},
		{`Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"`, ""},
		{strings.Repeat("Basic, ", 40), ""},
		{"Bearer " + strings.Repeat("a=b, ", 40), ""},
		{`Bearer a/b+c~d==`, "Bearer x="},
	} {
		f.Add(seed.a, seed.b)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		values := []string{a, b}
		cs := ParseChallenges(values)
		if len(cs) > maxChallenges {
			t.Fatalf("%d challenges", len(cs))
		}
		valueBytes := 0
		for _, c := range cs {
			if c.Scheme == "" || c.Scheme != strings.ToLower(c.Scheme) || !isToken(c.Scheme) {
				t.Fatalf("scheme %q of %q", c.Scheme, values)
			}
			if len(c.Params) > maxChallengeParams {
				t.Fatalf("%d parameters of %q", len(c.Params), values)
			}
			for name, v := range c.Params {
				if name != strings.ToLower(name) || (name != "" && !isToken(name)) {
					t.Fatalf("parameter name %q of %q", name, values)
				}
				valueBytes += len(v)
			}
		}
		if valueBytes > min(len(a)+len(b), maxChallengeBytes) {
			t.Fatalf("%d bytes of values from %d bytes of headers", valueBytes, len(a)+len(b))
		}
		header := formatChallenges(cs)
		if len(header) > maxChallengeBytes {
			return
		}
		again := ParseChallenges([]string{header})
		if !sameChallenges(cs, again) {
			t.Fatalf("%q parses to %+v; written back as %q it parses to %+v", values, cs, header, again)
		}
	})
}

func isToken(s string) bool {
	for i := range len(s) {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return s != ""
}

// formatChallenges writes challenges as one WWW-Authenticate value: the
// token68 (parameter "") after the scheme, then quoted parameters.
func formatChallenges(cs []Challenge) string {
	var b strings.Builder
	for i, c := range cs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.Scheme)
		sep := " "
		if t, ok := c.Params[""]; ok {
			b.WriteString(" " + t)
			sep = ", "
		}
		for name, v := range c.Params {
			if name == "" {
				continue
			}
			b.WriteString(sep + name + `="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`)
			sep = ", "
		}
	}
	return b.String()
}

func sameChallenges(a, b []Challenge) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Scheme != b[i].Scheme || len(a[i].Params) != len(b[i].Params) {
			return false
		}
		for k, v := range a[i].Params {
			if w, ok := b[i].Params[k]; !ok || w != v {
				return false
			}
		}
	}
	return true
}
