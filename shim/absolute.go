package shim

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"

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
	t, err := ParseTarget(r.URL.Host, 80)
	if err != nil {
		plainError(w, http.StatusBadRequest, err.Error())
		return
	}
	key := t.String()
	if t.Port == 80 {
		key = t.Host
	}
	canon := CanonicalTarget(key)
	if rt := s.routes[canon]; rt != nil && rt.namespace != "" {
		info.Set("forward", canon)
		// Checked before rewrite, which keeps the decoded path only.
		if err := checkPath(r.URL); err != nil {
			s.fail(w, r, err)
			return
		}
		s.route(w, rewrite(r, r.URL.Path), canon)
		return
	}
	policy := s.policy
	policy.Intercepted, policy.ByAddress = nil, nil
	policy.AllowPorts = append([]int{80}, policy.AllowPorts...)
	v, err := Decide(t.String(), policy)
	if err != nil {
		plainError(w, http.StatusBadRequest, err.Error())
		return
	}
	info.Set("forward", t.String())
	info.Set("decision", v.Decision.String())
	if v.Decision != Tunnel {
		plainError(w, http.StatusForbidden, r.Method+" "+r.URL.Host+" refused: "+v.Reason)
		return
	}
	r = r.Clone(r.Context())
	r.URL.Host = t.String()
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
