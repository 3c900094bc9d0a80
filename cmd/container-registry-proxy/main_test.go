package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: every proxy a
// test starts shuts down whole (servers, fills, eviction, index flushes).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		args   []string
		env    map[string]string
		code   int
		stdout string
		stderr string
	}{
		{name: "help", args: []string{"--help"}, code: 0, stdout: "--listen"},
		{name: "version", args: []string{"--version"}, code: 0, stdout: "container-registry-proxy"},
		{name: "bad flag value", args: []string{"--listen", "nope"}, code: 2, stderr: "--listen"},
		{name: "bad env duration", env: map[string]string{"MANIFEST_CACHE_DEFAULT_TIME": "1q"}, code: 2, stderr: "MANIFEST_CACHE_DEFAULT_TIME"},
		{name: "bad env bool", env: map[string]string{"ENABLE_MANIFEST_CACHE": "maybe"}, code: 2, stderr: "ENABLE_MANIFEST_CACHE"},
		{name: "missing config file", args: []string{"--config", "/nonexistent/c.yml"}, code: 2, stderr: "--config"},
		{name: "unknown flag", args: []string{"--frobnicate"}, code: 2, stderr: "frobnicate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			env := tc.env
			if env == nil {
				env = map[string]string{}
			}
			env["CACHE_DIRECTORY"] = t.TempDir()
			code := run(tc.args, envMap(env), &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tc.code, errb.String())
			}
			if !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("stdout %q stderr %q", out.String(), errb.String())
			}
			if tc.code == 2 && strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
				t.Fatalf("a configuration error must be one line: %q", errb.String())
			}
		})
	}
}

func TestServeEndpoints(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, err := config.Load([]string{"--cache-dir", dir, "--ca-dir", t.TempDir() + "/ca"}, envMap(map[string]string{"REGISTRIES": "quay.io"}))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logs)
	ctx, cancel := context.WithCancel(t.Context())
	a, err := build(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveOn(ctx, ln, a, log, cfg) }()
	base := "http://" + ln.Addr().String()
	cases := []struct {
		path   string
		status int
		body   string
	}{
		{"/", 200, "container-registry-proxy"},
		{"/healthz", 200, "ok"},
		{"/v2/", 200, "{}"},
		{"/v2/ghcr.io/org/app/manifests/latest", 403, "DENIED"},
		{"/nothing", 404, "UNSUPPORTED"},
	}
	for _, tc := range cases {
		resp, err := http.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s: %d %s", tc.path, resp.StatusCode, body)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, want := range []string{"serving registry", "/v2/quay.io/<repo>", "status=403"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestRevalidateWaitSetting: MANIFEST_CACHE_REVALIDATE_WAIT reaches the
// mirror; 0 waits for upstream rather than meaning the mirror's default.
func TestRevalidateWaitSetting(t *testing.T) {
	t.Parallel()
	for env, want := range map[string]time.Duration{"": 2 * time.Second, "500ms": 500 * time.Millisecond, "0": -1} {
		cfg, err := config.Load(nil, envMap(map[string]string{"MANIFEST_CACHE_REVALIDATE_WAIT": env}))
		if err != nil {
			t.Fatal(err)
		}
		if got := revalidateWait(cfg); got != want {
			t.Errorf("MANIFEST_CACHE_REVALIDATE_WAIT=%q: mirror RevalidateWait %v, want %v", env, got, want)
		}
	}
}

// TestOutageHoldSetting: OUTAGE_HOLD reaches the mirror; 0 turns the hold
// off rather than meaning the mirror's default.
func TestOutageHoldSetting(t *testing.T) {
	t.Parallel()
	for env, want := range map[string]time.Duration{"": 10 * time.Second, "30s": 30 * time.Second, "0": -1} {
		cfg, err := config.Load(nil, envMap(map[string]string{"OUTAGE_HOLD": env}))
		if err != nil {
			t.Fatal(err)
		}
		if got := downHold(cfg); got != want {
			t.Errorf("OUTAGE_HOLD=%q: mirror DownHold %v, want %v", env, got, want)
		}
	}
}
