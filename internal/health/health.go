// Package health answers the proxy's liveness and readiness endpoints and
// asks them from the command line (the container image's HEALTHCHECK):
// /healthz says the process serves; /readyz that it can serve from its
// cache (the storage takes writes, the index is not being rebuilt).
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Paths of the endpoints.
const (
	PathLive  = "/healthz"
	PathReady = "/readyz"
)

// DefaultProbeTTL is how long a readiness probe's outcome is reused:
// probes of load balancers and kubelets every second cost one storage
// write every few.
const DefaultProbeTTL = 3 * time.Second

// Options say what readiness depends on. Nil funcs are always fine.
type Options struct {
	// Probe writes and removes a small file through the storage driver.
	Probe func(ctx context.Context) error
	// Rebuilding reports whether the cache index is being rebuilt.
	Rebuilding func() bool
	// Degraded says whether the proxy serves in a degraded mode, and
	// which (e.g. shared state unreachable): still ready, with the detail
	// in /readyz's answer.
	Degraded func() (bool, string)
	// ProbeTTL is how long a probe's outcome is reused. Default
	// DefaultProbeTTL.
	ProbeTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Checker answers /healthz and /readyz. It is safe for concurrent use.
type Checker struct {
	opts Options

	mu      sync.Mutex
	checked time.Time
	err     error
}

// New returns a Checker; defaults in one place.
func New(opts Options) *Checker {
	if opts.Probe == nil {
		opts.Probe = func(context.Context) error { return nil }
	}
	if opts.Rebuilding == nil {
		opts.Rebuilding = func() bool { return false }
	}
	if opts.Degraded == nil {
		opts.Degraded = func() (bool, string) { return false, "" }
	}
	if opts.ProbeTTL <= 0 {
		opts.ProbeTTL = DefaultProbeTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Checker{opts: opts}
}

// Ready returns nil when the proxy can serve from its cache, else why not.
// The storage probe runs at most once per ProbeTTL, bounded by 5s.
func (c *Checker) Ready(ctx context.Context) error {
	if c.opts.Rebuilding() {
		return errors.New("cache index is being rebuilt from the storage")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.opts.Now(); c.checked.IsZero() || now.Sub(c.checked) >= c.opts.ProbeTTL {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c.err = c.opts.Probe(pctx)
		cancel()
		c.checked = now
	}
	return c.err
}

func serveLive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

func (c *Checker) serveReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := c.Ready(r.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: " + strings.ReplaceAll(err.Error(), "\n", " ") + "\n"))
		return
	}
	if degraded, detail := c.opts.Degraded(); degraded {
		_, _ = w.Write([]byte("ok, degraded: " + strings.ReplaceAll(detail, "\n", " ") + "\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Handler serves /healthz and /readyz alone (e.g. on a metrics listener).
func (c *Checker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(PathLive, serveLive)
	mux.HandleFunc(PathReady, c.serveReady)
	return mux
}

// Wrap answers origin-form GET/HEAD /healthz and /readyz before next
// (outside the access log that next is wrapped in: probes every second
// would drown it).
func (c *Checker) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !r.URL.IsAbs() {
			switch r.URL.Path {
			case PathLive:
				serveLive(w, r)
				return
			case PathReady:
				c.serveReady(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Ask GETs path (PathLive or PathReady) of the proxy at base (never
// through a proxy of the environment) and returns its answer's text; an
// answer other than 200 is an error carrying it.
func Ask(ctx context.Context, base, path string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return "", fmt.Errorf("%s: reading the answer: %w", path, err)
	}
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return msg, fmt.Errorf("%s: %s %s", path, resp.Status, msg)
	}
	return msg, nil
}
