package auth

import (
	"net/http"
	"strings"
)

// Limits applied while parsing WWW-Authenticate headers, which come from
// untrusted upstreams.
const (
	maxChallengeBytes  = 8 << 10 // bytes considered over all headers
	maxChallenges      = 16
	maxChallengeParams = 32
)

// Authentication schemes as returned by Challenge.Scheme (lower case).
const (
	SchemeBasic  = "basic"
	SchemeBearer = "bearer"
)

// Challenge is one authentication challenge of a WWW-Authenticate header,
// e.g. Bearer realm="https://auth.example/token",service="registry".
type Challenge struct {
	// Scheme is the lower-cased scheme name ("bearer", "basic", …).
	Scheme string
	// Params holds the auth-params with lower-cased names.
	Params map[string]string
}

// Realm returns the realm parameter.
func (c Challenge) Realm() string { return c.Params["realm"] }

// Service returns the service parameter (Bearer).
func (c Challenge) Service() string { return c.Params["service"] }

// Scopes returns the scope parameter split on spaces (Bearer; a challenge
// may name several scopes in one parameter).
func (c Challenge) Scopes() []string { return strings.Fields(c.Params["scope"]) }

// ChallengesFrom parses the WWW-Authenticate headers of a response.
func ChallengesFrom(resp *http.Response) []Challenge {
	return ParseChallenges(resp.Header.Values("WWW-Authenticate"))
}

// ParseChallenges parses WWW-Authenticate header values (RFC 7235): each
// value may hold several comma-separated challenges whose parameters are
// tokens or quoted strings (which may contain commas and escaped quotes).
// Input beyond fixed bounds (bytes, challenges, parameters) is ignored, and
// malformed parts are skipped rather than failing the whole header.
func ParseChallenges(values []string) []Challenge {
	var out []Challenge
	budget := maxChallengeBytes
	for _, v := range values {
		if budget <= 0 || len(out) >= maxChallenges {
			break
		}
		if len(v) > budget {
			v = v[:budget]
		}
		budget -= len(v)
		out = parseHeader(v, out)
	}
	if len(out) > maxChallenges {
		out = out[:maxChallenges]
	}
	return out
}

// parseHeader appends the challenges of one header value to out.
func parseHeader(s string, out []Challenge) []Challenge {
	p := parser{s: s}
	var cur *Challenge
	for len(out) <= maxChallenges {
		p.skipSpaceAndCommas()
		if p.done() {
			break
		}
		tok := p.token()
		if tok == "" {
			// Not a token: skip one byte and resynchronise.
			p.i++
			continue
		}
		p.skipSpace()
		if p.peek() == '=' {
			// An auth-param of the current challenge.
			p.i++
			p.skipSpace()
			val := p.value()
			if cur != nil && len(cur.Params) < maxChallengeParams {
				name := strings.ToLower(tok)
				if _, dup := cur.Params[name]; !dup {
					cur.Params[name] = val
				}
			}
			continue
		}
		// A new challenge: tok is its scheme.
		out = append(out, Challenge{Scheme: strings.ToLower(tok), Params: map[string]string{}})
		cur = &out[len(out)-1]
		// token68 form (e.g. "Negotiate abc=="): keep it as the parameter
		// named "".
		if t := p.token68(); t != "" {
			cur.Params[""] = t
		}
	}
	return out
}

// parser is a cursor over one header value.
type parser struct {
	s string
	i int
}

func (p *parser) done() bool { return p.i >= len(p.s) }

func (p *parser) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.i]
}

func (p *parser) skipSpace() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *parser) skipSpaceAndCommas() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == ',') {
		p.i++
	}
}

// token reads an RFC 7230 token.
func (p *parser) token() string {
	start := p.i
	for !p.done() && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// token68 consumes and returns a token68 value at the cursor: token68
// characters, optional '=' padding, then end of input or a comma. A run
// made only of token characters without padding is not taken (it is the
// next challenge's scheme or a parameter name).
func (p *parser) token68() string {
	start := p.i
	j := start
	plain := true
	for j < len(p.s) && isToken68Char(p.s[j]) {
		if !isTokenChar(p.s[j]) {
			plain = false
		}
		j++
	}
	if j == start {
		return ""
	}
	pad := j
	for pad < len(p.s) && p.s[pad] == '=' {
		pad++
	}
	k := pad
	for k < len(p.s) && (p.s[k] == ' ' || p.s[k] == '\t') {
		k++
	}
	if k < len(p.s) && p.s[k] != ',' {
		return ""
	}
	if plain && pad == j {
		return ""
	}
	p.i = pad
	return p.s[start:pad]
}

// value reads a quoted string (unescaping \x) or a token.
func (p *parser) value() string {
	if p.peek() != '"' {
		return p.token()
	}
	p.i++ // opening quote
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		switch {
		case c == '\\' && p.i+1 < len(p.s):
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case c == '"':
			p.i++
			return b.String()
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return b.String() // unterminated: take what there is
}

// isTokenChar reports whether c is a tchar of RFC 7230.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isToken68Char reports whether c may appear in a token68 before padding.
func isToken68Char(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~+/", c) >= 0
}
