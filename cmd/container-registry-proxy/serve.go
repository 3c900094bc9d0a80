package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/shim"
	"github.com/sirupsen/logrus"
)

// serve builds every part and runs the listener until ctx ends; SIGHUP
// reloads the credentials and the access policy from reread.
func serve(ctx context.Context, cfg *config.Config, log *logrus.Logger, reread func() (*config.Config, error)) error {
	app, err := build(ctx, cfg, log)
	if err != nil {
		return err
	}
	app.reload.load = reread
	reloadOnHangup(ctx, app.reload, log)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return &configError{errors.Join(fmt.Errorf("--listen %s: %w", cfg.Listen, err), app.close())}
	}
	return serveOn(ctx, shim.SendTimeoutListener(ln, time.Duration(cfg.Client.SendTimeout)), app, log, cfg)
}

// serveOn runs the HTTP server on ln (which upstream connections never
// reach from then on) until ctx ends, then shuts down
// gracefully within cfg.ShutdownGrace: the listener closes at once,
// requests and fills in progress may finish; after the grace period the
// remaining connections are closed and unfinished fills abandoned (their
// uploads removed: nothing partial is kept). It returns nil after a
// shutdown, graceful or not.
func serveOn(ctx context.Context, ln net.Listener, app *app, log *logrus.Logger, cfg *config.Config) error {
	srv := &http.Server{
		Handler:           app.health.Wrap(logx.AccessLog(log, app.handler)),
		ReadHeaderTimeout: time.Duration(cfg.Client.HeaderTimeout),
		IdleTimeout:       time.Duration(cfg.Client.KeepaliveTimeout),
		ErrorLog:          logx.ServerLog(log, "http: "),
	}
	app.out.self.Add(ln.Addr())
	log.WithField("listen", ln.Addr().String()).WithField("version", Version).Info("container-registry-proxy listening")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	grace := time.Duration(cfg.ShutdownGrace)
	if grace <= 0 {
		grace = 30 * time.Second
	}
	log.WithField("grace", grace.String()).Info("shutting down: no new connections; requests and fills in progress may finish")
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if !shutdownWithin(sctx, srv, app, log) {
		log.WithField("grace", grace.String()).Warn("shutdown: grace period over: closing the remaining connections and abandoning unfinished fills (nothing partial is kept)")
		abandon(srv, app, log)
	}
	if err := app.close(); err != nil {
		log.WithError(err).Warn("shutdown: closing the cache index")
	}
	log.WithField("dur_ms", time.Since(start).Milliseconds()).Info("shut down")
	return nil
}

// abandon ends what a graceful shutdown could not: connections are
// closed, fills abandoned (their uploads removed), and waited for.
func abandon(srv *http.Server, app *app, log *logrus.Logger) {
	app.mirror.Abandon()
	if err := srv.Close(); err != nil {
		log.WithError(err).Debug("shutdown: closing the listener")
	}
	if err := app.shim.Close(); err != nil {
		log.WithError(err).Debug("shutdown: closing intercepted connections")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.mirror.Drain(ctx); err != nil {
		log.WithError(err).Error("shutdown: fills did not end after they were abandoned")
	}
}

// shutdownWithin stops the listener and the intercepted connections, then
// lets fills end, all within ctx; it reports whether everything ended in
// time.
func shutdownWithin(ctx context.Context, srv *http.Server, app *app, log *logrus.Logger) bool {
	errs := make(chan error, 2)
	go func() { errs <- srv.Shutdown(ctx) }()
	go func() { errs <- app.shim.Shutdown(ctx) }()
	clean := true
	for range 2 {
		if err := <-errs; err != nil {
			log.WithError(err).Debug("shutdown: connections still open")
			clean = false
		}
	}
	if !clean {
		return false
	}
	if err := app.mirror.Drain(ctx); err != nil {
		log.WithError(err).Debug("shutdown: fills still running")
		return false
	}
	return true
}
