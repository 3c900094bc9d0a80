package shim

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// How long the addresses of the intercepted hosts are kept, and how long
// looking them up may take.
const (
	addrTTL           = time.Minute
	addrLookupTimeout = 3 * time.Second
)

// addrIndex finds the intercepted hosts an address and port belong to:
// the addresses of each intercepted host and of its endpoint, at their
// ports. It is consulted for CONNECTs to IP literals only (a client that
// names a registry by its address gets that registry, not a tunnel that
// skips the cache and its rules), looks the names up when first needed
// and again once addrTTL has passed, and keeps a name's last addresses
// while its lookup fails.
type addrIndex struct {
	names  []indexedName
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	now    func() time.Time

	// refreshing is held by the one refresh in progress: CONNECTs that
	// find the index stale meanwhile wait for it, not look up again.
	refreshing sync.Mutex
	mu         sync.Mutex
	byAddr     map[netip.AddrPort][]string
	known      map[string][]netip.Addr // each name's last addresses
	built      time.Time               // zero: never
}

// indexedName is one name (or IP literal) and port whose addresses are
// those of registry (a canonical intercepted host).
type indexedName struct {
	target   Target
	registry string
}

// newAddrIndex lists the names of every route: its host (port 443 unless
// it names one) and its endpoint (the scheme's port unless it names one).
func newAddrIndex(routes map[string]*hostRoute) *addrIndex {
	x := &addrIndex{lookup: lookupAddrs, now: time.Now, known: map[string][]netip.Addr{}}
	for host, rt := range routes {
		if t, err := ParseTarget(host, 443); err == nil {
			x.names = append(x.names, indexedName{t, host})
		}
		port := 443
		if rt.base.Scheme == "http" {
			port = 80
		}
		if t, err := ParseTarget(rt.base.Host, port); err == nil {
			x.names = append(x.names, indexedName{t, host})
		}
	}
	return x
}

func lookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// registries returns the sorted canonical hosts that ap belongs to.
func (x *addrIndex) registries(ap netip.AddrPort) []string {
	if x.stale() {
		x.refreshing.Lock()
		if x.stale() {
			x.refresh()
		}
		x.refreshing.Unlock()
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.byAddr[ap])
}

func (x *addrIndex) stale() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.built.IsZero() || x.now().Sub(x.built) >= addrTTL
}

// refresh looks every name up at once, within addrLookupTimeout, and
// rebuilds the index.
func (x *addrIndex) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), addrLookupTimeout)
	defer cancel()
	var hosts []string
	for _, n := range x.names {
		if !n.target.Addr.IsValid() && !slices.Contains(hosts, n.target.Host) {
			hosts = append(hosts, n.target.Host)
		}
	}
	found := make(map[string][]netip.Addr)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Go(func() {
			addrs, err := x.lookup(ctx, h)
			if err != nil {
				return
			}
			mu.Lock()
			found[h] = addrs
			mu.Unlock()
		})
	}
	wg.Wait()
	x.mu.Lock()
	defer x.mu.Unlock()
	for h, addrs := range found {
		x.known[h] = addrs
	}
	byAddr := make(map[netip.AddrPort][]string)
	for _, n := range x.names {
		addrs := x.known[n.target.Host]
		if n.target.Addr.IsValid() {
			addrs = []netip.Addr{n.target.Addr}
		}
		for _, a := range addrs {
			ap := netip.AddrPortFrom(a.Unmap(), uint16(n.target.Port)) //nolint:gosec // G115: ParseTarget bounds the port to 1-65535
			if !slices.Contains(byAddr[ap], n.registry) {
				byAddr[ap] = append(byAddr[ap], n.registry)
				slices.Sort(byAddr[ap])
			}
		}
	}
	x.byAddr = byAddr
	x.built = x.now()
}
