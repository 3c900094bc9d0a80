package shim

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
)

// handleAbsolute serves absolute-form requests (HTTP_PROXY users):
// registries we cache are answered by the mirror, other plain-HTTP URLs
// are forwarded under the same address rules as tunnels.
func (s *Shim) handleAbsolute(w http.ResponseWriter, r *http.Request) {
	info := logx.InfoFrom(r.Context())
	user, ok := s.proxyUser(w, r)
	if !ok {
		return
	}
	if user != "" {
		r = r.WithContext(auth.WithClient(r.Context(), auth.Client{User: user}))
	}
	if r.URL.Scheme != "http" {
		plainError(w, http.StatusBadRequest, "only http:// URLs can be proxied in absolute form; use CONNECT for https")
		return
	}
	hostport := r.URL.Host
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(strings.Trim(r.URL.Hostname(), "[]"), "80")
	}
	canon := CanonicalTarget(strings.TrimSuffix(hostport, ":80"))
	if rt := s.routes[canon]; rt != nil && rt.namespace != "" {
		info.Set("forward", canon)
		s.route(w, rewrite(r, r.URL.Path), canon)
		return
	}
	policy := s.policy
	policy.Intercepted = nil
	policy.AllowPorts = append([]int{80}, policy.AllowPorts...)
	dec, reason, err := Decide(hostport, policy)
	if err != nil {
		plainError(w, http.StatusBadRequest, err.Error())
		return
	}
	info.Set("forward", hostport)
	info.Set("decision", dec.String())
	if dec != Tunnel {
		plainError(w, http.StatusForbidden, r.Method+" "+r.URL.Host+" refused: "+reason)
		return
	}
	s.forwardPlain(w, r)
}

// forwardPlain proxies a plain-HTTP absolute-form request to its host,
// dialled under the tunnels' address rules.
func (s *Shim) forwardPlain(w http.ResponseWriter, r *http.Request) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialTunnel(ctx, addr, s.opts.Tunnel)
		},
		ResponseHeaderTimeout: s.opts.Tunnel.ReadTimeout,
	}
	defer tr.CloseIdleConnections()
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.Out.Header.Del("Proxy-Authorization") },
		Transport: tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			plainError(w, http.StatusBadGateway, "forwarding "+r.URL.Host+": "+err.Error())
		},
	}
	rp.ServeHTTP(w, r)
}
