package shim

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// Bounds of the pass-through transports: generous for the response header
// (a registry may take minutes to commit a large pushed layer), usual for
// the rest.
const (
	forwardDialTimeout     = 30 * time.Second
	forwardKeepAlive       = 30 * time.Second
	forwardTLSTimeout      = 30 * time.Second
	forwardHeaderTimeout   = 5 * time.Minute
	forwardIdleConnTimeout = 90 * time.Second
	forwardIdlePerHost     = 16
)

// newRoute builds the route of an intercepted host: namespace, the
// pass-through endpoint and a transport that verifies it.
func newRoute(namespace, endpoint, caFile string, insecure bool) (*hostRoute, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("%w: endpoint %q: %w", ErrInvalidOptions, endpoint, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%w: endpoint %q: want http(s)://host[:port] without credentials", ErrInvalidOptions, endpoint)
	}
	rt, err := newForwardTransport(caFile, insecure)
	if err != nil {
		return nil, err
	}
	return &hostRoute{namespace: namespace, base: u, rt: rt}, nil
}

// newForwardTransport returns the transport of one pass-through route: the
// system's roots plus those in caFile, verification skipped only when
// insecure.
func newForwardTransport(caFile string, insecure bool) (*http.Transport, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile) //nolint:gosec // G304: the operator names this CA file; reading it is the point
		if err != nil {
			return nil, fmt.Errorf("%w: CA file: %w", ErrInvalidOptions, err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: CA file %s: no PEM certificates", ErrInvalidOptions, caFile)
		}
	}
	return &http.Transport{
		Proxy:       http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{Timeout: forwardDialTimeout, KeepAlive: forwardKeepAlive}).DialContext,
		TLSClientConfig: &tls.Config{
			RootCAs:            roots,
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: insecure, //nolint:gosec // G402: only for a registry the operator marked insecure
		},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   forwardTLSTimeout,
		ResponseHeaderTimeout: forwardHeaderTimeout,
		IdleConnTimeout:       forwardIdleConnTimeout,
		MaxIdleConnsPerHost:   forwardIdlePerHost,
	}, nil
}

// closeIdleRoutes closes the idle pass-through connections.
func (s *Shim) closeIdleRoutes() {
	for _, rt := range s.routes {
		rt.rt.CloseIdleConnections()
	}
}

// forward proxies r to the endpoint of target (a canonical intercepted
// host) with verified TLS, unchanged: the client's own Authorization goes
// along, Proxy-Authorization does not.
func (s *Shim) forward(w http.ResponseWriter, r *http.Request, target string) {
	route := s.routes[target]
	if route == nil {
		s.fail(w, r, oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "no route to %s", target))
		return
	}
	base := route.base
	logx.InfoFrom(r.Context()).SetCache("PASS")
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = base.Scheme
			pr.Out.URL.Host = base.Host
			pr.Out.Host = base.Host
			pr.Out.Header.Del("Proxy-Authorization")
		},
		Transport:     route.rt,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			relocate(resp, base, target)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.fail(w, r, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "forwarding to %s failed", target))
		},
	}
	rp.ServeHTTP(w, r)
}

// relocate points absolute Location headers that name the endpoint back
// at the host the client asked for, so its next request (an upload URL)
// comes back through the tunnel.
func relocate(resp *http.Response, base *url.URL, target string) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return
	}
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() || !strings.EqualFold(u.Host, base.Host) {
		return
	}
	host := target
	if target == oci.DockerHub {
		host = oci.DockerHubAPI
	}
	u.Scheme, u.Host = "https", host
	resp.Header.Set("Location", u.String())
}
