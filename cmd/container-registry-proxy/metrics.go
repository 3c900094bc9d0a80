package main

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/sirupsen/logrus"
)

// metricsPath is where the metrics are served, on the main listener and
// on --metrics-listen.
const metricsPath = "/metrics"

// newMetrics creates the process's metrics (docs/metrics.md) with a series
// for every configured upstream.
func newMetrics(cfg *config.Config, tokens *auth.TokenCache) *metrics.Metrics {
	mt := metrics.New(metrics.Options{TokenRequests: tokens.Requests})
	for _, rc := range cfg.Upstreams() {
		mt.AddUpstream(oci.CanonicalHost(rc.Host))
	}
	return mt
}

// instrumentMirror sets the mirror options that report to mt and the
// rate-limit threshold (rateLimit.minRemaining).
func instrumentMirror(o *mirror.Options, cfg *config.Config, mt *metrics.Metrics) {
	o.Observer = mt
	o.RateLimitMinRemaining = int64(cfg.RateLimit.MinRemaining)
}

// instrumentLifecycle reports evictions and the index's totals to mt; it
// runs before the evictor is created.
func instrumentLifecycle(l *lifecycle, mt *metrics.Metrics) {
	if mt == nil {
		return
	}
	l.opts.OnPass = func(rep storage.Report) {
		for _, e := range rep.Removed {
			mt.Evicted(evictionReason(rep.Reason[e.Digest]), e.Size)
		}
	}
	idx := l.idx
	mt.SetCacheUsage(func() (int64, int64) {
		// The index keeps both totals: one small read per scrape.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		bytes, count, _ := idx.Usage(ctx)
		return bytes, count
	})
}

// evictionReason is the crp_evictions_total label of a storage reason.
func evictionReason(r string) string {
	if r == storage.ReasonManifest {
		return "manifest"
	}
	return r
}

// withMetrics serves GET /metrics (origin-form) from mt and passes every
// other request to next.
func withMetrics(next http.Handler, mt *metrics.Metrics) http.Handler {
	h := mt.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == metricsPath && r.Method != http.MethodConnect && !r.URL.IsAbs() {
			h.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// serveMetrics starts the --metrics-listen listener, serving only
// /metrics and health's /healthz and /readyz, until ctx ends; without the
// setting it does nothing.
func serveMetrics(ctx context.Context, cfg *config.Config, log *logrus.Logger, mt *metrics.Metrics, health http.Handler) error {
	if cfg.MetricsListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return &configError{err: &config.KeyError{Key: "metricsListen", Value: cfg.MetricsListen, Err: err}}
	}
	mux := http.NewServeMux()
	mux.Handle(metricsPath, mt.Handler())
	mux.Handle("/healthz", health)
	mux.Handle("/readyz", health)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.WithError(err).Error("metrics listener stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	log.WithField("listen", ln.Addr().String()).Info("serving /metrics on the metrics listener")
	return nil
}
