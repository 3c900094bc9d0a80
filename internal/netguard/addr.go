// Package netguard decides which addresses the proxy's own outgoing
// connections may reach, and recognises the proxy's own requests when
// they come back to it.
//
// Two address classes exist. Local addresses (loopback, link-local,
// unspecified, multicast, the cloud metadata services) are refused to
// CONNECT tunnels. Internal addresses — local ones and every private or
// otherwise non-public range: RFC 1918, shared address space (CGNAT
// 100.64.0.0/10), unique-local fc00::/7, reserved ranges, and IPv6
// addresses that embed an internal IPv4 address (NAT64, 6to4) — are
// refused to connections an upstream can steer (redirect hops, token
// realms, DNS answers), except the upstream's configured endpoint and the
// networks an operator opened (Guard). The proxy's own listeners are never
// reachable (Self).
package netguard

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// MetadataAddrs are the cloud instance metadata services.
var MetadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack…
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task metadata
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
}

// All are every IPv4 and IPv6 address: an allow list for a client whose
// redirects are trusted (the warm command, talking to the proxy itself).
var All = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// MetadataNames are host names of metadata services.
var MetadataNames = []string{"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}

// The reasons Reason and LocalReason give.
const (
	ReasonLoopback    = "loopback"
	ReasonPrivate     = "private"
	ReasonShared      = "shared address space (CGNAT)"
	ReasonLinkLocal   = "link-local"
	ReasonUniqueLocal = "unique-local"
	ReasonMetadata    = "a cloud metadata service"
	ReasonMulticast   = "multicast"
	ReasonUnspecified = "unspecified"
	ReasonReserved    = "reserved"
)

// ranges are the internal IPv4 ranges (after Unmap) and IPv6 ranges
// besides those netip classifies itself, with their reason.
var ranges = []struct {
	p      netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), ReasonUnspecified}, // "this network": 0.x reaches the host itself
	{netip.MustParsePrefix("10.0.0.0/8"), ReasonPrivate},
	{netip.MustParsePrefix("100.64.0.0/10"), ReasonShared},
	{netip.MustParsePrefix("172.16.0.0/12"), ReasonPrivate},
	{netip.MustParsePrefix("192.0.0.0/24"), ReasonReserved}, // IETF protocol assignments
	{netip.MustParsePrefix("192.168.0.0/16"), ReasonPrivate},
	{netip.MustParsePrefix("198.18.0.0/15"), ReasonReserved}, // benchmarking
	{netip.MustParsePrefix("240.0.0.0/4"), ReasonReserved},   // future use and broadcast
	{netip.MustParsePrefix("::/96"), ReasonReserved},         // IPv4-compatible (deprecated)
	{netip.MustParsePrefix("64:ff9b:1::/48"), ReasonReserved},
	{netip.MustParsePrefix("100::/64"), ReasonReserved}, // discard
	{netip.MustParsePrefix("fc00::/7"), ReasonUniqueLocal},
	{netip.MustParsePrefix("fec0::/10"), ReasonPrivate}, // site-local (deprecated)
}

// Prefixes that carry an IPv4 address inside an IPv6 one: the embedded
// address is judged.
var (
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	sixTo = netip.MustParsePrefix("2002::/16")
)

// LocalReason says why CONNECT tunnels refuse addr by default: loopback,
// link-local, unspecified, multicast or a metadata service; "" when it is
// none of these.
func LocalReason(addr netip.Addr) string {
	addr = addr.Unmap().WithZone("")
	switch {
	case slices.Contains(MetadataAddrs, addr):
		return ReasonMetadata
	case addr.IsLoopback():
		return ReasonLoopback
	case addr.IsLinkLocalUnicast():
		return ReasonLinkLocal
	case addr.IsUnspecified():
		return ReasonUnspecified
	case addr.IsMulticast(), addr.IsLinkLocalMulticast(), addr.IsInterfaceLocalMulticast():
		return ReasonMulticast
	}
	return ""
}

// Reason says why connections an upstream can steer refuse addr by
// default: every local reason, and private, shared (CGNAT), unique-local
// and reserved ranges, also inside NAT64 and 6to4 addresses; "" for a
// public address. An invalid address is reserved.
func Reason(addr netip.Addr) string {
	if !addr.IsValid() {
		return ReasonReserved
	}
	addr = addr.Unmap().WithZone("")
	if r := LocalReason(addr); r != "" {
		return r
	}
	if addr.Is6() {
		if v4, ok := embedded(addr); ok {
			return Reason(v4)
		}
	}
	for _, r := range ranges {
		if r.p.Contains(addr) {
			return r.reason
		}
	}
	return ""
}

// embedded returns the IPv4 address inside a NAT64 (64:ff9b::/96) or
// 6to4 (2002::/16) address.
func embedded(addr netip.Addr) (netip.Addr, bool) {
	b := addr.As16()
	switch {
	case nat64.Contains(addr):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixTo.Contains(addr):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// Contains reports whether one of prefixes contains addr (IPv4-mapped
// IPv6 addresses are compared as IPv4).
func Contains(prefixes []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap().WithZone("")
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ParseNetworks parses CIDRs or single addresses.
func ParseNetworks(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("network %q: want a CIDR or an IP address: %w", s, err)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// ParseHost reads a URL's host as an IP address in any spelling a
// resolver may accept: IPv6 with or without brackets (and a zone),
// IPv4-mapped IPv6, dotted IPv4, and the legacy inet_aton forms with
// fewer parts and octal or hex parts (127.1, 0x7f.1, 0177.0.0.1,
// 2130706433). ok is false for a name.
func ParseHost(host string) (netip.Addr, bool) {
	h := host
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap(), true
	}
	return parseLegacyIPv4(strings.TrimSuffix(h, "."))
}

// parseLegacyIPv4 parses inet_aton's forms: a, a.b, a.b.c, a.b.c.d, each
// part decimal, octal (leading 0) or hex (0x); the last part fills the
// remaining bytes.
func parseLegacyIPv4(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if s == "" || len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint64
	for i, p := range parts {
		n, ok := parsePart(p)
		if !ok {
			return netip.Addr{}, false
		}
		if i < len(parts)-1 {
			if n > 0xff {
				return netip.Addr{}, false
			}
			v = v<<8 | n
			continue
		}
		rest := uint(4 - i) // bytes the last part fills
		if n >= 1<<(8*rest) {
			return netip.Addr{}, false
		}
		v = v<<(8*rest) | n
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parsePart parses one inet_aton part.
func parsePart(p string) (uint64, bool) {
	base := 10
	switch {
	case p == "":
		return 0, false
	case strings.HasPrefix(p, "0x"), strings.HasPrefix(p, "0X"):
		base, p = 16, p[2:]
		if p == "" {
			return 0, true // "0x" is 0 to inet_aton
		}
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	}
	n, err := strconv.ParseUint(p, base, 32)
	return n, err == nil
}
