package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// defaultBackoff is the wait before each retry: at most two retries.
var defaultBackoff = [...]time.Duration{100 * time.Millisecond, 400 * time.Millisecond}

// MaxRetryAfter bounds the wait an upstream's Retry-After may ask for: a
// longer one (or a date further away) is taken as this long, so that a
// hostile or confused upstream cannot shut an upstream off for days.
const MaxRetryAfter = 10 * time.Minute

// DefaultThrottleWait is the wait assumed for a 429 that carries no
// (readable) Retry-After: the Retry-After its error carries, and so how
// long the mirror leaves that upstream alone.
const DefaultThrottleWait = 10 * time.Second

// maxRetryAfterLen bounds the header value looked at (an HTTP-date is 29
// characters).
const maxRetryAfterLen = 64

// ParseRetryAfter reads a Retry-After value (RFC 9110 §10.2.3): either
// delay-seconds (ASCII digits only) or an HTTP-date, taken relative to
// now. It returns the wait, never negative (a date in the past is 0) and
// at most MaxRetryAfter, and false for a value of neither form or longer
// than 64 bytes.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > maxRetryAfterLen {
		return 0, false
	}
	if allDigits(v) {
		// Nine significant digits already exceed the bound: no overflow
		// below.
		digits := strings.TrimLeft(v, "0")
		if len(digits) > 9 {
			return MaxRetryAfter, true
		}
		n, err := strconv.Atoi("0" + digits)
		if err != nil {
			return 0, false
		}
		return min(time.Duration(n)*time.Second, MaxRetryAfter), true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := at.Sub(now)
	switch {
	case d < 0:
		return 0, true
	case d > MaxRetryAfter:
		return MaxRetryAfter, true
	}
	return d, true
}

func allDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// RetryAfterSeconds formats a wait as delay-seconds, rounded up.
func RetryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// retryTransport retries idempotent requests (GET and HEAD without a
// body) when the connection failed before any response arrived or when
// upstream answered 502, 503 or 504 — unless that answer carries a
// Retry-After longer than the wait before the retry: upstream said when
// to come back, and the answer is returned for the caller to honour
// (the mirror holds the upstream that long). It never retries 429
// (retrying makes rate limiting worse), timeouts (the caller has already
// waited a full timeout), TLS verification failures or a cancelled
// context.
type retryTransport struct {
	base    http.RoundTripper
	backoff []time.Duration
}

// RoundTrip implements http.RoundTripper.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if (req.Method != http.MethodGet && req.Method != http.MethodHead) || (req.Body != nil && req.Body != http.NoBody) {
		return t.base.RoundTrip(req)
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		resp, err := t.base.RoundTrip(req)
		if attempt >= len(t.backoff) || ctx.Err() != nil || !retriable(resp, err) || waitLonger(resp, t.backoff[attempt]) {
			return resp, err
		}
		if resp != nil {
			_, _ = io.CopyN(io.Discard, resp.Body, 16<<10) //nolint:errcheck // the answer is thrown away: a failed read only costs the connection
			resp.Body.Close()
		}
		timer := time.NewTimer(t.backoff[attempt])
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
	}
}

// waitLonger reports whether resp asks, with a Retry-After, for a longer
// wait than backoff (the backoff is real time: so is the date's "now").
func waitLonger(resp *http.Response, backoff time.Duration) bool {
	if resp == nil {
		return false
	}
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return false
	}
	d, ok := ParseRetryAfter(v, time.Now())
	return ok && d > backoff
}

// retriable reports whether one attempt's outcome is worth another try.
func retriable(resp *http.Response, err error) bool {
	if err == nil {
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrForbiddenAddress) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
		header           tls.RecordHeaderError
	)
	if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &header) {
		return false
	}
	return true
}
