package mirror

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// outageGate remembers, per upstream, until when it is left alone.
//
// After a tag revalidation failed with a temporary error (an outage
// hold), cached tags are answered stale at once instead of each pull
// waiting for the retries (or a hanging upstream's timeout) first.
// Misses still ask upstream, having nothing else to answer with, and the
// first pull after the hold probes it again.
//
// After upstream asked to wait — a 429, or a 503 with Retry-After — no
// request at all is sent to it until the time has passed (a throttle
// hold, see throttle.go): cached content is answered stale, everything
// else gets upstream's status with the remaining wait as Retry-After.
//
// The memory is per process: each replica learns on its own.
type outageGate struct {
	mu        sync.Mutex
	until     map[string]time.Time // upstream host → end of the outage hold
	throttles map[string]throttle  // upstream host → throttle hold
}

// throttle is a hold after upstream asked to wait.
type throttle struct {
	until  time.Time
	status int // what upstream answered: 429 or 503
}

// Bounds of a throttle hold. A Retry-After longer than maxThrottle (the
// upstream client's bound too) is taken as maxThrottle; a 429 whose
// Retry-After is not delay-seconds (the upstream client gives every 429
// one; a token realm's may be a date) holds for defaultThrottle. A 503
// without Retry-After starts no throttle hold: it is retried, and a
// failed revalidation starts an outage hold.
const (
	maxThrottle     = 10 * time.Minute
	defaultThrottle = 10 * time.Second
)

// upstreamHeld reports whether host's cached tags are to be answered
// stale without asking it after an outage.
func (m *Mirror) upstreamHeld(host string) bool {
	g := &m.outages
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.until[host]
	return ok && m.opts.Now().Before(until)
}

// markDown starts (or extends) host's hold after cause, logging when a
// hold starts. A throttle hold in force already says more, and a
// revalidation cancelled by a shutdown says nothing about upstream.
func (m *Mirror) markDown(ctx context.Context, host string, cause error) {
	if m.opts.DownHold < 0 || stopped(ctx) {
		return
	}
	if _, throttled := m.throttleHold(host); throttled {
		return
	}
	now := m.opts.Now()
	g := &m.outages
	g.mu.Lock()
	if g.until == nil {
		g.until = map[string]time.Time{}
	}
	_, was := g.until[host]
	g.until[host] = now.Add(m.opts.DownHold)
	g.mu.Unlock()
	if !was {
		logx.From(ctx).WithError(cause).WithFields(map[string]any{logx.FieldUpstream: host, "hold": m.opts.DownHold.String()}).
			Warn("upstream unavailable: its cached tags are answered stale without asking it, and it is probed again after each hold, until it answers")
	}
}

// markUp ends host's hold after an answer from it, logging when one ends.
func (m *Mirror) markUp(ctx context.Context, host string) {
	g := &m.outages
	g.mu.Lock()
	_, was := g.until[host]
	delete(g.until, host)
	g.mu.Unlock()
	if was {
		logx.From(ctx).WithField(logx.FieldUpstream, host).Info("upstream answers again: cached tags are revalidated as usual")
	}
}

// throttleHold returns host's throttle hold while it lasts.
func (m *Mirror) throttleHold(host string) (throttle, bool) {
	g := &m.outages
	g.mu.Lock()
	defer g.mu.Unlock()
	h, ok := g.throttles[host]
	if ok && !m.opts.Now().Before(h.until) {
		delete(g.throttles, host)
		return throttle{}, false
	}
	return h, ok
}

// throttled returns the answer to a request for host while host is held
// after it asked to wait: its status, with the remaining wait (whole
// seconds, rounded up) as Retry-After. nil: not held.
func (m *Mirror) throttled(host string) error {
	h, ok := m.throttleHold(host)
	if !ok {
		return nil
	}
	left := h.until.Sub(m.opts.Now())
	secs := strconv.FormatInt(int64((left+time.Second-1)/time.Second), 10)
	code := oci.CodeTooManyRequests
	if h.status != http.StatusTooManyRequests {
		code = oci.CodeUnavailable
	}
	e := oci.Errorf(h.status, code, "upstream %s asked to wait (%d %s): it is not asked again for %ss", host, h.status, http.StatusText(h.status), secs)
	e.RetryAfter = secs
	return e
}

// throttleOf returns the status and wait upstream asked for with err, if
// it did (see maxThrottle): a 429, or a 503 with a Retry-After. A
// Retry-After of 0 asks for no wait.
func throttleOf(err error) (status int, wait time.Duration, ok bool) {
	var oe *oci.Error
	if err == nil || !errors.As(err, &oe) || (oe.Status != http.StatusTooManyRequests && oe.Status != http.StatusServiceUnavailable) {
		return 0, 0, false
	}
	n, perr := strconv.ParseInt(oe.RetryAfter, 10, 64)
	switch {
	case perr == nil && n <= 0:
		return 0, 0, false
	case perr == nil:
		wait = time.Duration(min(n, int64(maxThrottle/time.Second))) * time.Second
	case oe.Status == http.StatusTooManyRequests:
		wait = defaultThrottle
	default:
		return 0, 0, false
	}
	return oe.Status, wait, true
}

// noteThrottle starts (or extends) host's throttle hold when err is
// upstream asking to wait, logging when a hold starts.
func (m *Mirror) noteThrottle(ctx context.Context, host string, err error) {
	status, wait, ok := throttleOf(err)
	if !ok {
		return
	}
	now := m.opts.Now()
	until := now.Add(wait)
	g := &m.outages
	g.mu.Lock()
	if g.throttles == nil {
		g.throttles = map[string]throttle{}
	}
	prev, was := g.throttles[host]
	was = was && now.Before(prev.until)
	if !was || until.After(prev.until) {
		g.throttles[host] = throttle{until: until, status: status}
	}
	g.mu.Unlock()
	if !was {
		logx.From(ctx).WithError(err).WithFields(map[string]any{logx.FieldUpstream: host, logx.FieldStatus: status, "retry_after": wait.String(), "until": until.UTC().Format(time.RFC3339)}).
			Warn("upstream asked to wait: no request is sent to it until then; cached content is answered stale, everything else gets its status with Retry-After")
	}
}
