package mirror_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// TestOutageHoldAnswersCachedTagsAtOnce: once a revalidation failed with a
// temporary error, cached tags of that upstream are answered stale without
// asking it (no request, no retry wait) until the hold ends; then one pull
// probes it, and an answer ends the hold. A tag never cached still asks
// upstream during the hold: there is nothing else to answer with.
func TestOutageHoldAnswersCachedTagsAtOnce(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "app", "v1", []byte("layer"))
	e := newEnv(t, envOptions{downHold: time.Minute}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/manifests/v1"
	get := func(step, wantCache string) {
		t.Helper()
		resp, body := e.do(http.MethodGet, path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Cache") != wantCache || !bytes.Equal(body, img.Manifest) {
			t.Fatalf("%s: status %d, X-Cache %q, %d bytes; want 200, %s and the manifest", step, resp.StatusCode, resp.Header.Get("X-Cache"), len(body), wantCache)
		}
		if wantCache == "STALE" && !strings.HasPrefix(resp.Header.Get("Warning"), `299 - "Response is stale: `) {
			t.Fatalf("%s: stale answer without a Warning 110: %q", step, resp.Header.Get("Warning"))
		}
	}
	manifestReqs := func() int { return len(reg.Requests()) }

	get("first pull", "MISS")
	reg.SetFault(testreg.FaultStatus(http.StatusServiceUnavailable))
	reg.ResetCounts()
	get("upstream failing", "STALE")
	if n := manifestReqs(); n != 3 {
		t.Fatalf("the failing revalidation made %d upstream requests, want 3 (one and two retries)", n)
	}
	if !strings.Contains(e.logs.String(), "upstream unavailable: its cached tags are answered stale") {
		t.Fatalf("no log line for the start of the hold:\n%s", e.logs)
	}

	reg.ResetCounts()
	for range 5 {
		get("during the hold", "STALE")
	}
	if n := manifestReqs(); n != 0 {
		t.Fatalf("5 pulls during the hold made %d upstream requests, want 0", n)
	}
	resp, _ := e.do(http.MethodGet, "/v2/registry.test/app/manifests/never-cached")
	if resp.StatusCode < 500 || manifestReqs() == 0 {
		t.Fatalf("uncached tag during the hold: status %d after %d upstream requests; want upstream asked and a 5xx", resp.StatusCode, manifestReqs())
	}

	// The hold ends: one pull probes upstream (still failing) and starts
	// another.
	e.clock.Advance(time.Minute + time.Second)
	reg.ResetCounts()
	get("probe after the hold", "STALE")
	get("held again", "STALE")
	if n := manifestReqs(); n != 3 {
		t.Fatalf("probe and a held pull made %d upstream requests, want 3 (the probe and its retries)", n)
	}

	// Upstream back: after the hold the probe revalidates and ends it.
	reg.SetFault(testreg.FaultNone)
	e.clock.Advance(time.Minute + time.Second)
	get("upstream back", "REVALIDATED")
	get("after the outage", "REVALIDATED")
	if !strings.Contains(e.logs.String(), "upstream answers again") {
		t.Fatalf("no log line for the end of the hold:\n%s", e.logs)
	}
}

// TestOutageHoldOff: a negative DownHold asks upstream on every pull, as
// before the hold existed.
func TestOutageHoldOff(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	reg.PushImage(t, "app", "v1", []byte("layer"))
	e := newEnv(t, envOptions{downHold: -1}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/manifests/v1"
	e.do(http.MethodGet, path)
	reg.SetFault(testreg.FaultStatus(http.StatusServiceUnavailable))
	reg.ResetCounts()
	for range 2 {
		if resp, _ := e.do(http.MethodGet, path); resp.Header.Get("X-Cache") != "STALE" {
			t.Fatalf("X-Cache %q, want STALE", resp.Header.Get("X-Cache"))
		}
	}
	if n := len(reg.Requests()); n != 6 {
		t.Fatalf("2 pulls with the hold off made %d upstream requests, want 6", n)
	}
}
