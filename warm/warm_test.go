package warm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/distribution/reference"
	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/warm"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// proxy stands in for container-registry-proxy in front of a real
// registry: it serves the registry's repositories under the namespace
// path prefix (/v2/<ns>/<repo>/…), denies other namespaces as the proxy
// denies registries it is not configured for, and answers X-Cache: HIT
// for a blob it served before (MISS the first time).
type proxy struct {
	URL    string
	ns     string
	mu     sync.Mutex
	served map[string]bool
}

// startProxy runs a proxy for reg under namespace ns for the test.
func startProxy(t *testing.T, reg *testreg.Registry, ns string) *proxy {
	t.Helper()
	target, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	client := reg.Client()
	p := &proxy{ns: ns, served: map[string]bool{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = "/v2/" + strings.TrimPrefix(pr.In.URL.Path, "/v2/"+ns+"/")
			pr.Out.URL.RawPath = ""
		},
		Transport:      client.Transport,
		ModifyResponse: p.markCache,
		ErrorLog:       log.New(io.Discard, "", 0), // cut bodies are what some tests ask for
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v2/"+ns+"/") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"errors":[{"code":"DENIED","message":"registry not configured"}]}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		client.CloseIdleConnections()
	})
	p.URL = srv.URL
	return p
}

// markCache sets X-Cache on blob answers.
func (p *proxy) markCache(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Request.URL.Path, "/blobs/") {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.served[resp.Request.URL.Path] {
		resp.Header.Set("X-Cache", "HIT")
	} else {
		resp.Header.Set("X-Cache", "MISS")
	}
	p.served[resp.Request.URL.Path] = true
	return nil
}

// refs parses image names.
func refs(t *testing.T, names ...string) []reference.Named {
	t.Helper()
	var out []reference.Named
	for _, n := range names {
		r, err := warm.ParseReference(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// bar records what a progress bar would show, and prints like Output.
type bar struct {
	*warm.Output
	total, read atomic.Int64
}

// Start records the total.
func (b *bar) Start(image string, total int64) { b.total.Add(total); b.Output.Start(image, total) }

// Add records the bytes read.
func (b *bar) Add(n int64) { b.read.Add(n); b.Output.Add(n) }

// newWarmer makes a Warmer for the proxy at u, failing the test on error.
func newWarmer(t *testing.T, u string, opts warm.Options) *warm.Warmer {
	t.Helper()
	w, err := warm.New(u, opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// imageBytes is the size of an image's config and layers.
func imageBytes(img testreg.Image) int64 {
	n := img.Config.Size
	for _, l := range img.Layers {
		n += l.Size
	}
	return n
}

// TestWarmThroughProxy: images are warmed through the proxy's namespace
// paths, every blob read once and verified; single images, OCI indexes
// and Docker lists, the wanted platforms only. The result and the output
// say how many blobs the proxy fetched and how many it already had.
func TestWarmThroughProxy(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	alpine := reg.PushImage(t, "library/alpine", "3.20", testreg.RandomLayer(t, 300_000), testreg.RandomLayer(t, 2_000))
	multi := reg.PushIndex(t, "team/multi", "v1")
	list := reg.PushIndexMediaType(t, "team/list", "v1", testreg.MediaTypeDockerManifestList,
		testreg.Platform{OS: "linux", Architecture: "amd64"}, testreg.Platform{OS: "linux", Architecture: "arm", Variant: "v7"})
	p := startProxy(t, reg, "docker.io")
	var out, errOut bytes.Buffer
	progress := &bar{Output: warm.NewOutput(&out, &errOut)}
	arm64, _ := warm.ParsePlatform("linux/arm64")
	w := newWarmer(t, p.URL, warm.Options{Platforms: []v1.Platform{{OS: "linux", Architecture: "amd64"}, arm64}, Progress: progress})

	results := w.WarmAll(t.Context(), refs(t, "alpine:3.20", "team/multi:v1", "docker.io/team/list:v1"))
	want := []warm.Result{
		{Image: "docker.io/library/alpine:3.20", Platforms: []string{"linux/amd64"}, Blobs: 3, Bytes: imageBytes(alpine), Fetched: 3},
		{Image: "docker.io/team/multi:v1", Platforms: []string{"linux/amd64", "linux/arm64/v8"}, Blobs: 4,
			Bytes: imageBytes(multi.Images[0]) + imageBytes(multi.Images[1]), Fetched: 4},
		{Image: "docker.io/team/list:v1", Platforms: []string{"linux/amd64"}, Blobs: 2, Bytes: imageBytes(list.Images[0]), Fetched: 2,
			Err: errors.New("no manifest for linux/arm64/v8 in the index (warmed linux/amd64)")},
	}
	checkResults(t, results, want)
	if n := reg.Count("GET", testreg.KindBlob); n != 3+4+2 {
		t.Errorf("registry saw %d blob GETs, want 9: every blob once", n)
	}
	if got, read := progress.total.Load(), progress.read.Load(); got != want[0].Bytes+want[1].Bytes+want[2].Bytes || read != got {
		t.Errorf("progress: total %d, read %d; want both %d", got, read, want[0].Bytes+want[1].Bytes+want[2].Bytes)
	}
	for _, re := range []string{
		`^warmed docker\.io/library/alpine:3\.20 linux/amd64: 3 blobs, 295\.\d KiB in \S+ \(3 fetched, 0 already cached\)$`,
		`^warmed docker\.io/team/multi:v1 linux/amd64,linux/arm64/v8: 4 blobs, \S+ \S+ in \S+ \(4 fetched, 0 already cached\)$`,
	} {
		if !regexp.MustCompile(`(?m)` + re).MatchString(out.String()) {
			t.Errorf("output lacks a line matching %s:\n%s", re, out.String())
		}
	}
	if s := errOut.String(); s != "failed docker.io/team/list:v1: no manifest for linux/arm64/v8 in the index (warmed linux/amd64)\n" {
		t.Errorf("error stream: %q", s)
	}

	// Again: the proxy has every blob now.
	again := newWarmer(t, p.URL, warm.Options{}).Warm(t.Context(), refs(t, "alpine:3.20")[0])
	checkResults(t, []warm.Result{again}, []warm.Result{
		{Image: "docker.io/library/alpine:3.20", Platforms: []string{"linux/amd64"}, Blobs: 3, Bytes: imageBytes(alpine), Cached: 3},
	})
}

// checkResults compares results with want, errors by message.
func checkResults(t *testing.T, got, want []warm.Result) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(got), len(want), got)
	}
	for i, g := range got {
		w := want[i]
		if g.Image != w.Image || !slices.Equal(g.Platforms, w.Platforms) || g.Blobs != w.Blobs || g.Bytes != w.Bytes ||
			g.Fetched != w.Fetched || g.Cached != w.Cached || fmt.Sprint(g.Err) != fmt.Sprint(w.Err) {
			t.Errorf("result %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

// TestWarmFailures: a missing tag, a registry the proxy does not serve
// and a missing platform fail with the proxy's OCI code in the summary,
// while the other images are still warmed.
func TestWarmFailures(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{})
	reg.PushImage(t, "library/busybox", "1")
	multi := reg.PushIndex(t, "team/multi", "v1")
	p := startProxy(t, reg, "docker.io")
	s390x, _ := warm.ParsePlatform("linux/s390x")
	w := newWarmer(t, p.URL, warm.Options{Platforms: []v1.Platform{s390x}})

	results := w.WarmAll(t.Context(), refs(t, "busybox:missing", "quay.io/org/app:v1", "team/multi@"+multi.ManifestDigest.String(), "busybox:1"))
	var out, errOut bytes.Buffer
	o := warm.NewOutput(&out, &errOut)
	for _, r := range results {
		o.Done(r)
	}
	o.Summary(results)
	for _, re := range []string{
		`^docker\.io/library/busybox:missing +- +0 +0 B +failed: MANIFEST_UNKNOWN$`,
		`^quay\.io/org/app:v1 +- +0 +0 B +failed: DENIED$`,
		`^docker\.io/team/multi@sha256:[0-9a-f]{64} +- +0 +0 B +failed: no manifest for linux/s390x$`,
		// busybox is single-platform: warmed whatever the platforms.
		`^docker\.io/library/busybox:1 +linux/amd64 +2 +\S+ \S+ +ok$`,
	} {
		if !regexp.MustCompile(`(?m)` + re).MatchString(out.String()) {
			t.Errorf("summary lacks a row matching %s:\n%s", re, out.String())
		}
	}
	for _, want := range []string{
		"failed docker.io/library/busybox:missing: manifest missing: 404 Not Found: MANIFEST_UNKNOWN",
		"failed quay.io/org/app:v1: manifest v1: 403 Forbidden: DENIED: registry not configured\n",
		"failed docker.io/team/multi@" + multi.ManifestDigest.String() + ": no manifest for linux/s390x in the index (it has linux/amd64, linux/arm64/v8)\n",
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("error stream lacks %q:\n%s", want, errOut.String())
		}
	}
}

// TestWarmNeedsUser: a proxy that serves a registry to its users only
// refuses an anonymous warm with a hint to pass --user; with the
// credentials the image is warmed.
func TestWarmNeedsUser(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{Auth: testreg.AuthBasic})
	reg.PushImage(t, "team/private", "v1")
	p := startProxy(t, reg, "registry.local_5000")
	ref := refs(t, "registry.local:5000/team/private:v1")[0]

	r := newWarmer(t, p.URL, warm.Options{}).Warm(t.Context(), ref)
	var fe *warm.FetchError
	if !errors.As(r.Err, &fe) || fe.Code() != "UNAUTHORIZED" ||
		!strings.HasPrefix(r.Err.Error(), "manifest v1: 401 Unauthorized: UNAUTHORIZED") ||
		!strings.HasSuffix(r.Err.Error(), "(authenticate to the proxy with --user)") {
		t.Fatalf("anonymous warm: %v", r.Err)
	}
	r = newWarmer(t, p.URL, warm.Options{Credentials: auth.Credentials{Username: "testuser", Password: "testpassword"}}).Warm(t.Context(), ref)
	if r.Err != nil || r.Blobs != 2 || r.Fetched != 2 {
		t.Fatalf("warm with the user: %+v", r)
	}
}

// TestWarmRefusesBadBytes: a blob whose bytes do not match its digest,
// or that ends early, fails the image: it is never reported warmed.
func TestWarmRefusesBadBytes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		fault testreg.Fault
		is    error  // errors.Is
		msg   string // in the message
	}{
		{testreg.FaultWrongBytes, warm.ErrDigestMismatch, ": content does not match (got sha256:"},
		{testreg.FaultDropMidBlob, nil, ": proxy 127.0.0.1:"},
	}
	for _, tc := range cases {
		t.Run(tc.fault.String(), func(t *testing.T) {
			t.Parallel()
			reg := testreg.Start(t, testreg.Options{})
			img := reg.PushImage(t, "library/alpine", "3.20", testreg.RandomLayer(t, 100_000))
			reg.SetFault(tc.fault)
			p := startProxy(t, reg, "docker.io")
			r := newWarmer(t, p.URL, warm.Options{Jobs: 1}).Warm(t.Context(), refs(t, "alpine:3.20")[0])
			if r.Err == nil || (tc.is != nil && !errors.Is(r.Err, tc.is)) || !strings.Contains(r.Err.Error(), tc.msg) {
				t.Fatalf("Err = %v; want one with %q", r.Err, tc.msg)
			}
			named := false
			for _, b := range append(img.Layers, img.Config) {
				named = named || strings.HasPrefix(r.Err.Error(), "blob "+b.Digest.String()+":")
			}
			if !named {
				t.Errorf("the error does not name the blob: %v", r.Err)
			}
		})
	}
}

// TestWarmProxyDown: an unreachable proxy fails the image with the
// address that refused; an interrupted run stops after the image in
// progress.
func TestWarmProxyDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	w := newWarmer(t, "http://"+addr, warm.Options{})
	images := refs(t, "alpine", "busybox")

	results := w.WarmAll(t.Context(), images)
	if len(results) != 2 {
		t.Fatalf("%d results, want 2", len(results))
	}
	if want := "manifest latest: proxy " + addr + ": connection refused"; results[0].Err == nil || results[0].Err.Error() != want {
		t.Errorf("Err = %v, want %q", results[0].Err, want)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	results = w.WarmAll(ctx, images)
	if len(results) != 1 || !errors.Is(results[0].Err, context.Canceled) {
		t.Errorf("interrupted: %+v, want one result that failed with context.Canceled", results)
	}
}
