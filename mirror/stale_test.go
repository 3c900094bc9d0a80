package mirror_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/mirror"
)

// warningRE is RFC 7234's warning-value (mirror.WarningValueRE, in
// stale_fuzz_test.go).
var warningRE = mirror.WarningValueRE

// parseWarning checks v against the grammar and returns its parts.
func parseWarning(t *testing.T, v string) (code, agent, text string) {
	t.Helper()
	m := warningRE.FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("Warning %q is not an RFC 7234 warning-value", v)
	}
	return m[1], m[2], m[3]
}

// wantStaleWarning checks a stale answer's Warning: exactly want, and
// valid per RFC 7234 with warn-code 299 and warn-agent "-", as the
// distribution spec says.
func wantStaleWarning(t *testing.T, step string, resp *http.Response, want string) {
	t.Helper()
	got := resp.Header.Values("Warning")
	if len(got) != 1 || got[0] != want || resp.Header.Get("X-Cache") != "STALE" {
		t.Fatalf("%s: Warning %q, X-Cache %q; want exactly [%q], STALE", step, got, resp.Header.Get("X-Cache"), want)
	}
	if code, agent, _ := parseWarning(t, got[0]); code != "299" || agent != "-" {
		t.Fatalf("%s: warn-code %s, warn-agent %s; want 299 -", step, code, agent)
	}
}

// TestStaleTagWarningWhenUpstreamDown: through the listener, a tag
// answered stale because upstream is down (first the failed revalidation,
// then within the hold without asking) says so in the spec's Warning
// form, with the time upstream last confirmed the tag.
func TestStaleTagWarningWhenUpstreamDown(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	reg.PushImage(t, "app", "latest", testreg.RandomLayer(t, 1000))
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/manifests/latest"
	resp, body := e.do("GET", path, "Accept", accept)
	wantStatus(t, resp, body, 200, "")
	if w := resp.Header.Values("Warning"); len(w) != 0 {
		t.Fatalf("fresh answer with Warning %q", w)
	}
	reg.Stop()
	e.clock.Advance(90 * time.Minute) // the answer's time is the fetch's, not now
	const want = `299 - "Response is stale: upstream unavailable; cached 2026-01-01T00:00:00Z"`
	for _, step := range []string{"revalidation failed", "held after the failure"} {
		resp, body = e.do("GET", path, "Accept", accept)
		wantStatus(t, resp, body, 200, "")
		wantStaleWarning(t, step, resp, want)
	}
}

// TestStaleTagWarningWhenRateLimited: a tag whose revalidation the rate
// limit postponed carries the spec's Warning with that reason.
func TestStaleTagWarningWhenRateLimited(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, Headers: func() http.Header {
		return http.Header{"Ratelimit-Limit": {"100;w=3600"}, "Ratelimit-Remaining": {"5;w=3600"}}
	}})
	reg.PushImage(t, "app", "v1", testreg.RandomLayer(t, 1000))
	e := newEnv(t, envOptions{minRemaining: 10}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/manifests/v1"
	resp, body := e.do("GET", path, "Accept", accept)
	wantStatus(t, resp, body, 200, "")
	e.clock.Advance(time.Minute)
	resp, body = e.do("GET", path, "Accept", accept)
	wantStatus(t, resp, body, 200, "")
	wantStaleWarning(t, "postponed", resp,
		`299 - "Response is stale: revalidation postponed, upstream rate limit nearly used up; cached 2026-01-01T00:00:00Z"`)
}

// TestWarningParser: the grammar check refuses what RFC 7234 refuses, so
// the tests above prove something.
func TestWarningParser(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{
		`299 - "Response is stale"`,
		`110 container-registry-proxy "Response is stale: upstream unavailable"`,
		`299 proxy.example:3128 "a \"quoted\" word" "Sat, 01 Jan 2026 00:00:00 GMT"`,
	} {
		if !warningRE.MatchString(ok) {
			t.Errorf("valid %q refused", ok)
		}
	}
	for _, bad := range []string{
		`299 - Response is stale`, `299 "Response is stale"`, `29 - "x"`, `299 - "a "b" c"`,
		"299 - \"a\nb\"", `299 - "x`, `299 - "x\"`, `299  - "x"`,
	} {
		if warningRE.MatchString(bad) {
			t.Errorf("invalid %q accepted", bad)
		}
	}
}
