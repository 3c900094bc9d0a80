package shim

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
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
	// ByAddress returns the canonical hosts of the intercepted registries
	// that addr is one of the addresses of (their host or endpoint
	// resolved, at that port). It may look names up (the shim caches
	// them); nil matches nothing.
	ByAddress func(addr netip.AddrPort) []string
	// AllowPorts are the ports tunnels may reach (443 only when empty).
	AllowPorts []int
	// AllowNetworks are prefixes tunnels may reach although they are
	// denied by default.
	AllowNetworks []netip.Prefix
}

// Verdict is what Decide chose for a CONNECT target.
type Verdict struct {
	Decision Decision
	// Target is the target in its one spelling: tunnels dial
	// Target.String(), interceptions mint for Target.Host when the client
	// sends no SNI.
	Target Target
	// Registry is the canonical intercepted host an Intercept serves.
	Registry string
	// Reason says why: the cause of a denial, or how the registry of an
	// interception was found.
	Reason string
}

// ErrBadTarget reports a CONNECT target that is not host:port.
var ErrBadTarget = errors.New("bad CONNECT target")

// Decide chooses what to do with CONNECT target ("host:port"), parsed
// into its one spelling first (ParseTarget: errors wrap ErrBadTarget).
// An intercepted registry's name, in any case, with a trailing dot or a
// zero-padded port, is intercepted; so is an IP literal and port that are
// one registry's (Policy.ByAddress), while an address several registries
// share is refused: the client names the one it means. Everything else
// is a tunnel under the address and port rules, or denied. Decide
// resolves no name itself (the tunnel's dialer checks resolved addresses
// with Allowed).
func Decide(target string, p Policy) (Verdict, error) {
	t, err := ParseTarget(target, 0)
	if err != nil {
		return Verdict{}, err
	}
	if host := t.canonical(); p.Intercepted != nil && p.Intercepted(host) {
		return Verdict{Decision: Intercept, Target: t, Registry: host, Reason: "cached registry"}, nil
	}
	if t.Addr.IsValid() {
		if v, ok := p.decideAddr(t); ok {
			return v, nil
		}
	} else if deniedName(t.Host) && !p.allowsAll() {
		return deny(t, "host %s is local or a metadata service", t.Host), nil
	}
	ports := p.AllowPorts
	if len(ports) == 0 {
		ports = defaultAllowPorts
	}
	if slices.Contains(ports, t.Port) {
		return Verdict{Decision: Tunnel, Target: t}, nil
	}
	return deny(t, "port %d is not open for tunnels", t.Port), nil
}

// decideAddr decides a target that is an IP literal when the address
// settles it: one registry's (Intercept), several registries' or a
// forbidden one (Deny).
func (p Policy) decideAddr(t Target) (Verdict, bool) {
	var regs []string
	if p.ByAddress != nil {
		regs = p.ByAddress(netip.AddrPortFrom(t.Addr, uint16(t.Port))) //nolint:gosec // G115: ParseTarget bounds the port to 1-65535
	}
	switch {
	case len(regs) == 1:
		return Verdict{Decision: Intercept, Target: t, Registry: regs[0], Reason: "address of cached registry " + regs[0]}, true
	case len(regs) > 1:
		return deny(t, "address %s is shared by the cached registries %s: CONNECT the one you mean by name",
			t.String(), strings.Join(regs, ", ")), true
	case !Allowed(t.Addr, p.AllowNetworks):
		return deny(t, "address %s is loopback, link-local, unspecified or a metadata service", t.Addr), true
	}
	return Verdict{}, false
}

func deny(t Target, format string, args ...any) Verdict {
	return Verdict{Decision: Deny, Target: t, Reason: fmt.Sprintf(format, args...)}
}

// allowsAll reports whether the policy opens loopback, so local names may
// be tunnelled too.
func (p Policy) allowsAll() bool {
	return Allowed(netip.MustParseAddr("127.0.0.1"), p.AllowNetworks)
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
