package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// blobBytes sums the sizes of the committed blobs under root.
func blobBytes(t *testing.T, root string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(filepath.Join(root, "blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Name() == "data" {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func TestCacheMaxSizeKeepsTheMostRecentlyUsed(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	type img struct {
		name  string
		layer string
	}
	var imgs []img
	// Six images of 50 MiB: 300 MiB in all, three times the bound.
	for i := range 6 {
		d, _ := reg.PushBigBlob(t, fmt.Sprintf("app%d", i), 50)
		imgs = append(imgs, img{fmt.Sprintf("app%d", i), d.String()})
	}
	dir := t.TempDir()
	cfgYAML := fmt.Sprintf(`
dockerHub: false
cache:
  maxSize: 100m
registries:
  - host: reg.test
    endpoint: %s
    caFile: %s
`, reg.URL, reg.CAFile)
	addr, logs, a, stop := runProxyIn(t, dir, cfgYAML)
	get := func(i int) string {
		resp, err := http.Get("http://" + addr + "/v2/reg.test/" + imgs[i].name + "/blobs/" + imgs[i].layer)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || n != 50<<20 {
			t.Fatalf("GET %s: %d, %d bytes, %v", imgs[i].name, resp.StatusCode, n, err)
		}
		return resp.Header.Get("X-Cache")
	}
	check := func(step string) {
		drain(t, a)
		if got := blobBytes(t, filepath.Join(dir, "cache")); got > 100<<20 {
			t.Fatalf("%s: the cache holds %d bytes, over the 100 MiB bound", step, got)
		}
	}
	get(0)
	check("pull 0")
	get(1)
	check("pull 1")
	if x := get(0); x != "HIT" {
		t.Fatalf("image 0 again: %q, want HIT", x)
	}
	get(2) // the least recently used, image 1, must go, not image 0
	check("pull 2")
	if x := get(0); x != "HIT" {
		t.Fatalf("after eviction the recently used image 0: %q, want HIT", x)
	}
	for i := 3; i < len(imgs); i++ {
		get(i)
		check(fmt.Sprintf("pull %d", i))
	}
	if x := get(5); x != "HIT" {
		t.Fatalf("the most recently used image: X-Cache %q, want HIT", x)
	}
	if x := get(1); x != "MISS" {
		t.Fatalf("an old image: X-Cache %q, want MISS (evicted)", x)
	}
	stop()
	if !strings.Contains(logs.String(), "cache eviction") {
		t.Fatal("evictions are not logged")
	}
}

// drain waits for the proxy's fills (and their commits) to end.
func drain(t *testing.T, a *app) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := a.mirror.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestGCAndDU(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	var paths []string
	for i := range 2 {
		d, _ := reg.PushBigBlob(t, fmt.Sprintf("team/app%d", i), 30)
		paths = append(paths, fmt.Sprintf("/v2/reg.test/team/app%d/blobs/%s", i, d))
	}
	dir := t.TempDir()
	cfgYAML := fmt.Sprintf(`
dockerHub: false
registries:
  - host: reg.test
    endpoint: %s
    caFile: %s
`, reg.URL, reg.CAFile)
	addr, _, a, stop := runProxyIn(t, dir, cfgYAML)
	for _, p := range paths {
		resp, err := http.Get("http://" + addr + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	drain(t, a)
	cache := filepath.Join(dir, "cache")
	tool := func(env map[string]string, args ...string) (int, string, string) {
		var out, errb strings.Builder
		base := []string{"--config", filepath.Join(dir, "config.yml"), "--cache-dir", cache, "--ca-dir", filepath.Join(dir, "ca"), "--listen", addr}
		code := run(append(args, base...), envMap(env), &out, &errb)
		return code, out.String(), errb.String()
	}
	before := blobBytes(t, cache)
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"du beside the proxy", nil, []string{"du"}, []string{"reg.test", "team/app0", "team/app1", "TOTAL", "60.0 MiB"}},
		{"gc dry run beside the proxy", map[string]string{"CACHE_MAX_SIZE": "40m"}, []string{"gc", "--dry-run"}, []string{"would remove 1 objects", "size"}},
		{"gc beside the proxy asks it", nil, []string{"gc"}, []string{"made the pass itself", "removed 0 objects"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := tool(tc.env, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s %s", code, out, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Fatalf("output lacks %q:\n%s", w, out)
				}
			}
			if got := blobBytes(t, cache); got != before {
				t.Fatalf("%s changed the cache: %d bytes, was %d", tc.name, got, before)
			}
		})
	}
	stop()
	code, out, errs := tool(map[string]string{"CACHE_MAX_SIZE": "40m"}, "gc")
	if code != 0 || !strings.Contains(out, "removed 1 objects") {
		t.Fatalf("gc with the proxy stopped: exit %d\n%s%s", code, out, errs)
	}
	if got := blobBytes(t, cache); got > 40<<20 {
		t.Fatalf("after gc the cache holds %d bytes, over 40 MiB", got)
	}
}

// TestNonFilesystemStorageIgnoresMinFree: CACHE_MIN_FREE (default 1g)
// measures a local disk, so a storage driver without one (inmemory here;
// s3, gcs, azure alike) starts with it, says it is not applied, and
// caches.
func TestNonFilesystemStorageIgnoresMinFree(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	d, _ := reg.PushBigBlob(t, "app", 1)
	addr, logs, _, _ := runProxyIn(t, t.TempDir(), fmt.Sprintf(`
dockerHub: false
storage:
  inmemory: {}
registries:
  - host: reg.test
    endpoint: %s
    caFile: %s
`, reg.URL, reg.CAFile))
	for _, want := range []string{"MISS", "HIT"} {
		resp, err := http.Get("http://" + addr + "/v2/reg.test/app/blobs/" + d.String())
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 1<<20 || resp.Header.Get("X-Cache") != want {
			t.Fatalf("GET blob: %d, %d bytes, X-Cache %q; want 200, 1 MiB, %s", resp.StatusCode, n, resp.Header.Get("X-Cache"), want)
		}
	}
	if !strings.Contains(logs.String(), "not applied to storage.inmemory") {
		t.Errorf("logs do not say that CACHE_MIN_FREE is not applied:\n%s", logs)
	}
}

// TestToolsHelp: gc --help and du -h print their usage and the flags and
// exit 0, like the server and warm (they exited 2 with "pflag: help
// requested").
func TestToolsHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"gc", "--help"}, {"du", "-h"}, {"gc", "--dry-run", "--help"}} {
		var stdout, stderr bytes.Buffer
		code := run(args, func(string) string { return "" }, &stdout, &stderr)
		if code != 0 || !strings.HasPrefix(stdout.String(), "Usage: container-registry-proxy "+args[0]) || !strings.Contains(stdout.String(), "--config") || stderr.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout.String(), stderr.String())
		}
	}
}
