package main

import (
	"net/http"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/shim"
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
