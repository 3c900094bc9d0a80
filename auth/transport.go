package auth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// ErrRealmNotAllowed is the cause inside the *oci.Error returned when a
// registry sends clients to a token realm that its realm policy
// (Transport.AllowRealm) does not allow: the realm would receive the
// registry's credentials.
var ErrRealmNotAllowed = errors.New("token realm not allowed")

// Transport is an http.RoundTripper that authenticates requests to one
// registry host. It attaches credentials or tokens only to requests whose
// URL host equals Host, so redirects to blob storage on other hosts go out
// without Authorization. On a 401 it answers the challenge (Basic or
// Bearer) and retries once; GET and HEAD without a body are the only
// requests retried. It remembers the scheme the host demanded and
// authenticates later requests up front, without a 401 round-trip.
//
// The credentials of a request are, in order: those in its context
// (WithAuthorization: the header is sent as is and a 401 goes back to the
// caller; WithCredentials: used instead of anything configured), else
// Keychain's for the token realm's host (Bearer only), for Registry and
// for Host, else Credentials. So an AUTH_REGISTRIES entry may name the
// registry or its realm host (gitlab.com for registry.gitlab.com). When
// upstream rejects keychain credentials the keychain is told
// (Source.Invalidate), so a credential helper runs again.
//
// A request that already carries an Authorization header (a client's own
// credentials passed through) is sent unchanged.
//
// Set the fields before first use and do not copy a Transport after that.
type Transport struct {
	// Base sends the requests (http.DefaultTransport when nil).
	Base http.RoundTripper
	// Host is the registry endpoint's host[:port] the credentials belong
	// to, exactly as it appears in request URLs.
	Host string
	// Registry is the registry's configured (canonical) name, looked up
	// in Keychain ("docker.io" while Host is registry-1.docker.io).
	// Default Host.
	Registry string
	// Keychain supplies credentials by host (optional).
	Keychain Source
	// Credentials are the static fallback when Keychain has nothing:
	// used for Basic auth and at the token realm.
	Credentials Credentials
	// Tokens caches Bearer tokens; one is created on first use when nil.
	Tokens *TokenCache
	// TokenClient fetches tokens (optional): the registry's client without
	// this Transport, so realms see the same TLS and proxy settings.
	TokenClient *http.Client
	// AllowRealm decides whether a Bearer realm may be contacted (and
	// receive the credentials). Nil allows realms on Host's own domain,
	// as RealmAllowed(Host, scheme+"://"+Host, nil) with the scheme of the
	// first request. Independently of it, a realm must be https unless
	// the registry itself was reached over http.
	AllowRealm func(realmURL *url.URL) bool

	once sync.Once
	mu   sync.Mutex
	st   hostState
}

// hostState is what the registry demanded the last time it challenged us.
type hostState struct {
	scheme  string // "", SchemeBasic or SchemeBearer
	realm   string
	service string
}

// sent records what a request carried, to judge a 401 answer.
type sent struct {
	scheme string
	key    TokenKey
	token  string
	from   string // keychain host the credentials came from, "" otherwise
}

// creds are the credentials chosen for one request and where they came
// from: the keychain host that answered, or "" (context, static).
type creds struct {
	c    Credentials
	from string
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if !strings.EqualFold(req.URL.Host, t.Host) || req.Header.Get("Authorization") != "" {
		return base.RoundTrip(req)
	}
	if h := authorizationFrom(req.Context()); h != "" {
		r := req.Clone(req.Context())
		r.Header.Set("Authorization", h)
		return base.RoundTrip(r)
	}
	t.once.Do(func() { t.setDefaults(req.URL.Scheme) })

	first, did, err := t.authorize(req)
	if err != nil {
		return nil, err
	}
	resp, err := base.RoundTrip(first)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	ch, ok := pickChallenge(ChallengesFrom(resp))
	if !ok {
		return resp, nil
	}
	switch ch.Scheme {
	case SchemeBasic:
		return t.answerBasic(base, req, resp, did)
	case SchemeBearer:
		return t.answerBearer(base, req, resp, did, ch)
	}
	return resp, nil
}

// setDefaults fills the optional fields on first use; scheme is the first
// request's, so that a default realm policy knows the endpoint's port.
func (t *Transport) setDefaults(scheme string) {
	if t.Tokens == nil {
		t.Tokens = NewTokenCache(t.TokenClient, TokenOptions{})
	}
	if t.AllowRealm == nil {
		t.AllowRealm = RealmAllowed(t.Host, scheme+"://"+t.Host, nil)
	}
	if t.Registry == "" {
		t.Registry = t.Host
	}
}

// retriable reports whether req may be sent again after a 401: GET and
// HEAD without a body.
func retriable(req *http.Request) bool {
	return (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
		(req.Body == nil || req.Body == http.NoBody)
}

// answerBasic answers a Basic challenge (resp, the 401 to req, which
// carried did): once with the credentials of the request, unless those
// were just refused. Refused keychain credentials are reported to the
// keychain.
func (t *Transport) answerBasic(base http.RoundTripper, req *http.Request, resp *http.Response, did sent) (*http.Response, error) {
	cr, err := t.credentials(req.Context(), "")
	if err != nil {
		drain(resp)
		return nil, err
	}
	if cr.c.IsZero() {
		return resp, nil
	}
	t.setState(hostState{scheme: SchemeBasic})
	if did.scheme == SchemeBasic {
		t.rejected(did.from)
	}
	if !retriable(req) || did.scheme == SchemeBasic {
		return resp, nil
	}
	drain(resp)
	retry := req.Clone(req.Context())
	retry.SetBasicAuth(cr.c.Username, cr.c.Password)
	resp, err = base.RoundTrip(retry)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		t.rejected(cr.from)
	}
	return resp, err
}

// answerBearer answers a Bearer challenge ch (resp, the 401 to req, which
// carried did): it checks the realm, gets a token there (a fresh one when
// the cached token was just refused) and sends req again once with it.
func (t *Transport) answerBearer(base http.RoundTripper, req *http.Request, resp *http.Response, did sent, ch Challenge) (*http.Response, error) {
	realm, err := t.checkRealm(req, ch.Realm())
	if err != nil {
		drain(resp)
		return nil, err
	}
	t.setState(hostState{scheme: SchemeBearer, realm: realm, service: ch.Service()})
	if !retriable(req) {
		return resp, nil
	}
	cr, err := t.credentials(req.Context(), realm)
	if err != nil {
		drain(resp)
		return nil, err
	}
	treq := t.tokenRequest(req, realm, ch.Service(), ch.Scopes(), cr.c)
	if did.scheme == SchemeBearer && did.key == treq.Key() {
		// The cached token was rejected: get exactly one fresh one
		// (concurrent requests refused the same token share it).
		t.Tokens.Reject(did.key, did.token)
	}
	token, err := t.Tokens.Token(req.Context(), treq)
	drain(resp)
	if err != nil {
		if oci.StatusOf(err) == http.StatusUnauthorized {
			t.rejected(cr.from)
		}
		return nil, err
	}
	retry := req.Clone(req.Context())
	retry.Header.Set("Authorization", "Bearer "+token)
	resp, err = base.RoundTrip(retry)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		// Refused with a fresh token: the credentials behind it may
		// be stale (a helper's expired token).
		t.rejected(cr.from)
	}
	return resp, err
}

// credentials chooses the credentials of a request: the context's, else
// the keychain's for the realm host (when realm is set), Registry and
// Host, else the static ones.
func (t *Transport) credentials(ctx context.Context, realm string) (creds, error) {
	if c, ok := credentialsFrom(ctx); ok {
		return creds{c: c}, nil
	}
	if t.Keychain != nil {
		hosts := make([]string, 0, 3)
		if realm != "" {
			if u, err := url.Parse(realm); err == nil && u.Host != "" {
				hosts = append(hosts, u.Host)
			}
		}
		hosts = append(hosts, t.Registry, t.Host)
		for i, h := range hosts {
			if slices.Contains(hosts[:i], h) {
				continue
			}
			c, ok, err := t.Keychain.Lookup(ctx, h)
			if err != nil {
				return creds{}, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "upstream %s: no usable credentials", t.Registry)
			}
			if ok {
				return creds{c: c, from: h}, nil
			}
		}
	}
	return creds{c: t.Credentials}, nil
}

// rejected tells the keychain that upstream refused the credentials it
// gave for host ("" when they did not come from the keychain).
func (t *Transport) rejected(host string) {
	if host != "" && t.Keychain != nil {
		t.Keychain.Invalidate(host)
	}
}

// authorize returns the request to send first: with credentials or a
// token attached when the host is known to demand them.
func (t *Transport) authorize(req *http.Request) (*http.Request, sent, error) {
	st := t.state()
	switch st.scheme {
	case SchemeBasic:
		cr, err := t.credentials(req.Context(), "")
		if err != nil || cr.c.IsZero() {
			return req, sent{}, err
		}
		r := req.Clone(req.Context())
		r.SetBasicAuth(cr.c.Username, cr.c.Password)
		return r, sent{scheme: SchemeBasic, from: cr.from}, nil
	case SchemeBearer:
		cr, err := t.credentials(req.Context(), st.realm)
		if err != nil {
			return req, sent{}, err
		}
		treq := t.tokenRequest(req, st.realm, st.service, nil, cr.c)
		token, ok := t.Tokens.Cached(treq.Key())
		if !ok {
			var err error
			if token, err = t.Tokens.Token(req.Context(), treq); err != nil {
				switch oci.StatusOf(err) {
				case http.StatusUnauthorized, http.StatusForbidden:
					// The realm refused these credentials: asking again
					// after a 401 from the registry would be refused too.
					if oci.StatusOf(err) == http.StatusUnauthorized {
						t.rejected(cr.from)
					}
					return nil, sent{}, err
				}
				// Send without a token; the challenge path decides.
				return req, sent{}, nil
			}
		}
		r := req.Clone(req.Context())
		r.Header.Set("Authorization", "Bearer "+token)
		return r, sent{scheme: SchemeBearer, key: treq.Key(), token: token, from: cr.from}, nil
	}
	return req, sent{}, nil
}

// tokenRequest builds the token request for req; without scopes from a
// challenge the scope is derived from the request path.
func (t *Transport) tokenRequest(req *http.Request, realm, service string, scopes []string, c Credentials) TokenRequest {
	if len(scopes) == 0 {
		scopes = ScopesFor(req.Method, req.URL.Path)
	}
	return TokenRequest{Realm: realm, Service: service, Scopes: scopes, Credentials: c, Client: t.TokenClient}
}

// checkRealm validates a Bearer realm: a parsable absolute URL, https
// unless the registry is plain http, and accepted by AllowRealm.
func (t *Transport) checkRealm(req *http.Request, realm string) (string, error) {
	u, err := url.Parse(realm)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "registry %s sent an invalid token realm", t.Host)
	}
	if u.Scheme == "http" && req.URL.Scheme != "http" {
		return "", oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "registry %s sent a plain-http token realm %s; refused", t.Host, u.Host)
	}
	if !t.AllowRealm(u) {
		return "", oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, ErrRealmNotAllowed,
			"token realm host %s is not allowed for registry %s: it is not on the registry's domain nor listed as one of its token realms", u.Hostname(), t.Host)
	}
	return realm, nil
}

func (t *Transport) state() hostState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}

func (t *Transport) setState(s hostState) {
	t.mu.Lock()
	t.st = s
	t.mu.Unlock()
}

// pickChallenge prefers Bearer over Basic and ignores other schemes.
func pickChallenge(chs []Challenge) (Challenge, bool) {
	var basic *Challenge
	for i := range chs {
		switch chs[i].Scheme {
		case SchemeBearer:
			if chs[i].Realm() != "" {
				return chs[i], true
			}
		case SchemeBasic:
			if basic == nil {
				basic = &chs[i]
			}
		}
	}
	if basic != nil {
		return *basic, true
	}
	return Challenge{}, false
}

// ScopesFor derives the token scope of a request from its path when the
// challenge named none: repository:<repo>:pull for GET and HEAD (and
// pull,push otherwise) on /v2/<repo>/(manifests|blobs|tags|referrers)/…;
// nil for other paths.
func ScopesFor(method, path string) []string {
	repo := RepositoryFromPath(path)
	if repo == "" {
		return nil
	}
	action := "pull"
	if method != http.MethodGet && method != http.MethodHead {
		action = "pull,push"
	}
	return []string{"repository:" + repo + ":" + action}
}

// RepositoryFromPath returns the repository of a distribution API path
// /…/v2/<repo>/(manifests|blobs|tags|referrers)/…, or "".
func RepositoryFromPath(path string) string {
	i := strings.Index(path, "/v2/")
	if i < 0 {
		return ""
	}
	rest := path[i+len("/v2/"):]
	end := -1
	for _, m := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		end = max(end, strings.LastIndex(rest, m))
	}
	if end <= 0 {
		return ""
	}
	return rest[:end]
}

// drain discards a little of a response body so the connection can be
// reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 16<<10) //nolint:errcheck // a failed read only costs the connection, which the transport then drops
	resp.Body.Close()
}
