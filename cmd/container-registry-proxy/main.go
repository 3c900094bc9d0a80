// Command container-registry-proxy is a caching proxy for container
// images: a pull-through mirror for many upstream registries (and, with
// the shim, an HTTPS_PROXY interceptor) on one port.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/gmarcy/container-registry-proxy/config"
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
	syscall.Umask(fileMask(cfg))
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

// fileMask is the process's umask: what the proxy writes (cache files
// through every storage driver, the index, the CA, spool files) is
// readable by its user only, or its group too with cache.groupReadable,
// whatever umask it was started with — private layers must not be
// world-readable on a shared host.
func fileMask(cfg *config.Config) int {
	if cfg.Cache.GroupReadable {
		return 0o027
	}
	return 0o077
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
