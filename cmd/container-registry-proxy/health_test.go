package main

import (
	"bytes"
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

	"github.com/gmarcy/container-registry-proxy/internal/health"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// TestHealthEndpointsAndHealthcheck: the running proxy answers /healthz
// and /readyz (its storage probe leaves nothing behind), and the
// healthcheck subcommand exits 0, 1 or 2.
func TestHealthEndpointsAndHealthcheck(t *testing.T) {
	t.Parallel()
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
	// While the index is rebuilt the proxy is not ready; the same store
	// and lifecycle answer again once it is done.
	var rebuilding atomic.Bool
	h := health.New(health.Options{Probe: a.store.Probe, Rebuilding: rebuilding.Load})
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		rebuilding bool
		status     int
	}{{true, http.StatusServiceUnavailable}, {false, http.StatusOK}} {
		rebuilding.Store(tc.rebuilding)
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.rebuilding && !strings.Contains(string(body), "rebuilt")) {
			t.Errorf("/readyz, rebuilding=%v: %d %q", tc.rebuilding, resp.StatusCode, body)
		}
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
	t.Parallel()
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
	t.Parallel()
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
