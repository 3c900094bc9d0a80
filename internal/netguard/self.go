package netguard

import (
	"net"
	"net/netip"
	"sync"
)

// Self holds the addresses the process listens on. A Guard refuses
// connections to them whatever else allows them, so that a request the
// proxy sends never reaches the proxy itself. A listener on an
// unspecified address (0.0.0.0:3128, [::]:3128) covers loopback and every
// address of the host's interfaces at its port. Its zero value and nil
// hold nothing; it is safe for concurrent use.
type Self struct {
	mu    sync.RWMutex
	addrs []netip.AddrPort
	// local lists the host's interface addresses; tests replace it.
	local func() ([]netip.Addr, error)
}

// Add records a listener's address (a *net.TCPAddr, or any address whose
// String is ip:port); other addresses are ignored.
func (s *Self) Add(a net.Addr) {
	var ap netip.AddrPort
	if t, ok := a.(*net.TCPAddr); ok {
		ap = t.AddrPort()
	} else if p, err := netip.ParseAddrPort(a.String()); err == nil {
		ap = p
	}
	if !ap.IsValid() || ap.Port() == 0 {
		return
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
	s.mu.Lock()
	s.addrs = append(s.addrs, ap)
	s.mu.Unlock()
}

// Has reports whether a connection to addr at port reaches one of the
// listeners. The host's interface addresses are listed only when a
// listener on an unspecified address has that port.
func (s *Self) Has(addr netip.Addr, port uint16) bool {
	if s == nil {
		return false
	}
	addr = addr.Unmap().WithZone("")
	s.mu.RLock()
	addrs := s.addrs
	s.mu.RUnlock()
	for _, l := range addrs {
		if l.Port() != port {
			continue
		}
		switch {
		case addr == l.Addr(), addr.IsUnspecified():
			return true
		case l.Addr().IsUnspecified() && (addr.IsLoopback() || s.isLocal(addr)):
			return true
		}
	}
	return false
}

// isLocal reports whether addr is an address of one of the host's
// interfaces. When they cannot be listed, every address is taken as
// local: refusing a connection is the safe side.
func (s *Self) isLocal(addr netip.Addr) bool {
	list := s.local
	if list == nil {
		list = interfaceAddrs
	}
	addrs, err := list()
	if err != nil {
		return true
	}
	for _, a := range addrs {
		if a.Unmap().WithZone("") == addr {
			return true
		}
	}
	return false
}

// interfaceAddrs lists the addresses of the host's interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ifAddrs))
	for _, ia := range ifAddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, a)
			}
		}
	}
	return out, nil
}
