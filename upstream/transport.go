package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// maxIdleConnsPerHost keeps enough warm connections for parallel layer
// downloads from one registry or CDN.
const maxIdleConnsPerHost = 32

// newHTTPTransport builds the bottom of the stack: proxy from the
// environment, system roots plus the CA file, HTTP/2 unless disabled, and
// the connect, response-header and idle-read/write timeouts. endpointIP
// (the endpoint when it is an IP literal) is exempt from the dial guard.
func newHTTPTransport(opts Options, endpointIP net.IP) (*http.Transport, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: reading CA file %s: %w", opts.Host, opts.CAFile, err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream %s: CA file %s: %w", opts.Host, opts.CAFile, ErrNoCertificates)
		}
	}
	tlsConfig := &tls.Config{
		RootCAs:            roots,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: opts.Insecure, //nolint:gosec // G402: only when the operator asks for it for this upstream
	}
	dialer := &net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 30 * time.Second, Control: dialGuard(endpointIP)}
	t := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &deadlineConn{Conn: c, read: opts.ReadTimeout, write: opts.SendTimeout}, nil
		},
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   opts.ConnectTimeout,
		ResponseHeaderTimeout: opts.ReadTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          4 * maxIdleConnsPerHost,
		MaxIdleConnsPerHost:   maxIdleConnsPerHost,
		// Digests are over the identity bytes: never ask for gzip (and
		// never lose Content-Length to transparent decompression).
		DisableCompression: true,
		ForceAttemptHTTP2:  !opts.ForceHTTP11,
	}
	if opts.ForceHTTP11 {
		// A non-nil empty map turns HTTP/2 off.
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		tlsConfig.NextProtos = []string{"http/1.1"}
	}
	return t, nil
}

// dialGuard refuses to connect to link-local, multicast and unspecified
// addresses (cloud metadata services live at 169.254.169.254) unless it
// is the configured endpoint's own address: redirects and DNS answers come
// from upstream and must not steer the proxy there. Loopback and private
// addresses stay allowed — private registries live there.
func dialGuard(allowed net.IP) func(network, address string, _ syscall.RawConn) error {
	return func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return nil
		}
		ip := net.ParseIP(host)
		if ip == nil || (allowed != nil && ip.Equal(allowed)) {
			return nil
		}
		if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() ||
			ip.IsMulticast() || ip.IsUnspecified() {
			return fmt.Errorf("%w: %s", ErrForbiddenAddress, ip)
		}
		return nil
	}
}

// deadlineConn gives each Read and Write its own deadline, so a timeout
// bounds the silence between two successive reads (or writes) — nginx's
// proxy_read_timeout / proxy_send_timeout — rather than a whole transfer.
// An idle keep-alive connection therefore closes after the read timeout.
type deadlineConn struct {
	net.Conn
	read, write time.Duration
}

// Read implements net.Conn.
func (c *deadlineConn) Read(p []byte) (int, error) {
	if c.read > 0 {
		if err := c.SetReadDeadline(time.Now().Add(c.read)); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

// Write implements net.Conn.
func (c *deadlineConn) Write(p []byte) (int, error) {
	if c.write > 0 {
		if err := c.SetWriteDeadline(time.Now().Add(c.write)); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(p)
}
