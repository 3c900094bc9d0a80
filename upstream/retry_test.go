package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scripted is a RoundTripper answering from a list of outcomes.
type scripted struct {
	outcomes []func() (*http.Response, error)
	calls    int
	onCall   func(n int)
}

func (s *scripted) RoundTrip(req *http.Request) (*http.Response, error) {
	s.calls++
	if s.onCall != nil {
		s.onCall(s.calls)
	}
	i := min(s.calls-1, len(s.outcomes)-1)
	return s.outcomes[i]()
}

func status(code int) func() (*http.Response, error) {
	return func() (*http.Response, error) {
		return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("x"))}, nil
	}
}

// statusRA answers code with a Retry-After header.
func statusRA(code int, retryAfter string) func() (*http.Response, error) {
	return func() (*http.Response, error) {
		return &http.Response{StatusCode: code, Header: http.Header{"Retry-After": {retryAfter}}, Body: io.NopCloser(strings.NewReader("x"))}, nil
	}
}

func fail(err error) func() (*http.Response, error) {
	return func() (*http.Response, error) { return nil, err }
}

func TestRetryTransport(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	tests := []struct {
		name       string
		method     string
		body       io.Reader
		outcomes   []func() (*http.Response, error)
		wantCalls  int
		wantStatus int // 0: want an error
	}{
		{name: "success", method: "GET", outcomes: []func() (*http.Response, error){status(200)}, wantCalls: 1, wantStatus: 200},
		{name: "503 then 200", method: "GET", outcomes: []func() (*http.Response, error){status(503), status(200)}, wantCalls: 2, wantStatus: 200},
		{name: "502 504 200", method: "HEAD", outcomes: []func() (*http.Response, error){status(502), status(504), status(200)}, wantCalls: 3, wantStatus: 200},
		{name: "503 forever gives up after two retries", method: "GET", outcomes: []func() (*http.Response, error){status(503)}, wantCalls: 3, wantStatus: 503},
		{name: "429 never retried", method: "GET", outcomes: []func() (*http.Response, error){status(429)}, wantCalls: 1, wantStatus: 429},
		{name: "500 not retried", method: "GET", outcomes: []func() (*http.Response, error){status(500)}, wantCalls: 1, wantStatus: 500},
		{name: "404 not retried", method: "GET", outcomes: []func() (*http.Response, error){status(404)}, wantCalls: 1, wantStatus: 404},
		{name: "connection refused then 200", method: "GET", outcomes: []func() (*http.Response, error){fail(refused), status(200)}, wantCalls: 2, wantStatus: 200},
		{name: "connection refused forever", method: "GET", outcomes: []func() (*http.Response, error){fail(refused)}, wantCalls: 3},
		{name: "timeout not retried", method: "GET", outcomes: []func() (*http.Response, error){fail(timeout)}, wantCalls: 1},
		{name: "forbidden address not retried", method: "GET", outcomes: []func() (*http.Response, error){fail(&net.OpError{Op: "dial", Net: "tcp", Err: ErrForbiddenAddress})}, wantCalls: 1},
		{name: "503 with Retry-After not retried", method: "GET", outcomes: []func() (*http.Response, error){statusRA(503, "120"), status(200)}, wantCalls: 1, wantStatus: 503},
		{name: "503 with a Retry-After date not retried", method: "HEAD", outcomes: []func() (*http.Response, error){statusRA(503, "Fri, 01 Jan 2100 00:00:00 GMT"), status(200)}, wantCalls: 1, wantStatus: 503},
		{name: "502 with Retry-After not retried", method: "GET", outcomes: []func() (*http.Response, error){statusRA(502, "30"), status(200)}, wantCalls: 1, wantStatus: 502},
		{name: "503 with Retry-After 0 retried", method: "GET", outcomes: []func() (*http.Response, error){statusRA(503, "0"), status(200)}, wantCalls: 2, wantStatus: 200},
		{name: "503 with an unreadable Retry-After retried", method: "GET", outcomes: []func() (*http.Response, error){statusRA(503, "later"), status(200)}, wantCalls: 2, wantStatus: 200},
		{name: "429 with Retry-After not retried", method: "GET", outcomes: []func() (*http.Response, error){statusRA(429, "1"), status(200)}, wantCalls: 1, wantStatus: 429},
		{name: "POST not retried", method: "POST", body: strings.NewReader("x"), outcomes: []func() (*http.Response, error){status(503)}, wantCalls: 1, wantStatus: 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := &scripted{outcomes: tt.outcomes}
			rt := &retryTransport{base: base, backoff: []time.Duration{time.Millisecond, time.Millisecond}}
			req, _ := http.NewRequest(tt.method, "http://registry.test/v2/", tt.body)
			resp, err := rt.RoundTrip(req)
			if base.calls != tt.wantCalls {
				t.Errorf("calls = %d, want %d", base.calls, tt.wantCalls)
			}
			if tt.wantStatus == 0 {
				if err == nil {
					t.Fatalf("want error, got %d", resp.StatusCode)
				}
				return
			}
			if err != nil || resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %v %v, want %d", resp, err, tt.wantStatus)
			}
		})
	}
}

func TestRetryTransportRespectsContext(t *testing.T) {
	t.Parallel()
	// A backoff far longer than the test: only the context ends it.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	base := &scripted{outcomes: []func() (*http.Response, error){status(503)}}
	rt := &retryTransport{base: base, backoff: []time.Duration{time.Hour, time.Hour}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://registry.test/v2/", nil)
	_, err := rt.RoundTrip(req)
	if base.calls != 1 {
		t.Fatalf("calls = %d", base.calls)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's error", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 7 ", 7 * time.Second, true},
		{"0", 0, true},
		{"600", MaxRetryAfter, true},
		{"601", MaxRetryAfter, true},
		{"99999999999999999999999999", MaxRetryAfter, true},
		{"Thu, 01 Jan 2026 00:01:30 GMT", 90 * time.Second, true},    // IMF-fixdate
		{"Thursday, 01-Jan-26 00:00:10 GMT", 10 * time.Second, true}, // obsolete RFC 850
		{"Thu Jan  1 00:00:05 2026", 5 * time.Second, true},          // obsolete asctime
		{"Wed, 31 Dec 2025 23:00:00 GMT", 0, true},                   // in the past
		{"Fri, 01 Jan 2100 00:00:00 GMT", MaxRetryAfter, true},
		{"", 0, false},
		{"-5", 0, false},
		{"+5", 0, false},
		{"1.5", 0, false},
		{"5s", 0, false},
		{"soon", 0, false},
		{"2026-01-01T00:01:00Z", 0, false},
		{strings.Repeat("1", 65), 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	for d, want := range map[time.Duration]string{0: "0", time.Second: "1", 1500 * time.Millisecond: "2", MaxRetryAfter: "600"} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %q, want %q", d, got, want)
		}
	}
}
