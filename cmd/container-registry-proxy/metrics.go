package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/metrics"
	"github.com/gmarcy/container-registry-proxy/internal/netguard"
	"github.com/gmarcy/container-registry-proxy/oci"
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

// serveMetrics starts the --metrics-listen listener, serving only
// /metrics, health's /healthz and /readyz and the admin gc (which needs
// its token there too), until ctx ends; without the setting it does
// nothing. Its address joins self, which upstream connections never reach.
func serveMetrics(ctx context.Context, cfg *config.Config, log *logrus.Logger, mt *metrics.Metrics, health, admin http.Handler, self *netguard.Self) error {
	if cfg.MetricsListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return &configError{err: &config.KeyError{Key: "metricsListen", Value: cfg.MetricsListen, Err: err}}
	}
	self.Add(ln.Addr())
	mux := http.NewServeMux()
	mux.Handle(metricsPath, mt.Handler())
	mux.Handle("/healthz", health)
	mux.Handle("/readyz", health)
	mux.Handle(adminGCPath, admin)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("metrics listener stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		if err := srv.Close(); err != nil {
			log.WithError(err).Debug("closing the metrics listener")
		}
	}()
	log.WithField("listen", ln.Addr().String()).Info("serving /metrics on the metrics listener")
	return nil
}
