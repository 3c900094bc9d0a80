package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/gmarcy/container-registry-proxy/cache"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/health"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// newHealth returns the health endpoints of the proxy with this store and
// cache lifecycle: readiness writes and removes a probe through the
// storage driver, and waits for an index rebuild; a replica whose Redis is
// unreachable stays ready and says it serves degraded.
func newHealth(store *storage.Store, life *cache.Lifecycle, c *replicas) *health.Checker {
	return health.New(health.Options{Probe: store.Probe, Rebuilding: life.Rebuilding, Degraded: c.degraded})
}

// localURL is the base URL of the proxy listening on listen, as seen from
// this host: a wildcard address is reached on loopback.
func localURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen %q: %w", listen, err)
	}
	if port == "0" || port == "" {
		return "", fmt.Errorf("listen %q: no fixed port to reach the proxy on", listen)
	}
	if host == "" || host == "0.0.0.0" || host == "::" || host == "[::]" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// runHealthcheck is the healthcheck subcommand (the container image's
// HEALTHCHECK): GET /healthz (/readyz with --ready) of the proxy that the
// configuration describes, exit 0 on 200, 1 otherwise, 2 on bad arguments.
func runHealthcheck(args []string, env func(string) string, stdout, stderr io.Writer) int {
	path, base := health.PathLive, ""
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--ready":
			path = health.PathReady
		case a == "--url" && i+1 < len(args):
			i++
			base = args[i]
		case strings.HasPrefix(a, "--url="):
			base = strings.TrimPrefix(a, "--url=")
		case a == "-h" || a == "--help":
			fmt.Fprintln(stdout, "Usage: container-registry-proxy healthcheck [--ready] [--url http://host:port] [--config FILE] [--listen ADDR]\n\nGET /healthz (/readyz with --ready) of the running proxy; exit 0 when it answers 200, else 1.")
			return 0
		default:
			rest = append(rest, a)
		}
	}
	if base == "" {
		cfg, err := config.Load(rest, env)
		if err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy healthcheck: configuration error: %s\n", oneLine(err))
			return 2
		}
		if base, err = localURL(cfg.Listen); err != nil {
			fmt.Fprintf(stderr, "container-registry-proxy healthcheck: %v\n", err)
			return 2
		}
	}
	msg, err := health.Ask(context.Background(), base, path)
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy healthcheck: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", path, msg)
	return 0
}
