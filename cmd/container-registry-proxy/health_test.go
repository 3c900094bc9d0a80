package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// TestReadyz: /readyz is 503 with a one-line reason while the index is
// rebuilt or the storage probe fails, and probes at most once per
// readyTTL; /healthz is 200 whatever.
func TestReadyz(t *testing.T) {
	var rebuilding atomic.Bool
	var probes atomic.Int32
	var probeErr atomic.Pointer[error]
	now := time.Unix(1_700_000_000, 0)
	h := &health{
		now:        func() time.Time { return now },
		rebuilding: rebuilding.Load,
		probe: func(context.Context) error {
			probes.Add(1)
			if p := probeErr.Load(); p != nil {
				return *p
			}
			return nil
		},
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	srv := h.wrap(next)
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
		}, path: "/readyz", status: 200, probes: 1, advance: readyTTL},
		{name: "probe fails", path: "/readyz", status: 503, body: "not ready: storage not writable: open /c/_health/x: read-only file system\n", probes: 2},
		{name: "healthz still fine", path: "/healthz", status: 200, body: "ok\n", probes: 2},
		{name: "rebuilding", setup: func() { probeErr.Store(nil); rebuilding.Store(true) }, path: "/readyz", status: 503, body: "not ready: cache index is being rebuilt from the storage\n", probes: 2, advance: readyTTL},
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

// TestHealthEndpointsAndHealthcheck: the running proxy answers /healthz
// and /readyz (its storage probe leaves nothing behind), and the
// healthcheck subcommand exits 0, 1 or 2.
func TestHealthEndpointsAndHealthcheck(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{TLS: true})
	dir := t.TempDir()
	addr, _, a, _ := runProxyIn(t, dir, hubConfig(reg, ""))
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok\n" {
			t.Errorf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "cache", "_health")); len(ents) != 0 {
		t.Errorf("the storage probe left %d files", len(ents))
	}
	a.life.rebuilding.Store(true)
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	a.life.rebuilding.Store(false)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz while rebuilding: %d", resp.StatusCode)
	}

	hc := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"healthcheck"}, args...), envMap(map[string]string{}), &out, &errb)
		return code, out.String(), errb.String()
	}
	cases := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"url", []string{"--url", "http://" + addr}, 0, "/healthz: ok"},
		{"ready", []string{"--ready", "--url=http://" + addr + "/"}, 0, "/readyz: ok"},
		{"listen from flags", []string{"--listen", addr}, 0, "/healthz: ok"},
		{"nothing listening", []string{"--url", "http://127.0.0.1:1"}, 1, "connect"},
		{"not a health endpoint", []string{"--url", "http://" + addr + "/nothing"}, 1, "404"},
		{"bad flag", []string{"--frobnicate"}, 2, "frobnicate"},
		{"port 0", []string{"--listen", "127.0.0.1:0"}, 2, "no fixed port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := hc(tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.out) {
				t.Fatalf("exit %d stdout %q stderr %q; want %d and %q", code, out, errOut, tc.code, tc.out)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out bytes.Buffer
		if code := run(args, envMap(map[string]string{}), &out, io.Discard); code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		want := "container-registry-proxy " + Version + " (commit " + Commit + ", " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ", storage drivers: filesystem inmemory s3 gcs azure)\n"
		if out.String() != want {
			t.Errorf("%v: %q, want %q", args, out.String(), want)
		}
	}
}

// TestHealthOnMetricsListener: --metrics-listen serves /healthz and
// /readyz beside /metrics.
func TestHealthOnMetricsListener(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{TLS: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := ln.Addr().String()
	ln.Close()
	runProxyIn(t, t.TempDir(), hubConfig(reg, "metricsListen: "+maddr+"\n"))
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + maddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok\n" {
			t.Errorf("metrics listener %s: %d %q", path, resp.StatusCode, body)
		}
	}
}
