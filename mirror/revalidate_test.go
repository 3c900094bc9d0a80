package mirror_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// answer is what one client got.
type answer struct {
	status         int
	cache, warning string
	body           []byte
	err            error
	retryAfter     string
}

// pullAll sends n concurrent GETs of path and returns their answers. A
// client gives up after 30s (an answer that waits for a hanging upstream).
func pullAll(e *env, n int, path string) []answer {
	out := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, err := e.getWithin(30*time.Second, path)
			if err != nil {
				out[i].err = err
				return
			}
			out[i] = answer{status: resp.StatusCode, cache: resp.Header.Get("X-Cache"), warning: resp.Header.Get("Warning"),
				body: body, retryAfter: resp.Header.Get("Retry-After")}
		}()
	}
	wg.Wait()
	return out
}

// getWithin GETs path (accepting manifests), giving up after d.
func (e *env) getWithin(d time.Duration, path string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(e.t.Context(), d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", accept)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// TestRevalidationBudgetAnswersStale: an upstream that accepts the
// revalidation of a cached tag and never answers holds no client longer
// than RevalidateWait: every one of N concurrent clients gets the cached
// manifest stale, with a Warning saying why, while upstream's single
// revalidation request still hangs; it finishes in the background once
// upstream answers, and a later pull revalidates as usual.
func TestRevalidationBudgetAnswersStale(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "app", "v1", []byte("layer"))
	e := newEnv(t, envOptions{revalidateWait: 50 * time.Millisecond, readTimeout: 5 * time.Minute}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/manifests/v1"
	if resp, _ := e.do(http.MethodGet, path, "Accept", accept); resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("first pull: X-Cache %q", resp.Header.Get("X-Cache"))
	}

	reg.Stall()
	t.Cleanup(reg.Unstall)
	reg.ResetCounts()
	const n = 8
	for i, a := range pullAll(e, n, path) {
		if a.err != nil || a.status != http.StatusOK || a.cache != "STALE" || !bytes.Equal(a.body, img.Manifest) {
			t.Fatalf("client %d: %v, status %d, X-Cache %q, %d bytes; want 200 STALE and the manifest", i, a.err, a.status, a.cache, len(a.body))
		}
		if !strings.HasPrefix(a.warning, `299 - "Response is stale: upstream slow to answer, revalidating in the background; cached `) {
			t.Fatalf("client %d: Warning %q", i, a.warning)
		}
	}
	// Every client was answered while the revalidation still waits
	// upstream: none waited for it.
	if s := reg.Stalled(); s != 1 {
		t.Fatalf("%d upstream requests still waiting after the clients were answered, want the one revalidation", s)
	}
	if c := reg.Count("", testreg.KindManifest); c != 1 {
		t.Fatalf("%d clients made %d upstream manifest requests, want 1 revalidation", n, c)
	}
	if c := strings.Count(e.logs.String(), "upstream slow to answer a revalidation"); c != 1 {
		t.Fatalf("the slow revalidation was logged %d times, want once:\n%s", c, e.logs)
	}

	// Upstream answers: the revalidation ends in the background without
	// another request, and the next pull asks upstream again.
	reg.Unstall()
	e.waitRevalidations()
	if c := reg.Count("", testreg.KindManifest); c != 1 {
		t.Fatalf("the background revalidation made %d upstream manifest requests, want its 1", c)
	}
	reg.ResetCounts()
	e.pullRevalidates(reg, path, img.Manifest)
}

// waitRevalidations waits until no revalidation runs in the background.
func (e *env) waitRevalidations() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), time.Minute)
	defer cancel()
	if err := e.mirror.WaitRevalidations(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// pullRevalidates pulls a cached tag from a responsive upstream: it is
// revalidated with one HEAD (answered REVALIDATED, or STALE when the
// HEAD outlasted the test's short RevalidateWait on a busy machine).
func (e *env) pullRevalidates(reg *testreg.Registry, path string, manifest []byte) {
	e.t.Helper()
	resp, body := e.do(http.MethodGet, path, "Accept", accept)
	cache, warning := resp.Header.Get("X-Cache"), resp.Header.Get("Warning")
	slow := cache == "STALE" && strings.Contains(warning, "upstream slow to answer")
	if resp.StatusCode != http.StatusOK || (cache != "REVALIDATED" && !slow) || !bytes.Equal(body, manifest) {
		e.t.Fatalf("pull of a cached tag: %d, X-Cache %q, Warning %q; want 200 REVALIDATED and the manifest", resp.StatusCode, cache, warning)
	}
	e.waitRevalidations()
	if c := reg.Count(http.MethodHead, testreg.KindManifest); c != 1 {
		e.t.Fatalf("the pull made %d HEADs upstream, want 1", c)
	}
}

// TestRevalidationBudgetMissWaits: a tag never cached has nothing to
// answer stale with: its pull waits for the stalled upstream past the
// budget and gets the manifest once upstream answers.
func TestRevalidationBudgetMissWaits(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "app", "v1", []byte("layer"))
	e := newEnv(t, envOptions{revalidateWait: time.Millisecond}, upstreamSpec{host: "registry.test", reg: reg})
	reg.Stall()
	t.Cleanup(reg.Unstall)
	done := make(chan answer, 1)
	go func() { done <- pullAll(e, 1, "/v2/registry.test/app/manifests/v1")[0] }()
	reg.WaitStalled(t, 1)
	reg.Unstall()
	a := <-done
	if a.err != nil || a.status != http.StatusOK || a.cache != "MISS" || !bytes.Equal(a.body, img.Manifest) {
		t.Fatalf("miss: %v, status %d, X-Cache %q; want 200 MISS and the manifest", a.err, a.status, a.cache)
	}
}

// TestRevalidationStoppedByDrain: a shutdown (Drain) does not wait for a
// revalidation hanging in the background: it cancels it, which starts no
// outage hold, and the next pull asks upstream again.
func TestRevalidationStoppedByDrain(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "app", "v1", []byte("layer"))
	e := newEnv(t, envOptions{revalidateWait: 50 * time.Millisecond, readTimeout: 5 * time.Minute}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/manifests/v1"
	e.do(http.MethodGet, path, "Accept", accept)
	reg.Stall()
	t.Cleanup(reg.Unstall)
	if a := pullAll(e, 1, path)[0]; a.cache != "STALE" {
		t.Fatalf("X-Cache %q, want STALE", a.cache)
	}
	reg.WaitStalled(t, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := e.mirror.Drain(ctx); err != nil {
		t.Fatalf("drain with a revalidation hanging upstream: %v", err)
	}
	if strings.Contains(e.logs.String(), "upstream unavailable") {
		t.Fatalf("the stopped revalidation was taken for an outage:\n%s", e.logs)
	}
	reg.Unstall()
	reg.ResetCounts()
	e.pullRevalidates(reg, path, img.Manifest)
}
