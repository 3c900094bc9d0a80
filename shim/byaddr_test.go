package shim

import (
	"context"
	"errors"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

// TestAddrIndex: the intercepted hosts of an address are found from the
// addresses of each host and of its endpoint, at their ports; names are
// looked up once per addrTTL, concurrent CONNECTs share one lookup, and a
// name whose lookup fails keeps its last addresses.
func TestAddrIndex(t *testing.T) {
	t.Parallel()
	route := func(endpoint string) *hostRoute {
		u, err := url.Parse(endpoint)
		if err != nil {
			t.Fatal(err)
		}
		return &hostRoute{base: u}
	}
	x := newAddrIndex(map[string]*hostRoute{
		"quay.io":            route("https://quay.io"),
		"docker.io":          route("https://registry-1.docker.io"),
		"registry.corp:5000": route("http://10.0.0.7:8080"),
		"[2001:db8::5]":      route("https://[2001:db8::5]"),
	})
	clock := testutil.NewFakeClock(time.Unix(1e9, 0))
	x.now = clock.Now
	var lookups atomic.Int64
	var mu sync.Mutex
	dns := map[string][]netip.Addr{
		"quay.io":              {netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1")},
		"registry-1.docker.io": {netip.MustParseAddr("203.0.113.2")},
		"registry.corp":        {netip.MustParseAddr("::ffff:10.0.0.7")},
	}
	x.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		lookups.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if a, ok := dns[host]; ok {
			return a, nil
		}
		return nil, errors.New("no such host")
	}
	check := func(ap string, want ...string) {
		t.Helper()
		if got := x.registries(netip.MustParseAddrPort(ap)); !slices.Equal(got, want) {
			t.Errorf("registries(%s) = %q, want %q", ap, got, want)
		}
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { x.registries(netip.MustParseAddrPort("203.0.113.1:443")) })
	}
	wg.Wait()
	check("203.0.113.1:443", "quay.io")
	check("[2001:db8::1]:443", "quay.io")
	check("[::ffff:203.0.113.1]:443", "quay.io")
	check("203.0.113.1:8443")
	check("203.0.113.2:443", "docker.io")
	check("10.0.0.7:5000", "registry.corp:5000")
	check("10.0.0.7:8080", "registry.corp:5000")
	check("10.0.0.7:443")
	check("[2001:db8::5]:443", "[2001:db8::5]")
	// docker.io, quay.io, registry-1.docker.io and registry.corp: one
	// lookup each however many CONNECTs asked.
	if n := lookups.Load(); n != 4 {
		t.Fatalf("%d lookups, want 4", n)
	}
	// Within the TTL nothing is looked up again; after it, everything is,
	// and a failed lookup keeps what it had.
	mu.Lock()
	delete(dns, "quay.io")
	dns["registry-1.docker.io"] = []netip.Addr{netip.MustParseAddr("203.0.113.9")}
	mu.Unlock()
	clock.Advance(addrTTL - time.Second)
	check("203.0.113.2:443", "docker.io")
	clock.Advance(time.Second)
	check("203.0.113.9:443", "docker.io")
	check("203.0.113.2:443")
	check("203.0.113.1:443", "quay.io")
	if n := lookups.Load(); n != 8 {
		t.Fatalf("%d lookups, want 8", n)
	}
}
