package shim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// DefaultLeafValidity is how long a minted leaf certificate is valid when
// MinterOptions.Validity is zero: days, not years, since leaves are
// re-minted freely and nobody but the proxy holds their keys.
const DefaultLeafValidity = 7 * 24 * time.Hour

// maxCachedLeaves bounds the leaf cache: SNI names come from clients, so
// the number of distinct hosts must not grow memory without limit.
const maxCachedLeaves = 1024

// leafBackdate is subtracted from NotBefore to tolerate clients whose clock
// is slightly behind ours.
const leafBackdate = time.Hour

// ErrInvalidLeafHost is returned by Minter.Certificate for a host that is
// neither a DNS name nor an IP literal.
var ErrInvalidLeafHost = errors.New("invalid host for a certificate")

// dnsNameRe is a permissive DNS name (labels of letters, digits, '-' and
// '_', which some internal registries use).
var dnsNameRe = regexp.MustCompile(`^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$`)

// MinterOptions tunes a Minter; the zero value is usable.
type MinterOptions struct {
	// Validity is the lifetime of a leaf (DefaultLeafValidity when zero or
	// negative); it never extends past the CA's own expiry.
	Validity time.Duration
	// Now is the clock (time.Now when nil); tests replace it.
	Now func() time.Time
}

// Minter issues the leaf certificates the shim presents to intercepted
// clients. Leaves are minted on demand, cached per host and re-minted when
// less than a quarter of their lifetime remains; concurrent requests for
// the same host share one mint, so a burst of tunnels costs one key
// generation.
type Minter struct {
	ca       *CA
	validity time.Duration
	now      func() time.Time

	group singleflight.Group

	mu    sync.Mutex
	cache map[string]leafEntry
}

// leafEntry is a cached leaf and the time from which it is re-minted.
type leafEntry struct {
	cert    *tls.Certificate
	renewAt time.Time
}

// NewMinter returns a Minter signing with ca.
func NewMinter(ca *CA, opts MinterOptions) *Minter {
	if opts.Validity <= 0 {
		opts.Validity = DefaultLeafValidity
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Minter{ca: ca, validity: opts.Validity, now: opts.Now, cache: make(map[string]leafEntry)}
}

// Certificate returns a certificate for host (a DNS name or an IP literal;
// a port, brackets and a trailing dot are ignored) whose chain is the leaf
// followed by the CA. It is cached per lower-cased host.
func (m *Minter) Certificate(host string) (*tls.Certificate, error) {
	name, err := normalizeLeafHost(host)
	if err != nil {
		return nil, err
	}
	if c := m.cached(name, m.now()); c != nil {
		return c, nil
	}
	v, err, _ := m.group.Do(name, func() (any, error) {
		now := m.now()
		// Another caller may have finished minting between our cache
		// miss and entering this flight.
		if c := m.cached(name, now); c != nil {
			return c, nil
		}
		c, renewAt, err := m.mint(name, now)
		if err != nil {
			return nil, err
		}
		m.store(name, leafEntry{cert: c, renewAt: renewAt}, now)
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

// TLSConfig returns a server configuration presenting minted leaves: the
// certificate is chosen by the client's SNI, or defaultHost when the
// client sent none (a CONNECT to an IP literal). It offers h2 and
// HTTP/1.1 and requires TLS 1.2 or later.
func (m *Minter) TLSConfig(defaultHost string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			name := hello.ServerName
			if name == "" {
				name = defaultHost
			}
			if name == "" {
				return nil, fmt.Errorf("%w: client sent no server name and the tunnel has no host", ErrInvalidLeafHost)
			}
			return m.Certificate(name)
		},
	}
}

// cached returns the cached leaf for name when it is still fresh.
func (m *Minter) cached(name string, now time.Time) *tls.Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.cache[name]
	if !ok || !now.Before(e.renewAt) {
		return nil
	}
	return e.cert
}

// store caches a leaf, first dropping stale entries (and, when that is not
// enough, an arbitrary one) to keep the cache bounded.
func (m *Minter) store(name string, e leafEntry, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.cache[name]; !ok && len(m.cache) >= maxCachedLeaves {
		for k, old := range m.cache {
			if !now.Before(old.renewAt) {
				delete(m.cache, k)
			}
		}
		for k := range m.cache {
			if len(m.cache) < maxCachedLeaves {
				break
			}
			delete(m.cache, k)
		}
	}
	m.cache[name] = e
}

// mint creates a leaf for name valid from now, and returns it with the
// time from which it should be replaced.
func (m *Minter) mint(name string, now time.Time) (*tls.Certificate, time.Time, error) {
	caCert := m.ca.cert
	notAfter := now.Add(m.validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, time.Time{}, fmt.Errorf("minting certificate for %s: CA %q expired on %s", name, caCert.Subject.CommonName, caCert.NotAfter.UTC().Format(time.RFC3339))
	}
	notBefore := now.Add(-leafBackdate)
	if notBefore.Before(caCert.NotBefore) {
		notBefore = caCert.NotBefore
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("minting certificate for %s: %w", name, err)
	}
	serial, err := newSerialNumber()
	if err != nil {
		return nil, time.Time{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
		tmpl.Subject = pkix.Name{CommonName: name}
	} else {
		tmpl.DNSNames = []string{name}
		if len(name) <= 64 {
			tmpl.Subject = pkix.Name{CommonName: name}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, m.ca.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("minting certificate for %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("minting certificate for %s: %w", name, err)
	}
	renewAt := notAfter.Add(-notAfter.Sub(now) / 4)
	return &tls.Certificate{
		Certificate: [][]byte{der, caCert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, renewAt, nil
}

// normalizeLeafHost turns a host as found in CONNECT or SNI into the cache
// key and SAN: lower case, without port, brackets or trailing dot.
func normalizeLeafHost(host string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(host))
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	h = strings.TrimSuffix(h, ".")
	if ip := net.ParseIP(h); ip != nil {
		if v4 := ip.To4(); v4 != nil {
			return v4.String(), nil
		}
		return ip.String(), nil
	}
	if len(h) == 0 || len(h) > 253 || !dnsNameRe.MatchString(h) {
		return "", fmt.Errorf("%w: %q", ErrInvalidLeafHost, host)
	}
	return h, nil
}
