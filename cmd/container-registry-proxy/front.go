package main

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"

	"github.com/gmarcy/container-registry-proxy/cache"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/internal/netguard"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/shim"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// front sends CONNECT and absolute-form requests (HTTPS_PROXY and
// HTTP_PROXY clients) to the shim and every other request to root.
func (a *app) front(root http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if shim.Handles(r) {
			a.shim.ServeHTTP(w, r)
			return
		}
		root.ServeHTTP(w, r)
	})
}

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
// the CA and setup scripts, /metrics, the admin gc, the other replicas'
// blob requests (peer, when advertised) and the status page at /. (/healthz and /readyz are answered before the access log.)
func rootHandler(registry, page, setup http.Handler, life *cache.Lifecycle, mt *metrics.Metrics, peer http.Handler) http.Handler {
	mux := http.NewServeMux()
	if peer != nil {
		mux.Handle(mirror.PeerPath, peer)
	}
	mux.Handle("/_admin/gc", adminGC(life))
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

// adminGC serves POST /_admin/gc from loopback: one eviction pass now
// (the gc subcommand beside a running proxy).
func adminGC(life *cache.Lifecycle) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr) //nolint:errcheck // an unparsable address is no loopback address
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || r.Method != http.MethodPost {
			http.Error(w, "POST from loopback only", http.StatusForbidden)
			return
		}
		rep, err := life.Collect(r.Context())
		switch {
		case errors.Is(err, storage.ErrEvictingElsewhere):
			http.Error(w, err.Error(), http.StatusConflict)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(rep); err != nil {
			logx.From(r.Context()).WithError(err).Debug("admin gc: answer cut short")
		}
	}
}
