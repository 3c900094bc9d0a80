package netguard

import (
	"net/netip"
	"testing"
)

// TestReason: every spelling of an internal address a hostile upstream
// may put in a redirect or realm is classed internal once read as a
// resolver would read it; public addresses are not. Nothing is dialled.
func TestReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host string
		want string // "" public
	}{
		{"127.0.0.1", ReasonLoopback},
		{"127.1", ReasonLoopback},
		{"127.0.1", ReasonLoopback},
		{"0x7f.1", ReasonLoopback},
		{"0x7F.0.0.1", ReasonLoopback},
		{"0177.0.0.1", ReasonLoopback},
		{"2130706433", ReasonLoopback},
		{"0x7f000001", ReasonLoopback},
		{"127.255.255.254", ReasonLoopback},
		{"::ffff:127.0.0.1", ReasonLoopback},
		{"[::ffff:127.0.0.1]", ReasonLoopback},
		{"::ffff:7f00:1", ReasonLoopback},
		{"::1", ReasonLoopback},
		{"[::1]", ReasonLoopback},
		{"0:0:0:0:0:0:0:1", ReasonLoopback},
		{"10.0.0.1", ReasonPrivate},
		{"10.255.255.255", ReasonPrivate},
		{"012.1", ReasonPrivate}, // octal 10.0.0.1
		{"172.16.0.1", ReasonPrivate},
		{"172.31.255.255", ReasonPrivate},
		{"192.168.0.1", ReasonPrivate},
		{"192.168.255.255", ReasonPrivate},
		{"::ffff:192.168.1.1", ReasonPrivate},
		{"fec0::1", ReasonPrivate},
		{"100.64.0.1", ReasonShared},
		{"100.127.255.255", ReasonShared},
		{"169.254.169.254", ReasonMetadata},
		{"0xa9.0xfe.0xa9.0xfe", ReasonMetadata},
		{"2852039166", ReasonMetadata},
		{"::ffff:169.254.169.254", ReasonMetadata},
		{"169.254.170.2", ReasonMetadata},
		{"fd00:ec2::254", ReasonMetadata},
		{"100.100.100.200", ReasonMetadata},
		{"169.254.1.1", ReasonLinkLocal},
		{"fe80::1", ReasonLinkLocal},
		{"fe80::1%eth0", ReasonLinkLocal},
		{"fd00::1", ReasonUniqueLocal},
		{"fc00::1", ReasonUniqueLocal},
		{"224.0.0.1", ReasonMulticast},
		{"239.255.255.250", ReasonMulticast},
		{"ff02::1", ReasonMulticast},
		{"0.0.0.0", ReasonUnspecified},
		{"0", ReasonUnspecified},
		{"0.1.2.3", ReasonUnspecified},
		{"::", ReasonUnspecified},
		{"[::]", ReasonUnspecified},
		{"255.255.255.255", ReasonReserved},
		{"240.0.0.1", ReasonReserved},
		{"198.18.0.1", ReasonReserved},
		{"192.0.0.8", ReasonReserved},
		{"::127.0.0.1", ReasonReserved}, // IPv4-compatible
		{"64:ff9b::7f00:1", ReasonLoopback},
		{"64:ff9b::a9fe:a9fe", ReasonMetadata},
		{"64:ff9b::0a00:0001", ReasonPrivate},
		{"64:ff9b:1::1", ReasonReserved},
		{"2002:7f00:1::1", ReasonLoopback},
		{"2002:c0a8:101::1", ReasonPrivate},
		{"100::1", ReasonReserved},
		// Public.
		{"93.184.216.34", ""},
		{"8.8.8.8", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"172.15.255.255", ""},
		{"172.32.0.0", ""},
		{"192.167.255.255", ""},
		{"192.169.0.0", ""},
		{"11.0.0.1", ""},
		{"2606:4700::1111", ""},
		{"64:ff9b::808:808", ""},
		{"2002:808:808::1", ""},
		{"::ffff:8.8.8.8", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			t.Parallel()
			addr, ok := ParseHost(tt.host)
			if !ok {
				t.Fatalf("ParseHost(%q) is not an address", tt.host)
			}
			if got := Reason(addr); got != tt.want {
				t.Fatalf("Reason(%s, read from %q) = %q, want %q", addr, tt.host, got, tt.want)
			}
		})
	}
}

// TestLocalReason: tunnels refuse only the local class (private networks
// stay reachable through CONNECT, as before).
func TestLocalReason(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]string{
		"127.0.0.1":        ReasonLoopback,
		"::ffff:127.0.0.1": ReasonLoopback,
		"::1":              ReasonLoopback,
		"169.254.169.254":  ReasonMetadata,
		"100.100.100.200":  ReasonMetadata,
		"fd00:ec2::254":    ReasonMetadata,
		"fe80::1":          ReasonLinkLocal,
		"0.0.0.0":          ReasonUnspecified,
		"224.0.0.1":        ReasonMulticast,
		"10.0.0.1":         "",
		"192.168.1.1":      "",
		"100.64.0.1":       "",
		"fd00::1":          "",
		"93.184.216.34":    "",
	} {
		if got := LocalReason(netip.MustParseAddr(host)); got != want {
			t.Errorf("LocalReason(%s) = %q, want %q", host, got, want)
		}
	}
}

func TestParseHostNames(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"", "localhost", "registry.example.com", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "1.0x100.1", "08", "1..2", "-1", "+1", "1_0", "4294967296", "[::1", "example.com."} {
		if a, ok := ParseHost(h); ok {
			t.Errorf("ParseHost(%q) = %s, want a name", h, a)
		}
	}
	if a, ok := ParseHost("1.2.3.4."); !ok || a != netip.MustParseAddr("1.2.3.4") {
		t.Errorf("ParseHost(1.2.3.4.) = %v %v", a, ok)
	}
}

func TestParseNetworks(t *testing.T) {
	t.Parallel()
	got, err := ParseNetworks([]string{"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::ffff:127.0.0.0/104", "10.1.2.3/16"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "127.0.0.0/8", "10.1.0.0/16"}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("network %d = %s, want %s", i, got[i], want[i])
		}
	}
	if _, err := ParseNetworks([]string{"10.0.0.0/33"}); err == nil {
		t.Error("10.0.0.0/33 accepted")
	}
	if !Contains(got, netip.MustParseAddr("::ffff:10.9.9.9")) || Contains(got, netip.MustParseAddr("11.0.0.1")) {
		t.Error("Contains does not read IPv4-mapped addresses as IPv4")
	}
}
