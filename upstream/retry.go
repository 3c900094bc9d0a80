package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// defaultBackoff is the wait before each retry: at most two retries.
var defaultBackoff = [...]time.Duration{100 * time.Millisecond, 400 * time.Millisecond}

// retryTransport retries idempotent requests (GET and HEAD without a
// body) when the connection failed before any response arrived or when
// upstream answered 502, 503 or 504. It never retries 429 (retrying makes
// rate limiting worse), timeouts (the caller has already waited a full
// timeout), TLS verification failures or a cancelled context.
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
		if attempt >= len(t.backoff) || ctx.Err() != nil || !retriable(resp, err) {
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
