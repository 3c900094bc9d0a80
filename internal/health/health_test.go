package health

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestReadyz: /readyz is 503 with a one-line reason while the index is
// rebuilt or the storage probe fails, and probes at most once per
// DefaultProbeTTL; /healthz is 200 whatever.
func TestReadyz(t *testing.T) {
	t.Parallel()
	var rebuilding atomic.Bool
	var probes atomic.Int32
	var probeErr atomic.Pointer[error]
	now := time.Unix(1_700_000_000, 0)
	h := New(Options{
		Now:        func() time.Time { return now },
		Rebuilding: rebuilding.Load,
		Probe: func(context.Context) error {
			probes.Add(1)
			if p := probeErr.Load(); p != nil {
				return *p
			}
			return nil
		},
	})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	srv := h.Wrap(next)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	steps := []struct {
		name    string
		setup   func()
		path    string
		status  int
		body    string
		probes  int32
		advance time.Duration
	}{
		{name: "healthz", path: "/healthz", status: 200, body: "ok\n"},
		{name: "ready", path: "/readyz", status: 200, body: "ok\n", probes: 1},
		{name: "cached", path: "/readyz", status: 200, body: "ok\n", probes: 1},
		{name: "probe fails but the answer is cached", setup: func() {
			err := errors.New("storage not writable: open /c/_health/x: read-only file system")
			probeErr.Store(&err)
		}, path: "/readyz", status: 200, probes: 1, advance: DefaultProbeTTL},
		{name: "probe fails", path: "/readyz", status: 503, body: "not ready: storage not writable: open /c/_health/x: read-only file system\n", probes: 2},
		{name: "healthz still fine", path: "/healthz", status: 200, body: "ok\n", probes: 2},
		{name: "rebuilding", setup: func() { probeErr.Store(nil); rebuilding.Store(true) }, path: "/readyz", status: 503, body: "not ready: cache index is being rebuilt from the storage\n", probes: 2, advance: DefaultProbeTTL},
		{name: "rebuilt", setup: func() { rebuilding.Store(false) }, path: "/readyz", status: 200, body: "ok\n", probes: 3},
		{name: "other paths pass", path: "/v2/", status: http.StatusTeapot, probes: 3},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.setup != nil {
				s.setup()
			}
			status, body := get(s.path)
			if status != s.status || (s.body != "" && body != s.body) || probes.Load() != s.probes {
				t.Fatalf("%s: %d %q after %d probes; want %d %q after %d", s.path, status, body, probes.Load(), s.status, s.body, s.probes)
			}
			now = now.Add(s.advance)
		})
	}
	t.Run("absolute-form requests go to the proxy", func(t *testing.T) {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://elsewhere.test/healthz", nil))
		if rec.Code != http.StatusTeapot {
			t.Fatalf("absolute /healthz answered %d by the health handler", rec.Code)
		}
	})
}

// TestReadiness: /readyz follows the storage probe (reused for ProbeTTL)
// and the index rebuild; /healthz only says the process serves; Ask reads
// both as the healthcheck subcommand does.
func TestReadiness(t *testing.T) {
	t.Parallel()
	var probes atomic.Int32
	var probeErr atomic.Pointer[error]
	var rebuilding atomic.Bool
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	c := New(Options{
		Probe: func(context.Context) error {
			probes.Add(1)
			if p := probeErr.Load(); p != nil {
				return *p
			}
			return nil
		},
		Rebuilding: rebuilding.Load,
		Now:        func() time.Time { return *clock.Load() },
	})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	srv := httptest.NewServer(c.Wrap(next))
	defer srv.Close()
	ask := func(path string) (string, error) { return Ask(t.Context(), srv.URL, path) }

	if msg, err := ask(PathReady); err != nil || msg != "ok" {
		t.Fatalf("ready: %q %v", msg, err)
	}
	if _, err := ask(PathReady); err != nil || probes.Load() != 1 {
		t.Fatalf("a second probe within the TTL: %v, %d probes", err, probes.Load())
	}
	full := errors.New("storage not writable: no space left on device")
	probeErr.Store(&full)
	later := now.Add(DefaultProbeTTL)
	clock.Store(&later)
	if _, err := ask(PathReady); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("full storage: %v", err)
	}
	if msg, err := ask(PathLive); err != nil || msg != "ok" {
		t.Fatalf("live while not ready: %q %v", msg, err)
	}
	probeErr.Store(nil)
	rebuilding.Store(true)
	if _, err := ask(PathReady); err == nil || !strings.Contains(err.Error(), "rebuilt") {
		t.Fatalf("while rebuilding: %v", err)
	}
	resp, err := http.Post(srv.URL+PathReady, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Fatalf("POST /readyz went to %d, want the next handler", resp.StatusCode)
	}
	if _, err := Ask(t.Context(), "http://127.0.0.1:1", PathLive); err == nil {
		t.Fatal("asking a closed port succeeded")
	}
}

// TestReadyzDegraded: a proxy serving degraded (Redis unreachable) stays
// ready and says why in /readyz's answer, and says nothing once back.
func TestReadyzDegraded(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	h := New(Options{Degraded: func() (bool, string) {
		return down.Load(), "redis unreachable since 2026-12-04T00:00:00Z (dial tcp: connection refused)"
	}})
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, PathReady, nil))
		return rec.Code, rec.Body.String()
	}
	down.Store(true)
	if code, body := get(); code != http.StatusOK || body != "ok, degraded: redis unreachable since 2026-12-04T00:00:00Z (dial tcp: connection refused)\n" {
		t.Errorf("degraded: %d %q", code, body)
	}
	down.Store(false)
	if code, body := get(); code != http.StatusOK || body != "ok\n" {
		t.Errorf("recovered: %d %q", code, body)
	}
}
