package main

import (
	"errors"
	"net/http"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/internal/netguard"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/shim"
)

// front sends CONNECT and absolute-form requests (HTTPS_PROXY and
// HTTP_PROXY clients) to the shim and every other request to root.
func (a *app) front(root http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if shim.Handles(r) {
			a.toShim(w, r)
			return
		}
		root.ServeHTTP(w, r)
	})
}

// toShim hands r to the shim under the failed-login limit of the proxy
// users (auth.Guard): a Proxy-Authorization from an address past it is
// answered 429 with Retry-After unchecked, and one the shim refuses (407)
// counts as a failure.
func (a *app) toShim(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Proxy-Authorization") == "" {
		a.shim.ServeHTTP(w, r)
		return
	}
	if err := a.ups.guard.LoginBlocked(r); err != nil {
		logx.InfoFrom(r.Context()).Set("decision", "too-many-failed-logins")
		var oe *oci.Error
		if errors.As(err, &oe) && oe.RetryAfter != "" {
			w.Header().Set("Retry-After", oe.RetryAfter)
		}
		w.Header().Set("Connection", "close")
		http.Error(w, err.Error(), http.StatusTooManyRequests)
		return
	}
	sw := &statusWatch{ResponseWriter: w}
	a.shim.ServeHTTP(sw, r)
	if sw.status == http.StatusProxyAuthRequired {
		a.ups.guard.LoginFailed(r)
	}
}

// statusWatch records the status of an answer; Unwrap keeps the writer's
// Hijacker and Flusher reachable (http.ResponseController).
type statusWatch struct {
	http.ResponseWriter
	status int
}

func (s *statusWatch) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWatch) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// refuseLoops answers 508 Loop Detected to a request this proxy sent
// upstream itself (its Via entry, netguard.Loop): an upstream that
// redirects to the proxy through a load balancer or another name would
// otherwise make each hop a new fill. Other requests go to next with the
// proxies of this kind they came through in their context, so requests
// sent upstream on their behalf carry them on (a loop through several
// proxies is cut too).
func refuseLoops(loop *netguard.Loop, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loop.Looped(r.Header) {
			err := oci.Errorf(http.StatusLoopDetected, oci.CodeUnavailable, "request loop: this request was sent upstream by this proxy itself (its Via entry); an upstream redirected the proxy to itself")
			logx.From(r.Context()).WithError(err).Warn("request loop refused")
			oci.WriteError(w, r, err)
			return
		}
		if hops := netguard.Hops(r.Header); len(hops) > 0 {
			r = r.WithContext(netguard.WithHops(r.Context(), hops))
		}
		next.ServeHTTP(w, r)
	})
}

// rootHandler serves the origin-form endpoints: the mirror under /v2/,
// the CA and setup scripts, /metrics, the admin gc (admin.go), the other
// replicas' blob requests (peer, when advertised) and the status page at
// /. (/healthz and /readyz are answered before the access log.)
func rootHandler(registry, page, setup, admin http.Handler, mt *metrics.Metrics, peer http.Handler) http.Handler {
	mux := http.NewServeMux()
	if peer != nil {
		mux.Handle(mirror.PeerPath, peer)
	}
	mux.Handle(adminGCPath, admin)
	mux.Handle("/ca.crt", setup)
	mux.Handle("/setup/", setup)
	mux.Handle("/v2/", registry)
	mux.Handle("/v2", registry)
	mux.Handle(metricsPath, mt.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			err := oci.Errorf(http.StatusNotFound, oci.CodeUnsupported, "not found: %s", r.URL.Path)
			logx.From(r.Context()).WithError(err).Debug("request refused")
			oci.WriteError(w, r, err)
			return
		}
		page.ServeHTTP(w, r)
	})
	return mux
}
