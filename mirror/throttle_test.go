package mirror_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// wantHeld checks an answer made while upstream is held after it asked
// to wait: status and code of upstream's answer, as OCI error JSON, with
// the seconds left as Retry-After.
func wantHeld(t *testing.T, what string, a answer, status int, code, retryAfter string) {
	t.Helper()
	var env struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if a.err != nil || a.status != status || json.Unmarshal(a.body, &env) != nil || len(env.Errors) != 1 || env.Errors[0].Code != code {
		t.Fatalf("%s: %v, status %d, body %s; want %d with OCI error %s", what, a.err, a.status, a.body, status, code)
	}
	if a.retryAfter != retryAfter {
		t.Fatalf("%s: Retry-After %q, want %q", what, a.retryAfter, retryAfter)
	}
}

// TestRetryAfterHoldsUpstream: after a 429 with Retry-After: 120, that
// upstream gets no request until the time has passed, whatever is asked
// for: 50 client requests (cached tag, tag list and referrers; tags,
// manifests and blobs never cached) make one upstream request. Cached
// content is answered stale, the rest gets 429 TOOMANYREQUESTS with the
// seconds left as Retry-After. Once the time has passed upstream is asked
// again.
func TestRetryAfterHoldsUpstream(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "app", "v1", testreg.RandomLayer(t, 1000))
	v2 := reg.PushImage(t, "app", "v2", testreg.RandomLayer(t, 1000))
	rec := newRecorder()
	e := newEnv(t, envOptions{observer: rec}, upstreamSpec{host: "registry.test", reg: reg})
	base := "/v2/registry.test/app"
	cached := []string{base + "/manifests/v1", base + "/tags/list", base + "/referrers/" + img.ManifestDigest.String()}
	misses := []string{base + "/manifests/v2", base + "/manifests/" + v2.ManifestDigest.String(),
		base + "/blobs/" + v2.Layers[0].Digest.String(), base + "/blobs/" + v2.Config.Digest.String()}
	for _, p := range cached {
		if resp, body := e.do(http.MethodGet, p, "Accept", accept); resp.StatusCode != http.StatusOK {
			t.Fatalf("caching %s: %d %s", p, resp.StatusCode, body)
		}
	}

	reg.Throttle(http.StatusTooManyRequests, "120")
	reg.ResetCounts()
	first := pullAll(e, 1, cached[0])[0]
	if first.status != http.StatusOK || first.cache != "STALE" || !bytes.Equal(first.body, img.Manifest) ||
		!strings.Contains(first.warning, "upstream asked to wait (429 Too Many Requests)") {
		t.Fatalf("cached tag meeting the 429: %d, X-Cache %q, Warning %q; want 200 STALE", first.status, first.cache, first.warning)
	}

	const rounds = 7 // 7 paths × 7 = 49 concurrent requests, 50 with the first
	var mu sync.Mutex
	got := map[string][]answer{}
	var wg sync.WaitGroup
	for _, p := range append(append([]string(nil), cached...), misses...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			as := pullAll(e, rounds, p)
			mu.Lock()
			got[p] = as
			mu.Unlock()
		}()
	}
	wg.Wait()
	if n := len(reg.Requests()); n != 1 {
		t.Fatalf("50 client requests made %d upstream requests, want 1: %+v", n, reg.Requests())
	}
	for _, p := range cached {
		for _, a := range got[p] {
			if a.err != nil || a.status != http.StatusOK || a.cache != "STALE" || a.warning == "" {
				t.Fatalf("cached %s during the hold: %v, %d, X-Cache %q, Warning %q; want 200 STALE with a Warning", p, a.err, a.status, a.cache, a.warning)
			}
		}
	}
	for _, p := range misses {
		for _, a := range got[p] {
			wantHeld(t, p, a, http.StatusTooManyRequests, "TOOMANYREQUESTS", "120")
		}
	}
	rec.mu.Lock()
	throttled := rec.throttled
	rec.mu.Unlock()
	if throttled < 3*rounds+len(misses) {
		t.Fatalf("%d answers counted as throttled, want at least %d", throttled, 3*rounds+len(misses))
	}

	// A minute later it is still held, with the Retry-After counting down.
	e.clock.Advance(time.Minute)
	wantHeld(t, "a minute later", pullAll(e, 1, misses[0])[0], http.StatusTooManyRequests, "TOOMANYREQUESTS", "60")
	// Once the time has passed upstream is asked again (still throttling:
	// a new hold), and once it answers everything flows.
	e.clock.Advance(time.Minute + time.Second)
	if a := pullAll(e, 1, cached[0])[0]; a.cache != "STALE" || len(reg.Requests()) != 2 {
		t.Fatalf("after the hold: X-Cache %q after %d upstream requests; want STALE after asking again", a.cache, len(reg.Requests()))
	}
	reg.Throttle(0, "")
	e.clock.Advance(2*time.Minute + time.Second)
	for _, p := range misses {
		if resp, body := e.do(http.MethodGet, p, "Accept", accept); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s after the hold: %d %q %s", p, resp.StatusCode, resp.Header.Get("X-Cache"), body)
		}
	}
	if n := strings.Count(e.logs.String(), "upstream asked to wait: no request is sent to it until then"); n != 2 {
		t.Fatalf("%d hold warnings, want one per hold (2):\n%s", n, e.logs)
	}
}

// TestRetryAfter503IsNotRetried: a 503 with Retry-After is not retried
// within the half second of the retry backoff: one upstream request, and
// the client gets 503 UNAVAILABLE with the Retry-After; later requests,
// a blob's too, are held without asking upstream.
func TestRetryAfter503IsNotRetried(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "app", "v1", testreg.RandomLayer(t, 1000))
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	reg.Throttle(http.StatusServiceUnavailable, "120")
	wantHeld(t, "manifest", pullAll(e, 1, "/v2/registry.test/app/manifests/v1")[0], http.StatusServiceUnavailable, "UNAVAILABLE", "120")
	if n := len(reg.Requests()); n != 1 {
		t.Fatalf("a 503 with Retry-After made %d upstream requests, want 1 (no retry)", n)
	}
	wantHeld(t, "blob", pullAll(e, 1, "/v2/registry.test/app/blobs/"+img.Layers[0].Digest.String())[0], http.StatusServiceUnavailable, "UNAVAILABLE", "120")
	if n := len(reg.Requests()); n != 1 {
		t.Fatalf("a blob during the hold made %d upstream requests, want none more", n-1)
	}
}

// TestRetryAfter429WithoutHeader: a 429 without Retry-After holds the
// upstream for a short default (10s), said as Retry-After: 10.
func TestRetryAfter429WithoutHeader(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	reg.PushImage(t, "app", "v1", testreg.RandomLayer(t, 1000))
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	reg.Throttle(http.StatusTooManyRequests, "")
	path := "/v2/registry.test/app/manifests/v1"
	for range 3 {
		wantHeld(t, "manifest", pullAll(e, 1, path)[0], http.StatusTooManyRequests, "TOOMANYREQUESTS", "10")
	}
	if n := len(reg.Requests()); n != 1 {
		t.Fatalf("3 pulls made %d upstream requests, want 1", n)
	}
	e.clock.Advance(10 * time.Second)
	wantHeld(t, "after 10s", pullAll(e, 1, path)[0], http.StatusTooManyRequests, "TOOMANYREQUESTS", "10")
	if n := len(reg.Requests()); n != 2 {
		t.Fatalf("after the hold upstream was asked %d times in all, want 2", n)
	}
}
