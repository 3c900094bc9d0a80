// Command container-registry-proxy is a caching proxy for container
// images: a pull-through mirror for many upstream registries (and, with
// the shim, an HTTPS_PROXY interceptor) on one port.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/shim"
	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
)

// Version, Commit are set with -ldflags at build time.
var (
	Version = "dev"
	Commit  = "unknown"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is main without os.Exit: it returns the exit code (0 on a clean
// shutdown, 1 on a runtime failure, 2 on a configuration error).
func run(args []string, env func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "gc" || args[0] == "du") {
		return runTool(args[0], args[1:], env, stdout, stderr)
	}
	for _, a := range args {
		if a == "--version" {
			fmt.Fprintf(stdout, "container-registry-proxy %s (commit %s)\n", Version, Commit)
			return 0
		}
	}
	cfg, err := config.Load(args, env)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: container-registry-proxy [flags]\n\n%s", config.Usage())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy: configuration error: %s\n", oneLine(err))
		return 2
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.WithError(err).Error("container-registry-proxy stopped")
		var ce *configError
		if errors.As(err, &ce) {
			return 2
		}
		return 1
	}
	return 0
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

// configError marks a start-up failure caused by the configuration (exit 2).
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

func newLogger(cfg *config.Config, out io.Writer) *logrus.Logger {
	log := logrus.New()
	log.SetOutput(out)
	if cfg.LogFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	} else {
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	}
	if cfg.Debug {
		log.SetLevel(logrus.DebugLevel)
	}
	return log
}

// serve builds every part and runs the listener until ctx ends.
func serve(ctx context.Context, cfg *config.Config, log *logrus.Logger) error {
	app, err := build(ctx, cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		app.life.Close()
		return &configError{fmt.Errorf("--listen %s: %w", cfg.Listen, err)}
	}
	return serveOn(ctx, shim.SendTimeoutListener(ln, time.Duration(cfg.Client.SendTimeout)), app, log, cfg)
}

// serveOn runs the HTTP server on ln until ctx ends, then shuts down
// gracefully.
func serveOn(ctx context.Context, ln net.Listener, app *app, log *logrus.Logger, cfg *config.Config) error {
	srv := &http.Server{
		Handler:           logx.AccessLog(log, app.handler),
		ReadHeaderTimeout: time.Duration(cfg.Client.HeaderTimeout),
		IdleTimeout:       time.Duration(cfg.Client.KeepaliveTimeout),
		ErrorLog:          stdlog.New(log.WriterLevel(logrus.DebugLevel), "http: ", 0),
	}
	log.WithField("listen", ln.Addr().String()).WithField("version", Version).Info("container-registry-proxy listening")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if app.shim != nil {
		if err := app.shim.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutdown of intercepted connections: %w", err)
		}
	}
	if err := app.mirror.Drain(sctx); err != nil {
		log.WithError(err).Warn("shutdown: abandoning fills that did not finish in time; nothing partial is kept")
	}
	if app.life != nil {
		if err := app.life.Close(); err != nil {
			log.WithError(err).Warn("shutdown: closing the cache index")
		}
	}
	return nil
}
