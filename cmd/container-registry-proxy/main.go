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
	"runtime"
	"runtime/debug"
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
	if len(args) > 0 {
		switch args[0] {
		case "gc", "du":
			return runTool(args[0], args[1:], env, stdout, stderr)
		case "warm":
			return runWarm(args[1:], env, stdout, stderr)
		case "healthcheck":
			return runHealthcheck(args[1:], env, stdout, stderr)
		case "version":
			args = []string{"--version"}
		}
	}
	for _, a := range args {
		if a == "--version" {
			fmt.Fprintln(stdout, versionLine())
			return 0
		}
	}
	cfg, err := config.Load(args, env)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: container-registry-proxy [flags]\n       container-registry-proxy warm|gc|du|healthcheck [flags] (--help for each)\n\n%s", config.Usage())
		return 0
	}
	if err == nil {
		err = needDriver(cfg.StorageDriverName())
	}
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy: configuration error: %s\n", oneLine(err))
		return 2
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reread := func() (*config.Config, error) { return config.Load(args, env) }
	if err := serve(ctx, cfg, log, reread); err != nil {
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
		app.life.Close()
		return &configError{fmt.Errorf("--listen %s: %w", cfg.Listen, err)}
	}
	return serveOn(ctx, shim.SendTimeoutListener(ln, time.Duration(cfg.Client.SendTimeout)), app, log, cfg)
}

// serveOn runs the HTTP server on ln until ctx ends, then shuts down
// gracefully within cfg.ShutdownGrace: the listener closes at once,
// requests and fills in progress may finish; after the grace period the
// remaining connections are closed and unfinished fills abandoned (their
// uploads removed: nothing partial is kept). It returns nil after a
// shutdown, graceful or not.
func serveOn(ctx context.Context, ln net.Listener, app *app, log *logrus.Logger, cfg *config.Config) error {
	srv := &http.Server{
		Handler:           newHealth(app.store, app.life).wrap(logx.AccessLog(log, app.handler)),
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
	grace := time.Duration(cfg.ShutdownGrace)
	if grace <= 0 {
		grace = 30 * time.Second
	}
	log.WithField("grace", grace.String()).Info("shutting down: no new connections; requests and fills in progress may finish")
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	clean := shutdownWithin(sctx, srv, app, log)
	if !clean {
		log.WithField("grace", grace.String()).Warn("shutdown: grace period over: closing the remaining connections and abandoning unfinished fills (nothing partial is kept)")
		app.mirror.Abandon()
		_ = srv.Close()
		if app.shim != nil {
			_ = app.shim.Close()
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := app.mirror.Drain(dctx); err != nil {
			log.WithError(err).Error("shutdown: fills did not end after they were abandoned")
		}
		dcancel()
	}
	if app.life != nil {
		if err := app.life.Close(); err != nil {
			log.WithError(err).Warn("shutdown: closing the cache index")
		}
	}
	log.WithField("dur_ms", time.Since(start).Milliseconds()).Info("shut down")
	return nil
}

// shutdownWithin stops the listener and the intercepted connections, then
// lets fills end, all within ctx; it reports whether everything ended in
// time.
func shutdownWithin(ctx context.Context, srv *http.Server, app *app, log *logrus.Logger) bool {
	errs := make(chan error, 2)
	go func() { errs <- srv.Shutdown(ctx) }()
	go func() {
		if app.shim == nil {
			errs <- nil
			return
		}
		errs <- app.shim.Shutdown(ctx)
	}()
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

// versionLine is what --version prints: version, commit and Go version.
func versionLine() string {
	commit := Commit
	if commit == "unknown" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && s.Value != "" {
					commit = s.Value
				}
			}
		}
	}
	return fmt.Sprintf("container-registry-proxy %s (commit %s, %s %s/%s, storage drivers: %s)", Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, strings.Join(drivers(), " "))
}
