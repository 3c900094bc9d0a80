package shim

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/gmarcy/container-registry-proxy/internal/netguard"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// Decision is what the shim does with a CONNECT request. Its zero value
// is Deny, so a Decision nobody set refuses rather than opens a tunnel.
type Decision int

// The decisions.
const (
	// Deny answers 403. Every value other than Tunnel and Intercept is
	// treated as Deny.
	Deny Decision = iota
	// Tunnel splices bytes to the target untouched.
	Tunnel
	// Intercept terminates TLS with a minted certificate and serves the
	// requests from the mirror (or forwards them to the real host).
	Intercept
)

// String names the decision for logs and metrics; values other than
// Tunnel and Intercept are named "deny", as they are treated.
func (d Decision) String() string {
	switch d {
	case Tunnel:
		return "tunnel"
	case Intercept:
		return "intercept"
	default:
		return "deny"
	}
}

// defaultAllowPorts are the ports tunnels may reach when the policy names
// none.
var defaultAllowPorts = []int{443}

// Policy is what Decide needs to know about the configuration.
type Policy struct {
	// Intercepted reports whether a canonical host (lower case, ":443"
	// stripped, Docker Hub's names folded into "docker.io") is a registry
	// or token host the shim terminates.
	Intercepted func(host string) bool
	// AllowPorts are the ports tunnels may reach (443 only when empty).
	AllowPorts []int
	// AllowNetworks are prefixes tunnels may reach although they are
	// denied by default.
	AllowNetworks []netip.Prefix
}

// ErrBadTarget reports a CONNECT target that is not host:port.
var ErrBadTarget = errors.New("bad CONNECT target")

// Decide chooses what to do with CONNECT target ("host:port"). It is pure:
// it resolves nothing (the tunnel's dialer checks resolved addresses with
// Allowed). The reason is for the access log and the 403 body.
func Decide(target string, p Policy) (Decision, string, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return Deny, "", fmt.Errorf("%w %q: want host:port", ErrBadTarget, target)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return Deny, "", fmt.Errorf("%w %q: bad port %q", ErrBadTarget, target, portStr)
	}
	if host == "" || (!oci.ValidHost(host) && !validIPv6(host)) {
		return Deny, "", fmt.Errorf("%w %q: bad host %q", ErrBadTarget, target, host)
	}
	if p.Intercepted != nil && p.Intercepted(CanonicalTarget(target)) {
		return Intercept, "cached registry", nil
	}
	if addr, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if !Allowed(addr, p.AllowNetworks) {
			return Deny, fmt.Sprintf("address %s is loopback, link-local, unspecified or a metadata service", addr), nil
		}
	} else if deniedName(host) && !p.allowsAll() {
		return Deny, fmt.Sprintf("host %s is local or a metadata service", host), nil
	}
	ports := p.AllowPorts
	if len(ports) == 0 {
		ports = defaultAllowPorts
	}
	if slices.Contains(ports, port) {
		return Tunnel, "", nil
	}
	return Deny, fmt.Sprintf("port %d is not open for tunnels", port), nil
}

// allowsAll reports whether the policy opens loopback, so local names may
// be tunnelled too.
func (p Policy) allowsAll() bool {
	return Allowed(netip.MustParseAddr("127.0.0.1"), p.AllowNetworks)
}

func validIPv6(h string) bool {
	_, err := netip.ParseAddr(strings.Trim(h, "[]"))
	return err == nil
}

// CanonicalTarget lower-cases a CONNECT target, strips ":443" and folds
// Docker Hub's API names into "docker.io" (auth.docker.io stays itself).
func CanonicalTarget(target string) string {
	t := strings.ToLower(strings.TrimSuffix(target, ":443"))
	if oci.IsDockerHub(t) {
		return oci.DockerHub
	}
	return t
}

func deniedName(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	return slices.Contains(netguard.MetadataNames, h)
}

// Allowed reports whether a tunnel may reach addr: never loopback,
// link-local, unspecified, multicast or metadata addresses
// (netguard.LocalReason), unless one of allow contains it.
func Allowed(addr netip.Addr, allow []netip.Prefix) bool {
	return netguard.Contains(allow, addr) || netguard.LocalReason(addr) == ""
}

// ParseNetworks parses CIDRs or single addresses.
func ParseNetworks(ss []string) ([]netip.Prefix, error) { return netguard.ParseNetworks(ss) }
