package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// newFakeClock is a settable clock for TokenOptions.Now.
func newFakeClock() *testutil.FakeClock {
	return testutil.NewFakeClock(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
}

// tokenServer is a fake token realm that hands out tok-1, tok-2, … and
// records what it was asked.
type tokenServer struct {
	*httptest.Server
	hits     atomic.Int64
	mu       sync.Mutex
	lastAuth string
	lastQ    url.Values
	// reply, when set, writes the answer instead of the default JSON.
	reply func(w http.ResponseWriter, r *http.Request, n int64)
	// gate, when set, blocks every answer until it is closed.
	gate chan struct{}
	// arrived, when set, receives a value for every request, before gate.
	arrived chan struct{}
}

func newTokenServer(t *testing.T) *tokenServer {
	t.Helper()
	ts := &tokenServer{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := ts.hits.Add(1)
		ts.mu.Lock()
		ts.lastAuth = r.Header.Get("Authorization")
		ts.lastQ = r.URL.Query()
		ts.mu.Unlock()
		if ts.arrived != nil {
			ts.arrived <- struct{}{}
		}
		if ts.gate != nil {
			<-ts.gate
		}
		if ts.reply != nil {
			ts.reply(w, r, n)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"token": fmt.Sprintf("tok-%d", n), "expires_in": 300})
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) last() (string, url.Values) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.lastAuth, ts.lastQ
}

func TestTokenCacheSingleflight(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t)
	ts.gate = make(chan struct{})
	c := NewTokenCache(ts.Client(), TokenOptions{})
	req := TokenRequest{Realm: ts.URL + "/token", Service: "svc", Scopes: []string{"repository:a:pull"}}

	const n = 100
	var wg sync.WaitGroup
	var started sync.WaitGroup
	results := make([]string, n)
	errs := make([]error, n)
	started.Add(n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			results[i], errs[i] = c.Token(t.Context(), req)
		}()
	}
	started.Wait()
	close(ts.gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || results[i] != "tok-1" {
			t.Fatalf("call %d: %q, %v", i, results[i], errs[i])
		}
	}
	if got := ts.hits.Load(); got != 1 {
		t.Fatalf("realm requests = %d, want 1", got)
	}
	if got := c.Requests(); got != 1 {
		t.Fatalf("Requests() = %d, want 1", got)
	}
}

func TestTokenCacheExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		answer    map[string]any
		stillHit  time.Duration // advance: still cached
		refetchAt time.Duration // advance (cumulative): fetched again
	}{
		{name: "expires_in 300", answer: map[string]any{"expires_in": 300}, stillHit: 260 * time.Second, refetchAt: 271 * time.Second},
		{name: "default 60s", answer: map[string]any{}, stillHit: 50 * time.Second, refetchAt: 55 * time.Second},
		{name: "short lifetime keeps half", answer: map[string]any{"expires_in": 6}, stillHit: 2 * time.Second, refetchAt: 3 * time.Second},
		{name: "issued_at in the past shortens", answer: map[string]any{"expires_in": 300, "issued_at": "2023-12-31T23:58:00Z"}, stillHit: 161 * time.Second, refetchAt: 163 * time.Second},
		{name: "issued_at in the future ignored", answer: map[string]any{"expires_in": 300, "issued_at": "2024-01-01T01:00:00Z"}, stillHit: 260 * time.Second, refetchAt: 271 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTokenServer(t)
			ts.reply = func(w http.ResponseWriter, r *http.Request, n int64) {
				a := map[string]any{"token": fmt.Sprintf("tok-%d", n)}
				for k, v := range tt.answer {
					a[k] = v
				}
				_ = json.NewEncoder(w).Encode(a)
			}
			clock := newFakeClock()
			c := NewTokenCache(ts.Client(), TokenOptions{Now: clock.Now})
			req := TokenRequest{Realm: ts.URL, Service: "svc", Scopes: []string{"s"}}
			ctx := t.Context()
			if tok, err := c.Token(ctx, req); err != nil || tok != "tok-1" {
				t.Fatalf("first: %q %v", tok, err)
			}
			clock.Advance(tt.stillHit)
			if tok, err := c.Token(ctx, req); err != nil || tok != "tok-1" {
				t.Fatalf("after %v: %q %v, want cached tok-1", tt.stillHit, tok, err)
			}
			clock.Advance(tt.refetchAt - tt.stillHit)
			if tok, err := c.Token(ctx, req); err != nil || tok != "tok-2" {
				t.Fatalf("after %v: %q %v, want tok-2", tt.refetchAt, tok, err)
			}
			if got := ts.hits.Load(); got != 2 {
				t.Fatalf("realm requests = %d", got)
			}
		})
	}
}

func TestTokenCacheAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		body       string
		wantToken  string
		wantStatus int
		wantCode   string
	}{
		{name: "token", status: 200, body: `{"token":"abc"}`, wantToken: "abc"},
		{name: "access_token alias", status: 200, body: `{"access_token":"xyz","expires_in":100}`, wantToken: "xyz"},
		{name: "token preferred", status: 200, body: `{"token":"a","access_token":"b"}`, wantToken: "a"},
		{name: "no token", status: 200, body: `{"expires_in":100}`, wantStatus: 502, wantCode: oci.CodeUnavailable},
		{name: "malformed json", status: 200, body: `{"token":`, wantStatus: 502, wantCode: oci.CodeUnavailable},
		{name: "body over bound", status: 200, body: `{"token":"` + strings.Repeat("a", oci.MaxSmallBody) + `"}`, wantStatus: 502, wantCode: oci.CodeUnavailable},
		{name: "unauthorized", status: 401, body: `{}`, wantStatus: 401, wantCode: oci.CodeUnauthorized},
		{name: "forbidden", status: 403, body: `{}`, wantStatus: 403, wantCode: oci.CodeDenied},
		{name: "rate limited", status: 429, body: `{}`, wantStatus: 429, wantCode: oci.CodeTooManyRequests},
		{name: "server error", status: 500, body: `{}`, wantStatus: 502, wantCode: oci.CodeUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTokenServer(t)
			ts.reply = func(w http.ResponseWriter, r *http.Request, n int64) {
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}
			c := NewTokenCache(ts.Client(), TokenOptions{})
			creds := Credentials{Username: "bob", Password: "hunter2"}
			tok, err := c.Token(t.Context(), TokenRequest{Realm: ts.URL, Credentials: creds})
			if tt.wantCode == "" {
				if err != nil || tok != tt.wantToken {
					t.Fatalf("Token = %q, %v; want %q", tok, err, tt.wantToken)
				}
				return
			}
			var oe *oci.Error
			if !errors.As(err, &oe) || oe.Status != tt.wantStatus || oe.Code != tt.wantCode {
				t.Fatalf("err = %v, want %d %s", err, tt.wantStatus, tt.wantCode)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("password in error: %v", err)
			}
			// Errors are not cached.
			_, _ = c.Token(t.Context(), TokenRequest{Realm: ts.URL, Credentials: creds})
			if got := ts.hits.Load(); got != 2 {
				t.Fatalf("realm requests = %d, want 2 (errors not cached)", got)
			}
		})
	}
}

func TestTokenRequestShape(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t)
	c := NewTokenCache(ts.Client(), TokenOptions{UserAgent: "crp-test"})
	req := TokenRequest{
		Realm:       ts.URL + "/token?scope=repository:nv/x:pull&foo=bar",
		Service:     "registry.test",
		Scopes:      []string{"repository:a:pull", "repository:b:pull"},
		Credentials: Credentials{Username: "bob", Password: "pw"},
	}
	if _, err := c.Token(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	authz, q := ts.last()
	if want := "Basic Ym9iOnB3"; authz != want {
		t.Errorf("Authorization = %q, want %q", authz, want)
	}
	if got := q["scope"]; strings.Join(got, " ") != "repository:nv/x:pull repository:a:pull repository:b:pull" {
		t.Errorf("scope = %q", got)
	}
	if q.Get("service") != "registry.test" || q.Get("foo") != "bar" {
		t.Errorf("query = %v", q)
	}

	// Anonymous requests carry no Authorization and use another cache key.
	anon := req
	anon.Credentials = Credentials{}
	if tok, err := c.Token(t.Context(), anon); err != nil || tok != "tok-2" {
		t.Fatalf("anonymous token = %q, %v; want a separate tok-2", tok, err)
	}
	if authz, _ := ts.last(); authz != "" {
		t.Errorf("anonymous Authorization = %q", authz)
	}
}

// TestTokenCacheReject: a token upstream refused is dropped and fetched
// again once; refusing a token that was already replaced keeps the newer
// one.
func TestTokenCacheReject(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t)
	c := NewTokenCache(ts.Client(), TokenOptions{})
	req := TokenRequest{Realm: ts.URL, Scopes: []string{"s"}}
	ctx := t.Context()
	if tok, err := c.Token(ctx, req); err != nil || tok != "tok-1" {
		t.Fatalf("first token %q, %v", tok, err)
	}
	c.Reject(req.Key(), "tok-1")
	if _, ok := c.Cached(req.Key()); ok {
		t.Fatal("still cached after Reject")
	}
	if tok, _ := c.Token(ctx, req); tok != "tok-2" {
		t.Fatalf("after Reject got %q, want a fresh tok-2", tok)
	}
	c.Reject(req.Key(), "tok-1") // a late refusal of the old token
	if tok, _ := c.Token(ctx, req); tok != "tok-2" || ts.hits.Load() != 2 {
		t.Fatalf("after a stale Reject got %q with %d realm requests, want the cached tok-2 and 2", tok, ts.hits.Load())
	}
}

func TestTokenCacheNetworkErrors(t *testing.T) {
	t.Parallel()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(hang) })

	tests := []struct {
		name       string
		realm      string
		opts       TokenOptions
		ctxTimeout time.Duration
		wantStatus int
	}{
		{name: "connection refused", realm: closedURL + "/token", wantStatus: 502},
		{name: "invalid realm", realm: "::nope", wantStatus: 502},
		{name: "realm timeout", realm: slow.URL, opts: TokenOptions{Timeout: 50 * time.Millisecond}, wantStatus: 504},
		{name: "caller gives up", realm: slow.URL + "/other", ctxTimeout: 50 * time.Millisecond, wantStatus: 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewTokenCache(nil, tt.opts)
			ctx := t.Context()
			if tt.ctxTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxTimeout)
				defer cancel()
			}
			_, err := c.Token(ctx, TokenRequest{Realm: tt.realm, Credentials: Credentials{Username: "u", Password: "secretpw"}})
			if got := oci.StatusOf(err); got != tt.wantStatus || oci.CodeOf(err) != oci.CodeUnavailable {
				t.Fatalf("err = %v (status %d), want %d UNAVAILABLE", err, got, tt.wantStatus)
			}
			if strings.Contains(err.Error(), "secretpw") || strings.Contains(err.Error(), "?") {
				t.Fatalf("error leaks details: %v", err)
			}
		})
	}
}

// gatedTokenServer is a token server that holds every answer until
// release is called, and reports each request on arrived.
func gatedTokenServer(t *testing.T) (ts *tokenServer, release func()) {
	t.Helper()
	ts = newTokenServer(t)
	ts.gate, ts.arrived = make(chan struct{}), make(chan struct{}, 16)
	var once sync.Once
	release = func() { once.Do(func() { close(ts.gate) }) }
	t.Cleanup(release) // registered after the server's Close: runs first
	return ts, release
}

// tokenResult is what one Token call returned.
type tokenResult struct {
	token string
	err   error
}

// TestTokenLeaderHangsUp: the request that started a realm request hangs
// up; it gets a 504 at once, while the realm request goes on and every
// other caller waiting for the same token gets it. The realm is asked
// once.
func TestTokenLeaderHangsUp(t *testing.T) {
	t.Parallel()
	ts, release := gatedTokenServer(t)
	c := NewTokenCache(ts.Client(), TokenOptions{})
	req := TokenRequest{Realm: ts.URL + "/token", Service: "svc", Scopes: []string{"repository:a:pull"}}

	leaderCtx, hangUp := context.WithCancel(t.Context())
	leader := make(chan tokenResult, 1)
	go func() {
		tok, err := c.Token(leaderCtx, req)
		leader <- tokenResult{tok, err}
	}()
	<-ts.arrived // the realm request is under way

	const waiters = 8
	results := make(chan tokenResult, waiters)
	for range waiters {
		go func() {
			tok, err := c.Token(t.Context(), req)
			results <- tokenResult{tok, err}
		}()
	}
	hangUp()
	got := receive(t, leader, "the leader's token after it hung up") // before release
	if oci.StatusOf(got.err) != http.StatusGatewayTimeout || !errors.Is(got.err, context.Canceled) {
		t.Fatalf("leader that hung up got %q, %v; want a 504 wrapping context.Canceled", got.token, got.err)
	}
	release()
	for range waiters {
		if r := <-results; r.err != nil || r.token != "tok-1" {
			t.Fatalf("waiter got %q, %v; want tok-1", r.token, r.err)
		}
	}
	if n := ts.hits.Load(); n != 1 {
		t.Fatalf("realm requests = %d, want 1", n)
	}
}

// TestTokenWaiterHangsUp: a caller waiting for a token another request is
// fetching hangs up; it gets a 504 at once, and the realm request goes on:
// the first caller gets the token and it is cached for the next ones.
func TestTokenWaiterHangsUp(t *testing.T) {
	t.Parallel()
	ts, release := gatedTokenServer(t)
	c := NewTokenCache(ts.Client(), TokenOptions{})
	req := TokenRequest{Realm: ts.URL + "/token", Service: "svc", Scopes: []string{"repository:a:pull"}}

	leader := make(chan tokenResult, 1)
	go func() {
		tok, err := c.Token(t.Context(), req)
		leader <- tokenResult{tok, err}
	}()
	<-ts.arrived

	waiterCtx, hangUp := context.WithCancel(t.Context())
	waiter := make(chan tokenResult, 1)
	go func() {
		tok, err := c.Token(waiterCtx, req)
		waiter <- tokenResult{tok, err}
	}()
	hangUp()
	got := receive(t, waiter, "the waiter's token after it hung up") // before release
	if oci.StatusOf(got.err) != http.StatusGatewayTimeout || oci.CodeOf(got.err) != oci.CodeUnavailable || !errors.Is(got.err, context.Canceled) {
		t.Fatalf("waiter that hung up got %q, %v; want a 504 UNAVAILABLE wrapping context.Canceled", got.token, got.err)
	}
	release()
	if r := <-leader; r.err != nil || r.token != "tok-1" {
		t.Fatalf("leader got %q, %v; want tok-1", r.token, r.err)
	}
	if tok, err := c.Token(t.Context(), req); err != nil || tok != "tok-1" || ts.hits.Load() != 1 {
		t.Fatalf("next caller got %q, %v after %d realm requests; want the cached tok-1 after 1", tok, err, ts.hits.Load())
	}
}
