package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/netguard"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// maxIdleConnsPerHost keeps enough warm connections for parallel layer
// downloads from one registry or CDN.
const maxIdleConnsPerHost = 32

// newHTTPTransport builds the bottom of the stack: proxy from the
// environment, system roots plus the CA file, HTTP/2 unless disabled, the
// connect, response-header and idle-read/write timeouts, and the address
// policy (internal/netguard) every connection passes after DNS
// resolution: redirect hops, token realms and DNS answers reach internal
// addresses only at the endpoint's own address and port or in
// opts.AllowNetworks, and never the proxy's own listeners.
func newHTTPTransport(opts Options, ep *url.URL) (*http.Transport, error) {
	tlsConfig, err := newTLSConfig(opts)
	if err != nil {
		return nil, err
	}
	guard := netguard.New(netguard.Options{Endpoint: endpointTarget(ep), Allow: opts.AllowNetworks, Self: opts.Self})
	dial := guard.DialContext(&net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 30 * time.Second})
	t := &http.Transport{
		Proxy: guardedProxy(opts.Host, guard, http.ProxyFromEnvironment),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, forbidden(opts.Host, err)
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

// newTLSConfig trusts the system roots plus opts.CAFile.
func newTLSConfig(opts Options) (*tls.Config, error) {
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
	return &tls.Config{
		RootCAs:            roots,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: opts.Insecure, //nolint:gosec // G402: only when the operator asks for it for this upstream
	}, nil
}

// endpointTarget is the endpoint's host:port, the port defaulting to its
// scheme's.
func endpointTarget(ep *url.URL) string {
	return net.JoinHostPort(ep.Hostname(), portOf(ep))
}

// portOf is u's port, or its scheme's default.
func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "http") {
		return "80"
	}
	return "443"
}

// forbidden turns a refusal of the address policy into a 502 naming the
// upstream, the refused target and why (its cause ErrForbiddenAddress);
// other errors pass unchanged. Being an *oci.Error, it reaches the client
// as it is, also from a token realm.
func forbidden(upstream string, err error) error {
	var re *netguard.RefusedError
	if !errors.As(err, &re) {
		return err
	}
	where := re.Target
	if re.Addr.IsValid() && re.Addr.String() != re.Target {
		where += " (" + re.Addr.String() + ")"
	}
	return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, ErrForbiddenAddress, "upstream %s: refused to connect to %s: it is %s", upstream, where, re.Reason)
}

// guardedProxy is proxy (the environment's HTTPS_PROXY, HTTP_PROXY and
// NO_PROXY) under the address policy: a forward proxy it names is trusted
// wherever it lives (the operator named it), and since that proxy, not
// this process, resolves and dials the request's host, the host is judged
// here as far as it can be: IP addresses in every spelling, localhost and
// the metadata services' names.
func guardedProxy(upstream string, guard *netguard.Guard, proxy func(*http.Request) (*url.URL, error)) func(*http.Request) (*url.URL, error) {
	return func(req *http.Request) (*url.URL, error) {
		pu, err := proxy(req)
		if err != nil || pu == nil {
			return pu, err
		}
		guard.Trust(net.JoinHostPort(pu.Hostname(), proxyPort(pu)))
		if err := guard.CheckTarget(req.Context(), net.JoinHostPort(req.URL.Hostname(), portOf(req.URL))); err != nil {
			return nil, forbidden(upstream, err)
		}
		return pu, nil
	}
}

// proxyPort is the port net/http dials for forward proxy u.
func proxyPort(u *url.URL) string {
	switch p := u.Port(); {
	case p != "":
		return p
	case strings.EqualFold(u.Scheme, "https"):
		return "443"
	case strings.HasPrefix(strings.ToLower(u.Scheme), "socks5"):
		return "1080"
	}
	return "80"
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

// viaTransport adds the proxy's Via entry (netguard.Loop) to every
// request: each redirect hop and token request, so that a request that
// comes back to this proxy, by whatever address, is recognised.
type viaTransport struct {
	base http.RoundTripper
	loop *netguard.Loop
}

// RoundTrip implements http.RoundTripper.
func (t *viaTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Set("Via", t.loop.Via(req.Context()))
	return t.base.RoundTrip(r)
}
