package shim

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// Target is a CONNECT target (or the host of an absolute-form URL) in one
// spelling: the host lower case without a trailing dot, an IP literal in
// its canonical form (IPv4-mapped IPv6 unmapped), the port a number.
// Every decision and every dial uses it, so that "Quay.IO.:0443",
// "quay.io:443" and "quay.io:443" are one target, and "[::ffff:127.0.0.1]"
// is 127.0.0.1.
type Target struct {
	// Host is the canonical host; an IPv6 literal without brackets.
	Host string
	// Addr is the host's address when it is an IP literal.
	Addr netip.Addr
	Port int
}

// maxPortDigits bounds the digits of a port, leading zeros included
// ("0443" is 443).
const maxPortDigits = 10

// ParseTarget parses "host:port" (defaultPort when the port is absent
// and defaultPort > 0). Errors wrap ErrBadTarget: a port that is not 1 to
// 65535 in decimal digits (leading zeros allowed), an IPv6 zone, a host that is neither a DNS name nor an IP
// literal, or a name whose last label is numeric (127.1, 0x7f000001: the
// inet_aton spellings of addresses, which a resolver may turn into
// loopback, are refused as names rather than left to it).
func ParseTarget(s string, defaultPort int) (Target, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		if defaultPort <= 0 {
			return Target{}, fmt.Errorf("%w %q: want host:port", ErrBadTarget, s)
		}
		host, portStr = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), strconv.Itoa(defaultPort)
	}
	port, ok := parsePort(portStr)
	if !ok {
		return Target{}, fmt.Errorf("%w %q: bad port %q", ErrBadTarget, s, portStr)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.Zone() != "" {
			return Target{}, fmt.Errorf("%w %q: an IPv6 zone names an interface of the proxy's host", ErrBadTarget, s)
		}
		addr = addr.Unmap()
		return Target{Host: addr.String(), Addr: addr, Port: port}, nil
	}
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "" || len(h) > 253 || strings.ContainsAny(h, "[]:") || !oci.ValidHost(h) || numericLabel(h) {
		return Target{}, fmt.Errorf("%w %q: bad host %q", ErrBadTarget, s, host)
	}
	return Target{Host: h, Port: port}, nil
}

// parsePort accepts 1 to 65535 written in at most maxPortDigits decimal
// digits (no sign, no spaces).
func parsePort(s string) (int, bool) {
	if s == "" || len(s) > maxPortDigits || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 1 && n <= 65535
}

// numericLabel reports whether a name's last label is all digits or a
// hex number: no DNS name ends so, every odd spelling of an IPv4 address
// does.
func numericLabel(h string) bool {
	last := h[strings.LastIndexByte(h, '.')+1:]
	if x, ok := strings.CutPrefix(last, "0x"); ok {
		return x == "" || strings.Trim(x, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

// String is host:port, an IPv6 host in brackets: the form dialled.
func (t Target) String() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// canonical is the key of the intercepted hosts (CanonicalTarget): ":443"
// left out, Docker Hub's names folded.
func (t Target) canonical() string { return CanonicalTarget(t.String()) }
