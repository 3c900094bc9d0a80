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
