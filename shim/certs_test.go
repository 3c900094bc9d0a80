package shim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

// mintTestCA creates a fresh CA in a temporary directory.
func mintTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// minterRoots returns a pool holding only ca.
func minterRoots(ca *CA) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	return pool
}

func TestMinterCertificate(t *testing.T) {
	t.Parallel()
	ca := mintTestCA(t)
	validity := 3 * 24 * time.Hour
	now := time.Now()
	m := NewMinter(ca, MinterOptions{Validity: validity, Now: func() time.Time { return now }})

	for _, tc := range []struct {
		name, host, verifyAs string
		wantDNS              string
		wantIP               net.IP
	}{
		{name: "dns name", host: "registry-1.docker.io", verifyAs: "registry-1.docker.io", wantDNS: "registry-1.docker.io"},
		{name: "upper case, port and trailing dot", host: "Quay.IO.:443", verifyAs: "quay.io", wantDNS: "quay.io"},
		{name: "ipv4 literal", host: "10.1.2.3", verifyAs: "10.1.2.3", wantIP: net.ParseIP("10.1.2.3")},
		{name: "bracketed ipv6 with port", host: "[2001:db8::1]:5000", verifyAs: "2001:db8::1", wantIP: net.ParseIP("2001:db8::1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := m.Certificate(tc.host)
			if err != nil {
				t.Fatal(err)
			}
			leaf := c.Leaf
			if leaf == nil || len(c.Certificate) != 2 {
				t.Fatalf("chain has %d certificates, Leaf %v; want leaf + CA", len(c.Certificate), leaf != nil)
			}
			if string(c.Certificate[1]) != string(ca.Certificate().Raw) {
				t.Error("second certificate in the chain is not the CA")
			}
			if _, err := leaf.Verify(x509.VerifyOptions{
				DNSName:     tc.verifyAs,
				Roots:       minterRoots(ca),
				CurrentTime: now,
				KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				t.Errorf("verify: %v", err)
			}
			if tc.wantDNS != "" && (len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != tc.wantDNS || len(leaf.IPAddresses) != 0) {
				t.Errorf("SAN DNS %v IP %v, want DNS %s", leaf.DNSNames, leaf.IPAddresses, tc.wantDNS)
			}
			if tc.wantIP != nil && (len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(tc.wantIP) || len(leaf.DNSNames) != 0) {
				t.Errorf("SAN DNS %v IP %v, want IP %s", leaf.DNSNames, leaf.IPAddresses, tc.wantIP)
			}
			if leaf.IsCA {
				t.Error("leaf is a CA")
			}
			if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("leaf key %T, want ECDSA P-256", leaf.PublicKey)
			}
			if _, ok := c.PrivateKey.(*ecdsa.PrivateKey); !ok {
				t.Errorf("private key %T", c.PrivateKey)
			}
			if got := leaf.NotAfter.Sub(now); got > validity || got < validity-time.Second {
				t.Errorf("NotAfter is now+%v, want now+%v", got, validity)
			}
			if leaf.NotBefore.After(now.Add(-59 * time.Minute)) {
				t.Errorf("NotBefore %v is not backdated", leaf.NotBefore)
			}
			if leaf.SerialNumber.BitLen() <= 64 {
				t.Errorf("serial has %d bits", leaf.SerialNumber.BitLen())
			}
		})
	}

	t.Run("two hosts get different certificates", func(t *testing.T) {
		a, err := m.Certificate("a.registry.test")
		if err != nil {
			t.Fatal(err)
		}
		b, err := m.Certificate("b.registry.test")
		if err != nil {
			t.Fatal(err)
		}
		if a == b || a.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 {
			t.Error("same certificate for two hosts")
		}
		again, err := m.Certificate("A.Registry.Test")
		if err != nil {
			t.Fatal(err)
		}
		if again != a {
			t.Error("case variant of a host was minted again")
		}
	})
	t.Run("invalid hosts", func(t *testing.T) {
		for _, host := range []string{"", "bad host", "a/b", "-x.test", "x..test", "evil\"name"} {
			if _, err := m.Certificate(host); !errors.Is(err, ErrInvalidLeafHost) {
				t.Errorf("Certificate(%q) = %v, want ErrInvalidLeafHost", host, err)
			}
		}
	})
}

func TestMinterNeverOutlivesCA(t *testing.T) {
	t.Parallel()
	now := time.Now()
	f := makeCAFixture(t, fixtureECKey(t), "PRIVATE KEY", true, now.Add(-time.Hour), now.Add(48*time.Hour))
	ca, err := LoadOrCreateCA(writeCAFixture(t, f))
	if err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewFakeClock(now)
	m := NewMinter(ca, MinterOptions{Now: clock.Now}) // default 7 days
	c, err := m.Certificate("registry.test")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Leaf.NotAfter.Equal(f.cert.NotAfter) {
		t.Errorf("leaf NotAfter %v, want the CA's %v", c.Leaf.NotAfter, f.cert.NotAfter)
	}
	if c.Leaf.NotBefore.Before(f.cert.NotBefore) {
		t.Errorf("leaf NotBefore %v precedes the CA's %v", c.Leaf.NotBefore, f.cert.NotBefore)
	}
	clock.Set(now.Add(72 * time.Hour))
	if _, err := m.Certificate("other.test"); err == nil {
		t.Error("minted past the CA's expiry")
	}
}

func TestMinterRenewsWithFakeClock(t *testing.T) {
	t.Parallel()
	start := time.Now()
	clock := testutil.NewFakeClock(start)
	m := NewMinter(mintTestCA(t), MinterOptions{Validity: 4 * 24 * time.Hour, Now: clock.Now})
	first, err := m.Certificate("registry.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		at       time.Duration
		wantSame bool
	}{
		{"fresh", time.Hour, true},
		{"half way", 2 * 24 * time.Hour, true},
		{"just before the last quarter", 3*24*time.Hour - time.Minute, true},
		{"in the last quarter", 3*24*time.Hour + time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.Set(start.Add(tc.at))
			c, err := m.Certificate("registry.test")
			if err != nil {
				t.Fatal(err)
			}
			if (c == first) != tc.wantSame {
				t.Errorf("same certificate = %v, want %v", c == first, tc.wantSame)
			}
			if d := clock.Now().Add(4 * 24 * time.Hour).Sub(c.Leaf.NotAfter); !tc.wantSame && (d < 0 || d >= time.Second) {
				t.Errorf("renewed leaf NotAfter %v", c.Leaf.NotAfter)
			}
		})
	}
}

func TestMinterOneMintForConcurrentHandshakes(t *testing.T) {
	t.Parallel()
	ca := mintTestCA(t)
	m := NewMinter(ca, MinterOptions{})
	const clients = 50

	for _, tc := range []struct {
		name, serverName, defaultHost, verifyAs string
	}{
		{name: "sni", serverName: "registry.test", defaultHost: "ignored.test", verifyAs: "registry.test"},
		{name: "no sni falls back to the tunnel host", serverName: "", defaultHost: "192.0.2.7", verifyAs: "192.0.2.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverConf := m.TLSConfig(tc.defaultHost)
			if serverConf.MinVersion != tls.VersionTLS12 || len(serverConf.NextProtos) != 2 || serverConf.NextProtos[0] != "h2" || serverConf.NextProtos[1] != "http/1.1" {
				t.Fatalf("config MinVersion %x NextProtos %v", serverConf.MinVersion, serverConf.NextProtos)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			start := make(chan struct{})
			errs := make(chan error, 2*clients)
			serials := make(chan string, clients)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // accept loop: one handshake per connection
				defer wg.Done()
				for range clients {
					conn, err := ln.Accept()
					if err != nil {
						errs <- err
						return
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer conn.Close()
						errs <- tls.Server(conn, serverConf).Handshake()
					}()
				}
			}()
			for range clients {
				conn, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				client := tls.Client(conn, &tls.Config{
					RootCAs: minterRoots(ca),
					// An IP-literal tunnel sends no SNI; verify the IP SAN
					// by hand, as a client dialling the IP would.
					ServerName:         tc.serverName,
					InsecureSkipVerify: tc.serverName == "",
					NextProtos:         []string{"h2", "http/1.1"},
				})
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer client.Close()
					<-start
					if err := client.Handshake(); err != nil {
						errs <- err
						return
					}
					st := client.ConnectionState()
					if st.NegotiatedProtocol != "h2" {
						errs <- errors.New("negotiated " + st.NegotiatedProtocol + ", want h2")
						return
					}
					serials <- st.PeerCertificates[0].SerialNumber.String()
					inter := x509.NewCertPool()
					for _, c := range st.PeerCertificates[1:] {
						inter.AddCert(c)
					}
					_, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: tc.verifyAs, Roots: minterRoots(ca), Intermediates: inter})
					errs <- err
				}()
			}
			close(start)
			wg.Wait()
			close(errs)
			close(serials)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			seen := map[string]bool{}
			for s := range serials {
				seen[s] = true
			}
			if len(seen) != 1 {
				t.Errorf("%d concurrent handshakes saw %d different leaves, want one minted for all", clients, len(seen))
			}
		})
	}
}

func TestMinterCacheIsBounded(t *testing.T) {
	t.Parallel()
	m := NewMinter(mintTestCA(t), MinterOptions{})
	for i := range maxCachedLeaves + 10 {
		if _, err := m.Certificate(net.IPv4(10, 0, byte(i>>8), byte(i)).String()); err != nil {
			t.Fatal(err)
		}
	}
	m.mu.Lock()
	n := len(m.cache)
	m.mu.Unlock()
	if n > maxCachedLeaves {
		t.Errorf("cache holds %d leaves, bound is %d", n, maxCachedLeaves)
	}
}
