package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrForbidden is wrapped by every refusal of a Guard.
var ErrForbidden = errors.New("address not allowed")

// ReasonSelf is why a connection to one of the process's own listeners
// is refused.
const ReasonSelf = "one of the proxy's own listeners"

// RefusedError is a connection a Guard refused: where to and why. It
// wraps ErrForbidden.
type RefusedError struct {
	// Target is the host:port as asked (a URL's host); Addr what it
	// resolved to (invalid when the target was not dialled).
	Target string
	Addr   netip.AddrPort
	Reason string
}

// Error implements error.
func (e *RefusedError) Error() string {
	where := e.Target
	if e.Addr.IsValid() && e.Addr.String() != e.Target {
		where += " (" + e.Addr.String() + ")"
	}
	return fmt.Sprintf("%v: %s is %s", ErrForbidden, where, e.Reason)
}

// Unwrap returns ErrForbidden.
func (e *RefusedError) Unwrap() error { return ErrForbidden }

// Options configure a Guard. The zero value refuses every internal
// address.
type Options struct {
	// Endpoint is the host:port of the configured endpoint: its address
	// at that port (after resolution of its name) is reachable whatever
	// its class. Empty: none.
	Endpoint string
	// Allow are networks the operator opened: reachable although
	// internal.
	Allow []netip.Prefix
	// Self are the process's listeners, never reachable. Nil: none known.
	Self *Self
	// Resolver resolves the endpoint's name when a connection made under
	// another name reaches an internal address. Default
	// net.DefaultResolver.
	Resolver *net.Resolver
}

// Guard judges the connections one upstream client makes: redirect hops,
// token realms and whatever DNS answers for them. It is safe for
// concurrent use.
type Guard struct {
	allow    []netip.Prefix
	self     *Self
	resolver *net.Resolver
	// epHost and epPort are the endpoint's (lower case, no brackets, no
	// trailing dot); epAddr is epHost when it is an IP.
	epHost string
	epPort uint16
	epAddr netip.Addr

	mu      sync.Mutex
	trusted map[string]bool // host:port dial targets the operator named (HTTPS_PROXY)
}

// New returns a Guard for opts.
func New(opts Options) *Guard {
	g := &Guard{allow: opts.Allow, self: opts.Self, resolver: opts.Resolver, trusted: map[string]bool{}}
	if g.resolver == nil {
		g.resolver = net.DefaultResolver
	}
	if host, port, ok := splitTarget(opts.Endpoint); ok {
		g.epHost, g.epPort = host, port
		if a, isIP := ParseHost(host); isIP {
			g.epAddr = a
		}
	}
	return g
}

// Trust makes host:port reachable wherever it resolves to, except the
// process's own listeners: a forward proxy from the environment
// (HTTPS_PROXY), which the operator named.
func (g *Guard) Trust(target string) {
	host, port, ok := splitTarget(target)
	if !ok {
		return
	}
	g.mu.Lock()
	g.trusted[net.JoinHostPort(host, strconv.Itoa(int(port)))] = true
	g.mu.Unlock()
}

func (g *Guard) isTrusted(target string) bool {
	host, port, ok := splitTarget(target)
	if !ok {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.trusted[net.JoinHostPort(host, strconv.Itoa(int(port)))]
}

// Check judges a connection asked for as target (host:port) that
// reached ap: refused when ap is one of the process's own listeners;
// allowed when target is trusted, ap is public, ap is in an allowed
// network, or ap is the endpoint's address at the endpoint's port;
// refused otherwise.
func (g *Guard) Check(ctx context.Context, target string, ap netip.AddrPort) error {
	addr := ap.Addr().Unmap().WithZone("")
	if g.self.Has(addr, ap.Port()) {
		return &RefusedError{Target: target, Addr: ap, Reason: ReasonSelf}
	}
	if g.isTrusted(target) {
		return nil
	}
	reason := Reason(addr)
	if reason == "" || Contains(g.allow, addr) || g.isEndpoint(ctx, target, addr, ap.Port()) {
		return nil
	}
	return &RefusedError{Target: target, Addr: ap, Reason: reason}
}

// isEndpoint reports whether addr:port is the configured endpoint: its
// IP, or its name (as target, or resolved) at its port.
func (g *Guard) isEndpoint(ctx context.Context, target string, addr netip.Addr, port uint16) bool {
	if g.epHost == "" || port != g.epPort {
		return false
	}
	if g.epAddr.IsValid() {
		return addr == g.epAddr
	}
	if host, p, ok := splitTarget(target); ok && host == g.epHost && p == g.epPort {
		return true
	}
	ips, err := g.resolver.LookupNetIP(ctx, "ip", g.epHost)
	return err == nil && slices.ContainsFunc(ips, func(a netip.Addr) bool { return a.Unmap().WithZone("") == addr })
}

// CheckTarget judges a target (host:port) that another proxy will resolve
// and dial (HTTPS_PROXY): an IP in any spelling as Check does, and the
// names of loopback (localhost) and metadata services as their address.
// Other names cannot be judged here; the forward proxy resolves them.
func (g *Guard) CheckTarget(ctx context.Context, target string) error {
	host, port, ok := splitTarget(target)
	if !ok {
		return &RefusedError{Target: target, Reason: "not host:port"}
	}
	addr, isIP := ParseHost(host)
	switch {
	case isIP:
	case host == "localhost" || strings.HasSuffix(host, ".localhost"):
		addr = netip.MustParseAddr("127.0.0.1")
	case slices.Contains(MetadataNames, host):
		addr = MetadataAddrs[0]
	default:
		return nil
	}
	if err := g.Check(ctx, target, netip.AddrPortFrom(addr, port)); err != nil {
		return err
	}
	return nil
}

// DialContext returns d's DialContext with every connection judged by
// Check after resolution, at connect time (each address tried, each
// redirect hop, whatever DNS answered).
func (g *Guard) DialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, target string) (net.Conn, error) {
		dd := *d
		dd.Control = nil
		dd.ControlContext = func(ctx context.Context, _, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return &RefusedError{Target: target, Reason: "not an IP address"}
			}
			return g.Check(ctx, target, ap)
		}
		return dd.DialContext(ctx, network, target)
	}
}

// splitTarget splits host:port into the lower-case host without brackets
// or trailing dot and the port.
func splitTarget(target string) (string, uint16, bool) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return "", 0, false
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || host == "" {
		return "", 0, false
	}
	return strings.TrimSuffix(strings.ToLower(host), "."), uint16(port), true
}
