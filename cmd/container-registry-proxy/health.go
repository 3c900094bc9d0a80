package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// readyTTL is how long a storage probe's outcome is reused: probes of
// load balancers and kubelets every second cost one write every few.
const readyTTL = 3 * time.Second

// health answers /healthz (the process serves) and /readyz (the storage
// is writable and the cache index is loaded).
type health struct {
	// probe writes and removes a small file through the storage driver.
	probe func(ctx context.Context) error
	// rebuilding reports whether the index is being rebuilt.
	rebuilding func() bool
	now        func() time.Time

	mu      sync.Mutex
	checked time.Time
	err     error
}

// newHealth returns the health endpoints of the proxy with this store and
// lifecycle: the storage probe writes under _health/ (a name the cache
// layout never uses).
func newHealth(store *storage.Store, life *lifecycle) *health {
	h := &health{now: time.Now, rebuilding: func() bool { return false }}
	if life != nil {
		h.rebuilding = life.rebuilding.Load
	}
	if store != nil {
		h.probe = storageProbe(store)
	}
	return h
}

// storageProbe writes a few bytes to /_health/<random> and removes them.
func storageProbe(store *storage.Store) func(ctx context.Context) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	path := "/_health/probe-" + hex.EncodeToString(b[:])
	return func(ctx context.Context) error {
		d := store.Driver()
		if err := d.PutContent(ctx, path, []byte("ok\n")); err != nil {
			return fmt.Errorf("storage not writable: %w", err)
		}
		if err := d.Delete(ctx, path); err != nil {
			return fmt.Errorf("storage not writable: removing the probe: %w", err)
		}
		return nil
	}
}

// ready returns nil when the proxy can serve from its cache, else why not.
func (h *health) ready(ctx context.Context) error {
	if h.rebuilding() {
		return errors.New("cache index is being rebuilt from the storage")
	}
	if h.probe == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if now := h.now(); h.checked.IsZero() || now.Sub(h.checked) >= readyTTL {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		h.err = h.probe(pctx)
		cancel()
		h.checked = now
	}
	return h.err
}

func (h *health) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, "ok\n")
}

func (h *health) serveReadyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := h.ready(r.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "not ready: "+oneLine(err)+"\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// Handler serves /healthz and /readyz alone (e.g. on a metrics listener).
func (h *health) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", h.serveHealthz)
	mux.HandleFunc("/readyz", h.serveReadyz)
	return mux
}

// wrap answers origin-form GET/HEAD /healthz and /readyz before next, and
// outside the access log that next is wrapped in: probes every second
// would drown it.
func (h *health) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !r.URL.IsAbs() {
			switch r.URL.Path {
			case "/healthz":
				h.serveHealthz(w, r)
				return
			case "/readyz":
				h.serveReadyz(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
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
	path, base := "/healthz", ""
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--ready":
			path = "/readyz"
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
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Get(strings.TrimSuffix(base, "/") + path)
	if err != nil {
		fmt.Fprintf(stderr, "container-registry-proxy healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "container-registry-proxy healthcheck: %s: %s %s\n", path, resp.Status, msg)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", path, msg)
	return 0
}
