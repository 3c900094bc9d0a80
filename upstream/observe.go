package upstream

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Observer is told about the traffic of a Registry (metrics). Its methods
// are called on request paths and must not block.
type Observer interface {
	// UpstreamRequest is told about every HTTP request sent upstream
	// (redirect hops and retries included): status is the numeric code,
	// or "error" when no response came.
	UpstreamRequest(upstream, status string)
	// RateLimit is told about every answer that carried Docker Hub-style
	// rate-limit headers: the numbers before ';' of ratelimit-limit and
	// ratelimit-remaining, -1 when absent or malformed.
	RateLimit(upstream string, limit, remaining int64)
}

// DefaultRateWindow is the rate-limit window assumed when the headers do
// not say (Docker Hub: 6 hours).
const DefaultRateWindow = 6 * time.Hour

// observeTransport reports the outcome of every request to an Observer.
// It sits at the bottom of the stack, so each attempt, redirect hop and
// token request through it is one request.
type observeTransport struct {
	base     http.RoundTripper
	upstream string
	obs      Observer
}

// RoundTrip implements http.RoundTripper.
func (t *observeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	status := "error"
	if err == nil {
		status = strconv.Itoa(resp.StatusCode)
	}
	t.obs.UpstreamRequest(t.upstream, status)
	return resp, err
}

// ParseRateLimit reads a Docker Hub-style rate-limit header value such as
// "100;w=21600": the count before ';' and the window in seconds from the
// w= parameter (0 when absent). ok is false when there is no count.
func ParseRateLimit(v string) (n int64, window time.Duration, ok bool) {
	head, params, _ := strings.Cut(v, ";")
	n, err := strconv.ParseInt(strings.TrimSpace(head), 10, 64)
	if err != nil || n < 0 {
		return 0, 0, false
	}
	for _, p := range strings.Split(params, ";") {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "w") {
			if s, err := strconv.ParseInt(val, 10, 64); err == nil && s > 0 {
				window = time.Duration(s) * time.Second
			}
		}
	}
	return n, window, true
}

// RateRemaining returns the last ratelimit-remaining count upstream sent,
// the window it applies to (from w= on either header, else
// DefaultRateWindow) and when it was seen; ok is false before any. The
// mirror postpones tag revalidation on it.
func (r *Registry) RateRemaining() (remaining int64, window time.Duration, seen time.Time, ok bool) {
	r.mu.Lock()
	limit, rem, seen := r.rateLimit, r.rateRemains, r.rateSeen
	r.mu.Unlock()
	remaining, window, ok = ParseRateLimit(rem)
	if !ok {
		return 0, 0, time.Time{}, false
	}
	if window == 0 {
		_, window, _ = ParseRateLimit(limit)
	}
	if window == 0 {
		window = DefaultRateWindow
	}
	return remaining, window, seen, true
}

// reportRateLimit passes parsed rate-limit headers to the observer.
func reportRateLimit(obs Observer, upstream, limit, remaining string) {
	if obs == nil {
		return
	}
	l, _, ok := ParseRateLimit(limit)
	if !ok {
		l = -1
	}
	rem, _, ok := ParseRateLimit(remaining)
	if !ok {
		rem = -1
	}
	obs.RateLimit(upstream, l, rem)
}
