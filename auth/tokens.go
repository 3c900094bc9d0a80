package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/flight"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// Defaults of the token flow. Registries that send no expires_in mean the
// token is good for at least 60 seconds (the distribution token spec's
// default); a realm that does not answer within half a minute is treated
// as down.
const (
	// DefaultTokenLifetime applies when a token answer has no expires_in.
	DefaultTokenLifetime = 60 * time.Second
	// DefaultTokenTimeout bounds one request to a token realm.
	DefaultTokenTimeout = 30 * time.Second
	// maxTokenLifetime bounds how long a token is kept, whatever
	// expires_in says (an expires_in past 292 years would overflow).
	maxTokenLifetime = 24 * time.Hour
	// minExpiryMargin is how long before expiry a cached token is dropped.
	minExpiryMargin = 5 * time.Second
	// sweepThreshold is the cache size above which expired entries are
	// swept on insert.
	sweepThreshold = 1024
)

// TokenOptions tunes a TokenCache. The zero value is usable.
type TokenOptions struct {
	// Now returns the current time; tests inject a fake clock. Default
	// time.Now.
	Now func() time.Time
	// UserAgent is sent to token realms when set.
	UserAgent string
	// Timeout bounds one token request (default DefaultTokenTimeout). The
	// request runs detached from any single caller's context, since other
	// callers may be waiting for the same token: a caller that hangs up
	// stops waiting, not the request.
	Timeout time.Duration
}

// TokenKey identifies a cached token: tokens are bound to the realm that
// issued them, the service and scope they were issued for and the identity
// that asked.
type TokenKey struct {
	Realm    string
	Service  string
	Scope    string // scopes joined by a single space
	Identity string // Credentials.Identity()
}

// TokenRequest asks a TokenCache for a Bearer token.
type TokenRequest struct {
	// Realm is the token endpoint URL from the challenge. It may carry its
	// own query parameters (nvcr.io puts the scope there); they are kept.
	Realm   string
	Service string
	Scopes  []string
	// Credentials are sent as Basic auth to the realm when not zero.
	Credentials Credentials
	// Client overrides the cache's HTTP client for this request, so a
	// shared cache can fetch with each registry's own TLS settings.
	Client *http.Client
}

// Key returns the cache key of the request.
func (r TokenRequest) Key() TokenKey {
	return TokenKey{Realm: r.Realm, Service: r.Service, Scope: strings.Join(r.Scopes, " "), Identity: r.Credentials.Identity()}
}

// TokenCache fetches Bearer tokens from token realms and keeps them until
// shortly before they expire. Concurrent requests for the same key share
// one realm request. It is safe for concurrent use; share one per process
// or per registry.
type TokenCache struct {
	client   *http.Client
	now      func() time.Time
	ua       string
	requests atomic.Int64
	flight   *flight.Group[string] // realm requests in flight, by key

	mu     sync.Mutex
	tokens map[TokenKey]cachedToken
}

type cachedToken struct {
	value     string
	freshTill time.Time
}

// NewTokenCache returns an empty cache that fetches with client
// (http.DefaultClient when nil).
func NewTokenCache(client *http.Client, opts TokenOptions) *TokenCache {
	if client == nil {
		client = http.DefaultClient
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTokenTimeout
	}
	return &TokenCache{
		client: client,
		now:    opts.Now,
		ua:     opts.UserAgent,
		flight: flight.New[string](opts.Timeout),
		tokens: map[TokenKey]cachedToken{},
	}
}

// Requests returns how many requests were sent to token realms (the
// token-request metric).
func (c *TokenCache) Requests() int64 { return c.requests.Load() }

// Cached returns the token cached for key if it is still fresh.
func (c *TokenCache) Cached(key TokenKey) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.tokens[key]
	if !ok || !c.now().Before(t.freshTill) {
		return "", false
	}
	return t.value, true
}

// Reject drops the token cached for key if it is still token: upstream
// refused it. A newer token is left alone, so many requests that were
// refused the same stale token cause one refresh, not one each.
func (c *TokenCache) Reject(key TokenKey, token string) {
	c.mu.Lock()
	if t, ok := c.tokens[key]; ok && t.value == token {
		delete(c.tokens, key)
	}
	c.mu.Unlock()
}

// Token returns a Bearer token for req: from the cache when fresh,
// otherwise from the realm, sharing one realm request among concurrent
// callers for the same key. The realm request runs on its own context
// (bounded by TokenOptions.Timeout), so the caller that started it may
// hang up without failing the others; each caller waits on its own ctx.
// Errors are *oci.Error: 401 UNAUTHORIZED or 403 DENIED when the realm
// refuses, 429 when it rate-limits, 502 UNAVAILABLE when it is unreachable
// or answers badly, 504 on timeout and when ctx ends first.
func (c *TokenCache) Token(ctx context.Context, req TokenRequest) (string, error) {
	key := req.Key()
	if token, ok := c.Cached(key); ok {
		return token, nil
	}
	token, err := c.flight.Do(ctx, key.flightKey(), func(fctx context.Context) (string, error) {
		return c.fetch(fctx, key, req)
	})
	if err != nil && flight.Left(ctx, err) {
		return "", oci.Wrap(http.StatusGatewayTimeout, oci.CodeUnavailable, err, "waiting for a token from %s", realmHost(req.Realm))
	}
	return token, err
}

// flightKey is k as one string, for the flight group.
func (k TokenKey) flightKey() string {
	return strings.Join([]string{k.Realm, k.Service, k.Scope, k.Identity}, "\x00")
}

// fetch runs one realm request and caches the token it gets. A token
// cached meanwhile (by a request that ended between the caller's look at
// the cache and this one's start) is taken instead.
func (c *TokenCache) fetch(ctx context.Context, key TokenKey, req TokenRequest) (string, error) {
	if token, ok := c.Cached(key); ok {
		return token, nil
	}
	start := c.now()
	value, lifetime, err := c.request(ctx, req)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tokens) >= sweepThreshold {
		now := c.now()
		for k, t := range c.tokens {
			if !now.Before(t.freshTill) {
				delete(c.tokens, k)
			}
		}
	}
	c.tokens[key] = cachedToken{value: value, freshTill: start.Add(lifetime - expiryMargin(lifetime))}
	return value, nil
}

// expiryMargin is how long before expiry a token stops being handed out:
// 10% of its lifetime, at least 5s, at most half of it.
func expiryMargin(lifetime time.Duration) time.Duration {
	m := max(lifetime/10, minExpiryMargin)
	return min(m, lifetime/2)
}

// tokenResponse is the JSON answer of a token realm.
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// request sends one token request and returns the token and how long it
// stays valid from the start of the request. Credentials holding an
// identity token (IdentityTokenUsername) are first presented with the
// OAuth2 refresh_token grant (POST), as Docker does; a realm that answers
// 404 or 405 to the POST is asked again with GET and Basic auth.
func (c *TokenCache) request(ctx context.Context, req TokenRequest) (string, time.Duration, error) {
	u, err := url.Parse(req.Realm)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", 0, oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "invalid token realm from upstream")
	}
	if req.Credentials.Username == IdentityTokenUsername {
		hreq, err := oauthRequest(ctx, *u, req)
		token, lifetime, status, err := c.send(req, u.Host, hreq, err)
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			return token, lifetime, err
		}
	}
	q := u.Query()
	if req.Service != "" {
		q.Set("service", req.Service)
	}
	for _, s := range req.Scopes {
		q.Add("scope", s)
	}
	u.RawQuery = q.Encode()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err == nil && !req.Credentials.IsZero() {
		hreq.SetBasicAuth(req.Credentials.Username, req.Credentials.Password)
	}
	token, lifetime, _, err := c.send(req, u.Host, hreq, err)
	return token, lifetime, err
}

// oauthRequest builds the OAuth2 refresh_token grant for an identity token.
func oauthRequest(ctx context.Context, u url.URL, req TokenRequest) (*http.Request, error) {
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {req.Credentials.Password},
		"client_id":     {"container-registry-proxy"},
	}
	if req.Service != "" {
		form.Set("service", req.Service)
	}
	if len(req.Scopes) > 0 {
		form.Set("scope", strings.Join(req.Scopes, " "))
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err == nil {
		hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return hreq, err
}

// send sends one built token request (hreq, or the error building it) to
// the realm at host and reads the answer; status is the realm's HTTP
// status (0 when none).
func (c *TokenCache) send(req TokenRequest, host string, hreq *http.Request, buildErr error) (string, time.Duration, int, error) {
	if buildErr != nil {
		return "", 0, 0, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, buildErr, "invalid token realm %s", host)
	}
	if c.ua != "" {
		hreq.Header.Set("User-Agent", c.ua)
	}
	hreq.Header.Set("Accept", "application/json")
	client := req.Client
	if client == nil {
		client = c.client
	}
	start := c.now()
	c.requests.Add(1)
	resp, err := client.Do(hreq)
	if err != nil {
		return "", 0, 0, realmNetError(host, err)
	}
	defer resp.Body.Close()
	token, lifetime, err := c.readAnswer(resp, req, host, start)
	return token, lifetime, resp.StatusCode, err
}

// readAnswer reads a token realm's answer, bounded by oci.MaxSmallBody.
func (c *TokenCache) readAnswer(resp *http.Response, req TokenRequest, host string, start time.Time) (string, time.Duration, error) {
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, oci.MaxSmallBody+1))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return "", 0, oci.Errorf(http.StatusUnauthorized, oci.CodeUnauthorized, "token server %s rejected the credentials (%s)", host, identityWord(req.Credentials))
	case resp.StatusCode == http.StatusForbidden:
		return "", 0, oci.Errorf(http.StatusForbidden, oci.CodeDenied, "token server %s denied access (%s)", host, identityWord(req.Credentials))
	case resp.StatusCode == http.StatusTooManyRequests:
		e := oci.Errorf(http.StatusTooManyRequests, oci.CodeTooManyRequests, "token server %s is rate limiting", host)
		e.RetryAfter = resp.Header.Get("Retry-After")
		if e.RetryAfter == "" {
			e.RetryAfter = "60"
		}
		return "", 0, e
	case resp.StatusCode != http.StatusOK:
		return "", 0, oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "token server %s answered %d", host, resp.StatusCode)
	}
	if readErr != nil {
		return "", 0, realmNetError(host, readErr)
	}
	if len(body) > oci.MaxSmallBody {
		return "", 0, oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "token server %s answered more than %d bytes", host, oci.MaxSmallBody)
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", 0, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, errors.New("malformed token JSON"), "token server %s answered malformed JSON", host)
	}
	token := tr.Token
	if token == "" {
		token = tr.AccessToken
	}
	if token == "" || strings.ContainsAny(token, "\r\n\x00 ") {
		return "", 0, oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "token server %s answered without a usable token", host)
	}
	lifetime := DefaultTokenLifetime
	if tr.ExpiresIn > 0 {
		lifetime = time.Duration(min(tr.ExpiresIn, int64(maxTokenLifetime/time.Second))) * time.Second
	}
	// A token issued before we asked (clock skew, caching realm) expires
	// earlier than its expires_in suggests; never later.
	if issued, err := time.Parse(time.RFC3339Nano, tr.IssuedAt); err == nil && issued.Before(start) {
		if age := start.Sub(issued); age < lifetime {
			lifetime -= age
		}
	}
	return token, lifetime, nil
}

// identityWord says whether a realm request was anonymous, for messages
// that must not reveal the credentials.
func identityWord(c Credentials) string {
	if c.IsZero() {
		return "anonymous"
	}
	return "with credentials"
}

// realmNetError maps a transport error towards a realm to an *oci.Error
// naming only the realm host. An *oci.Error already in err is kept.
func realmNetError(host string, err error) error {
	var oe *oci.Error
	if errors.As(err, &oe) {
		return oe
	}
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err // url.Error's text holds the full URL
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return oci.Wrap(http.StatusGatewayTimeout, oci.CodeUnavailable, cause, "token server %s timed out", host)
	}
	return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, cause, "token server %s unreachable", host)
}

// realmHost returns the host of a realm URL for messages.
func realmHost(realm string) string {
	if u, err := url.Parse(realm); err == nil && u.Host != "" {
		return u.Host
	}
	return "token realm"
}

// String describes a key without the identity hash, for logs.
func (k TokenKey) String() string {
	return fmt.Sprintf("realm=%s service=%s scope=%q", realmHost(k.Realm), k.Service, k.Scope)
}
