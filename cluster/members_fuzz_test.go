package cluster

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/opencontainers/go-digest"
)

// FuzzValidAdvertise: whatever a member set in Redis holds, a replica
// asks for fills (with the cluster secret) only at http(s)://host:port
// with a host name or IP address and a port from 1 to 65535, and the
// peer URL built from it names that host and the peer path, nothing the
// entry could smuggle in (user info, another path, a query, a fragment).
func FuzzValidAdvertise(f *testing.F) {
	for _, s := range []string{
		"http://10.0.0.7:3128", "https://proxy-0.proxy.ns.svc:3128/", "http://[fd00::7]:3128", "http://a:3128/x", "http://a",
		"ftp://a:21", "http://u:p@a:1", "http://a:1?x", "http://a:1#f", "http:a:1", "//a:1", "http://:1", "http://a:1/.",
		// Found by this target: an empty query or fragment (the peer
		// path became part of it), ports outside 1 to 65535 or with leading zeros, and
		// host names of any characters url.Parse lets through.
		"http://a:1?", "http://a:1#", "http://a:0", "http://a:99999", "http://a:00080", "http://a!$&'()*+,;=b:1", "http://a%2fb:1", "http://[fe80::1%25eth0]:1",
	} {
		f.Add(s)
	}
	d := digest.FromString("x")
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidAdvertise(s) {
			return
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("ValidAdvertise(%q) accepted %+v", s, u)
		}
		if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != u.Port() {
			t.Fatalf("ValidAdvertise(%q) accepted port %q", s, u.Port())
		}
		if h := u.Hostname(); net.ParseIP(h) == nil && strings.Trim(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != "" {
			t.Fatalf("ValidAdvertise(%q) accepted host %q", s, h)
		}
		peer, err := url.Parse(strings.TrimSuffix(s, "/") + mirror.PeerPath + d.String() + "?repo=x")
		if err != nil || peer.Host != u.Host || peer.Path != mirror.PeerPath+d.String() || peer.User != nil || peer.Query().Get("repo") != "x" {
			t.Fatalf("ValidAdvertise(%q): the peer URL is %v (%v)", s, peer, err)
		}
	})
}

// FuzzAccessMember: the members of the cluster index's access set sort
// as their access times do, whatever the time (before 1970, after 2262,
// nanoseconds apart), so that eviction takes the least recently used.
func FuzzAccessMember(f *testing.F) {
	for _, seed := range []struct{ s1, s2 int64 }{
		{1767225600, 1767225601}, {-1, 0}, {0, 1}, {-62135596800, 253402300799},
		// Found by FuzzIndexEntry (storage), the same key: a time after
		// 2262 wrapped around and sorted before the present.
		{9223372036, 9223372037}, {1767225600, 19880000000},
	} {
		f.Add(seed.s1, int64(0), seed.s2, int64(0))
	}
	d := digest.FromString("x")
	f.Fuzz(func(t *testing.T, s1, n1, s2, n2 int64) {
		t1, t2 := time.Unix(s1, n1), time.Unix(s2, n2)
		if t2.Before(t1) {
			t1, t2 = t2, t1
		}
		m1, m2 := accessMember(d, t1), accessMember(d, t2)
		if m1 > m2 || len(m1) != accessMemberLen+len(d) {
			t.Fatalf("%v sorts as %s, after %v as %s", t1, m1[:accessMemberLen], t2, m2[:accessMemberLen])
		}
	})
}
