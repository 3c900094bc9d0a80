package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// Sentinel errors of this package, found with errors.Is.
var (
	// ErrInvalidOptions is wrapped by every validation error of New.
	ErrInvalidOptions = errors.New("invalid upstream options")
	// ErrNoCertificates means a CA file held no PEM certificate.
	ErrNoCertificates = errors.New("no PEM certificates found")
	// ErrForbiddenAddress refuses a connection to an internal address
	// (internal/netguard) other than the configured endpoint's, or to the
	// proxy's own listeners.
	ErrForbiddenAddress = errors.New("address not allowed")
	// ErrTooManyRedirects stops a redirect chain longer than maxRedirects.
	ErrTooManyRedirects = errors.New("too many redirects")
)

// StatusError is the cause inside the *oci.Error returned for an upstream
// answer that was not a success: what was asked and what upstream said.
// It names the path but never the query or any header.
type StatusError struct {
	Upstream string
	Method   string
	Path     string
	Status   int
	// Code and Message come from upstream's OCI error body, if any.
	Code    string
	Message string
	// Err is oci.ErrManifestUnknown or oci.ErrBlobUnknown for 404s.
	Err error
}

// Error implements error.
func (e *StatusError) Error() string {
	s := fmt.Sprintf("upstream %s: %s %s: %d", e.Upstream, e.Method, e.Path, e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns the sentinel behind a 404.
func (e *StatusError) Unwrap() error { return e.Err }

// kind says what a request fetched, to pick the code for a 404.
type kind int

const (
	kindOther kind = iota
	kindManifest
	kindBlob
)

// standardCodes are the error codes of the OCI distribution spec.
var standardCodes = map[string]bool{
	"BLOB_UNKNOWN": true, "BLOB_UPLOAD_INVALID": true, "BLOB_UPLOAD_UNKNOWN": true,
	"DIGEST_INVALID": true, "MANIFEST_BLOB_UNKNOWN": true, "MANIFEST_INVALID": true,
	"MANIFEST_UNKNOWN": true, "NAME_INVALID": true, "NAME_UNKNOWN": true,
	"SIZE_INVALID": true, "UNAUTHORIZED": true, "DENIED": true,
	"UNSUPPORTED": true, "TOOMANYREQUESTS": true,
}

// maxMessage bounds the upstream message copied into our errors.
const maxMessage = 256

// responseError turns a non-success upstream answer into an *oci.Error and
// closes its body. It reads at most oci.MaxSmallBody bytes of the body.
func (r *Registry) responseError(resp *http.Response, k kind) *oci.Error {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, oci.MaxSmallBody))
	if err != nil {
		body = nil // a body cut short says nothing reliable: keep the status alone
	}
	se := &StatusError{Upstream: r.host, Method: resp.Request.Method, Path: resp.Request.URL.Path, Status: resp.StatusCode}
	var env oci.Envelope
	if json.Unmarshal(body, &env) == nil && len(env.Errors) > 0 {
		se.Code = errorCode(env.Errors[0].Code)
		se.Message = sanitize(env.Errors[0].Message)
	}
	upCode := ""
	if standardCodes[se.Code] {
		upCode = se.Code
	}
	msg := func(def string) string {
		if se.Message != "" {
			return "upstream " + r.host + ": " + se.Message
		}
		return "upstream " + r.host + ": " + def
	}
	e := &oci.Error{Err: se}
	switch s := resp.StatusCode; {
	case s == http.StatusNotFound:
		e.Status = http.StatusNotFound
		switch {
		case upCode == oci.CodeNameUnknown:
			e.Code = oci.CodeNameUnknown
		case k == kindManifest:
			e.Code, se.Err = oci.CodeManifestUnknown, oci.ErrManifestUnknown
		case k == kindBlob:
			e.Code, se.Err = oci.CodeBlobUnknown, oci.ErrBlobUnknown
		case upCode != "":
			e.Code = upCode
		default:
			e.Code = oci.CodeNameUnknown
		}
		e.Message = msg("not found")
	case s == http.StatusUnauthorized:
		e.Status, e.Code, e.Message = s, oci.CodeUnauthorized, msg("authentication required")
	case s == http.StatusForbidden:
		e.Status, e.Code, e.Message = s, oci.CodeDenied, msg("access denied")
	case s == http.StatusTooManyRequests:
		e.Status, e.Code, e.Message = s, oci.CodeTooManyRequests, msg("too many requests")
		e.RetryAfter = r.retryAfter(resp, DefaultThrottleWait)
	case s >= 500:
		r.serverError(e, resp)
	case s >= 400:
		e.Status, e.Code, e.Message = s, upCode, msg(http.StatusText(s))
		if e.Code == "" {
			e.Code = oci.CodeUnsupported
		}
	default:
		e.Status, e.Code = http.StatusBadGateway, oci.CodeUnavailable
		e.Message = fmt.Sprintf("upstream %s answered unexpected status %d", r.host, s)
	}
	return e
}

// serverError fills e for a 5xx answer: 502 UNAVAILABLE, but a 503 with
// a Retry-After keeps its status, so that clients (and the mirror's
// hold) honour the wait upstream named.
func (r *Registry) serverError(e *oci.Error, resp *http.Response) {
	e.Status, e.Code = http.StatusBadGateway, oci.CodeUnavailable
	e.Message = fmt.Sprintf("upstream %s answered %d", r.host, resp.StatusCode)
	e.RetryAfter = r.retryAfter(resp, 0)
	if resp.StatusCode == http.StatusServiceUnavailable && e.RetryAfter != "" {
		e.Status = http.StatusServiceUnavailable
		e.Message = fmt.Sprintf("upstream %s answered 503 and asked to wait %ss", r.host, e.RetryAfter)
	}
}

// retryAfter returns resp's Retry-After (either form, see
// ParseRetryAfter) as delay-seconds, bounded by MaxRetryAfter; def in
// seconds when it has none or an unreadable one, "" when def is 0.
func (r *Registry) retryAfter(resp *http.Response, def time.Duration) string {
	d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), r.now())
	switch {
	case ok:
		return RetryAfterSeconds(d)
	case def > 0:
		return RetryAfterSeconds(def)
	}
	return ""
}

// sanitize bounds an upstream message (cut at a character boundary) and
// replaces control characters (C0, DEL, C1) and line separators with
// spaces, invalid UTF-8 with U+FFFD.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.TrimSpace(s)
}

// maxCode bounds the error code kept from an upstream's answer.
const maxCode = 64

// errorCode is upstream's error code in upper case when it looks like
// one (letters, digits and '_', at most maxCode), else "": a code is
// logged in StatusError's text, and only the spec's codes reach clients.
func errorCode(c string) string {
	c = strings.ToUpper(c)
	if len(c) > maxCode || strings.Trim(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
		return ""
	}
	return c
}

// transportError maps a failure to get (or read) an upstream answer to an
// *oci.Error: timeouts 504, everything else 502 UNAVAILABLE. Messages name
// hosts, never URLs (a redirect URL's query is a secret). An *oci.Error
// already in the chain (auth: realm refused, token denied) is returned
// as is.
func (r *Registry) transportError(err error) error {
	var oe *oci.Error
	if errors.As(err, &oe) {
		return oe
	}
	cause, host := err, r.endpoint.Host
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err // its text holds the full URL
		if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
			host = u.Host
		}
	}
	where := "upstream " + r.host
	if host != r.endpoint.Host {
		where += " (" + host + ")"
	}
	var (
		ne       net.Error
		dnsErr   *net.DNSError
		x509Err  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		certErr  x509.CertificateInvalidError
		verifErr *tls.CertificateVerificationError
		recErr   tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, cause, "%s: request canceled", where)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return oci.Wrap(http.StatusGatewayTimeout, oci.CodeUnavailable, cause, "%s timed out", where)
	case errors.As(err, &dnsErr):
		return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, cause, "%s: DNS lookup of %s failed", where, dnsErr.Name)
	case errors.Is(err, syscall.ECONNREFUSED):
		return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, cause, "%s: connection refused", where)
	case errors.As(err, &x509Err), errors.As(err, &hostErr), errors.As(err, &certErr), errors.As(err, &verifErr):
		return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, cause, "%s: TLS certificate not trusted (trust its CA, or skip verification for this upstream)", where)
	case errors.As(err, &recErr):
		return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, cause, "%s: TLS handshake failed (plain HTTP server?)", where)
	case errors.Is(err, ErrForbiddenAddress):
		return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, cause, "%s: redirected or resolved to a forbidden address", where)
	case errors.Is(err, ErrTooManyRedirects):
		return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, cause, "%s: too many redirects", where)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, cause, "%s: connection closed early", where)
	}
	return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, cause, "%s unreachable", where)
}

// body maps read errors of an upstream response body (idle timeout,
// connection reset, truncation) to *oci.Error like transportError does.
type body struct {
	io.ReadCloser
	r *Registry
}

// Read implements io.Reader.
func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF { //nolint:errorlint // io.Reader's contract: the end is io.EOF itself, never wrapped
		err = b.r.transportError(err)
	}
	return n, err
}
