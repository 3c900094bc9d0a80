package main

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// chromium runs Debian's headless Chromium with the flags that keep it
// off the network (it only loads the page from loopback).
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: run scripts/install-test-deps.sh")
	}
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append(base, args...)...).Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return string(out)
}

func TestStatusPageInABrowser(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "team/webapp", "v1", testreg.RandomLayer(t, 300_000))
	addr, _, a, _ := runProxyIn(t, t.TempDir(), fmt.Sprintf(`
dockerHub: false
registries:
  - host: reg.test
    endpoint: %s
    caFile: %s
`, reg.URL, reg.CAFile))
	pull := func() {
		for _, p := range []string{"/manifests/v1", "/blobs/" + img.Config.Digest.String(), "/blobs/" + img.Layers[0].Digest.String()} {
			req, _ := http.NewRequest("GET", "http://"+addr+"/v2/reg.test/team/webapp"+p, nil)
			req.Header.Set("Accept", img.MediaType)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		drain(t, a)
	}
	pull() // cold: 3 misses
	pull() // warm: blobs and the digest hit, the tag revalidates
	dom := html.UnescapeString(chromium(t, "--dump-dom", "http://"+addr+"/"))
	for _, want := range []string{
		`id="hit-ratio">33%`, // 2 blob hits of 6 requests
		`id="requests">6</span>`,
		"reg.test/team/webapp</td><td class=\"n\">2</td>",
		`location = "` + addr + `/reg.test"`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("rendered DOM:\n%s", dom)
	}
	// A phone-sized screenshot for docs/ (kept when STATUS_SCREENSHOT names a file).
	shot := filepath.Join(t.TempDir(), "status.png")
	if dst := os.Getenv("STATUS_SCREENSHOT"); dst != "" {
		shot = dst
	}
	chromium(t, "--screenshot="+shot, "--window-size=412,1400", "--hide-scrollbars", "http://"+addr+"/")
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10_000 {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
}
