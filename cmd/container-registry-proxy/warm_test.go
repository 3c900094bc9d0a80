package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// warmCmd runs the warm subcommand in-process.
func warmCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(append([]string{"warm"}, args...), envMap(map[string]string{}), &out, &errb)
	return code, out.String(), errb.String()
}

// hubConfig serves reg as Docker Hub.
func hubConfig(reg *testreg.Registry, extra string) string {
	return fmt.Sprintf(`
dockerHub: true
registries:
  - host: docker.io
    endpoint: %s
    caFile: %s
`, reg.URL, reg.CAFile) + extra
}

// TestWarmThroughProxy: warm pulls images through a running proxy; its
// plain (non-terminal) output has one line per image and a summary table;
// a second run finds everything cached; a missing image fails with the
// proxy's OCI error while the others are still warmed.
func TestWarmThroughProxy(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	reg.PushImage(t, "library/alpine", "3.20", testreg.RandomLayer(t, 300_000), testreg.RandomLayer(t, 2_000))
	multi := reg.PushIndex(t, "team/multi", "v1")
	addr, logs, _, _ := runProxyIn(t, t.TempDir(), hubConfig(reg, ""))
	proxy := "http://" + addr

	code, out, errOut := warmCmd(t, "--proxy", proxy, "alpine:3.20", "docker.io/team/multi:v1", "--platform", "linux/amd64", "--platform", "linux/arm64")
	if code != 0 {
		t.Fatalf("warm: exit %d\nstdout:\n%s\nstderr:\n%s\nproxy log:\n%s", code, out, errOut, logs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	wantLines := []*regexp.Regexp{
		regexp.MustCompile(`^warmed docker\.io/library/alpine:3\.20 linux/amd64: 3 blobs, 295\.\d KiB in \d+(\.\d+)?m?s \(3 fetched, 0 already cached\)$`),
		regexp.MustCompile(`^warmed docker\.io/team/multi:v1 linux/amd64,linux/arm64/v8: 4 blobs, \d+(\.\d)? (B|KiB) in \S+ \(4 fetched, 0 already cached\)$`),
		regexp.MustCompile(`^IMAGE +PLATFORMS +BLOBS +BYTES +RESULT$`),
		regexp.MustCompile(`^docker\.io/library/alpine:3\.20 +linux/amd64 +3 +295\.\d KiB +ok$`),
		regexp.MustCompile(`^docker\.io/team/multi:v1 +linux/amd64,linux/arm64/v8 +4 +\S+ \S+ +ok$`),
	}
	if len(lines) != len(wantLines) {
		t.Fatalf("warm printed %d lines, want %d:\n%s", len(lines), len(wantLines), out)
	}
	for i, re := range wantLines {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d: %q does not match %s", i+1, lines[i], re)
		}
	}
	if errOut != "" {
		t.Errorf("stderr: %q", errOut)
	}
	blobs := int64(3 + 4)
	if n := reg.Count("GET", testreg.KindBlob); n != blobs {
		t.Errorf("upstream blob GETs = %d, want %d (every blob once)", n, blobs)
	}

	// Again: everything is a hit now; a missing image and a missing
	// platform fail, the others are still warmed.
	reg.ResetCounts()
	code, out, errOut = warmCmd(t, "--proxy", proxy+"/", "docker.io/library/nope", "alpine:3.20", "team/multi:v1@"+multi.ManifestDigest.String(), "--platform", "linux/amd64,linux/s390x")
	if code != 1 {
		t.Fatalf("warm with a missing image: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"warmed docker.io/library/alpine:3.20 linux/amd64: 3 blobs, 295.",
		"(0 fetched, 3 already cached)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "warmed docker.io/team/multi") || strings.Contains(out, "warmed docker.io/library/nope") {
		t.Errorf("failed images reported as warmed:\n%s", out)
	}
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^docker\.io/library/nope:latest +- +0 +0 B +failed: MANIFEST_UNKNOWN$`),
		regexp.MustCompile(`(?m)^docker\.io/library/alpine:3\.20 +linux/amd64 +3 +295\.\d KiB +ok$`),
		regexp.MustCompile(`(?m)^docker\.io/team/multi:v1@sha256:[0-9a-f]{64} +linux/amd64 +2 +\S+ \S+ +failed: no manifest for linux/s390x$`),
	} {
		if !re.MatchString(out) {
			t.Errorf("summary lacks a row matching %s:\n%s", re, out)
		}
	}
	for _, want := range []string{
		"failed docker.io/library/nope:latest: manifest latest: 404 Not Found: MANIFEST_UNKNOWN",
		"failed docker.io/team/multi:v1@" + multi.ManifestDigest.String() + ": no manifest for linux/s390x in the index (warmed linux/amd64)",
		"2 of 3 images failed",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if n := reg.Count("GET", testreg.KindBlob); n != 0 {
		t.Errorf("second warm: upstream blob GETs = %d, want 0", n)
	}
}

// TestWarmBadArguments: bad arguments exit 2 with one message.
func TestWarmBadArguments(t *testing.T) {
	t.Parallel()
	list := filepath.Join(t.TempDir(), "list.txt")
	if err := os.WriteFile(list, []byte("# images\nalpine\n\nBAD\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"no images", []string{"--proxy", "http://127.0.0.1:1"}, "no images given"},
		{"bad image", []string{"--proxy", "http://127.0.0.1:1", "Alpine"}, "lowercase"},
		{"bad platform", []string{"--proxy", "http://127.0.0.1:1", "--platform", "linux", "alpine"}, "--platform"},
		{"unknown flag", []string{"--frobnicate", "alpine"}, "frobnicate"},
		{"bad proxy URL", []string{"--proxy", "ftp://x", "alpine"}, "--proxy"},
		{"proxy and direct", []string{"--proxy", "http://127.0.0.1:1", "--direct", "alpine"}, "exclude"},
		{"missing list file", []string{"--proxy", "http://127.0.0.1:1", "--file", "/nonexistent/list"}, "--file"},
		{"bad name in list file", []string{"--proxy", "http://127.0.0.1:1", "--file", list}, `"BAD"`},
		{"bad jobs", []string{"--proxy", "http://127.0.0.1:1", "--jobs", "0", "alpine"}, "--jobs"},
		{"bad user", []string{"--proxy", "http://127.0.0.1:1", "--user", "nopass", "alpine"}, "--user"},
		{"bad config", []string{"--config", "/nonexistent/c.yml", "alpine"}, "configuration error"},
		{"listen without port", []string{"--listen", "127.0.0.1:0", "alpine"}, "--proxy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := warmCmd(t, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.msg) || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 2 and a message with %q", code, out, errOut, tc.msg)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		code, out, _ := warmCmd(t, "--help")
		if code != 0 || !strings.Contains(out, "--platform") || !strings.Contains(out, "Exit status") {
			t.Fatalf("exit %d: %s", code, out)
		}
	})
}

// TestWarmProxyDown: an unreachable proxy fails every image (exit 1).
func TestWarmProxyDown(t *testing.T) {
	t.Parallel()
	code, out, errOut := warmCmd(t, "--proxy", "http://127.0.0.1:1", "alpine", "busybox")
	if code != 1 || !strings.Contains(errOut, "failed docker.io/library/alpine:latest: manifest latest:") || !strings.Contains(errOut, "2 of 2 images failed") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestWarmDirect: --direct fills the cache directory without a running
// proxy; a proxy started on it afterwards serves the image as hits, and
// --direct next to that proxy is refused.
func TestWarmDirect(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "library/busybox", "1", testreg.RandomLayer(t, 50_000))
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "direct.yml")
	if err := os.WriteFile(cfgFile, []byte(hubConfig(reg, fmt.Sprintf("caDir: %s\nlisten: 127.0.0.1:0\n", filepath.Join(dir, "ca")))), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := warmCmd(t, "--direct", "--config", cfgFile, "--cache-dir", filepath.Join(dir, "cache"), "busybox:1")
	if code != 0 || !strings.Contains(out, "warmed docker.io/library/busybox:1 linux/amd64: 2 blobs") || !strings.Contains(out, "(2 fetched, 0 already cached)") {
		t.Fatalf("warm --direct: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, b := range append(img.Layers, img.Config) {
		p := filepath.Join(dir, "cache", "blobs", "sha256", b.Digest.Encoded()[:2], b.Digest.Encoded(), "data")
		if fi, err := os.Stat(p); err != nil || fi.Size() != b.Size {
			t.Errorf("blob %s not in the cache after warm --direct: %v", b.Digest, err)
		}
	}
	reg.ResetCounts()
	addr, _, _, _ := runProxyIn(t, dir, hubConfig(reg, ""))
	code, out, errOut = warmCmd(t, "--proxy", "http://"+addr, "busybox:1")
	if code != 0 || !strings.Contains(out, "(0 fetched, 2 already cached)") {
		t.Fatalf("warm through the proxy after --direct: exit %d\n%s\n%s", code, out, errOut)
	}
	if n := reg.Count("GET", testreg.KindBlob); n != 0 {
		t.Errorf("upstream blob GETs = %d after warm --direct, want 0", n)
	}
	code, _, errOut = warmCmd(t, "--direct", "--config", cfgFile, "--cache-dir", filepath.Join(dir, "cache"), "busybox:1")
	if code != 1 || !strings.Contains(errOut, "drop --direct") {
		t.Fatalf("warm --direct beside a running proxy: exit %d, %s", code, errOut)
	}
}
