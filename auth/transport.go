package auth

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// Transport is an http.RoundTripper that authenticates requests to one
// registry host. It attaches credentials or tokens only to requests whose
// URL host equals Host, so redirects to blob storage on other hosts go out
// without Authorization. On a 401 it answers the challenge (Basic or
// Bearer) and retries once; GET and HEAD without a body are the only
// requests retried. It remembers the scheme the host demanded and
// authenticates later requests up front, without a 401 round-trip.
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
	// Credentials are used for Basic auth and at the token realm.
	Credentials Credentials
	// Tokens caches Bearer tokens; one is created on first use when nil.
	Tokens *TokenCache
	// TokenClient fetches tokens (optional): the registry's client without
	// this Transport, so realms see the same TLS and proxy settings.
	TokenClient *http.Client
	// AllowRealm decides whether a Bearer realm may be contacted (and
	// receive the credentials). Nil allows realms on Host's own domain,
	// as RealmAllowed(Host, Host, nil). Independently of it, a realm must
	// be https unless the registry itself was reached over http.
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
	t.once.Do(func() {
		if t.Tokens == nil {
			t.Tokens = NewTokenCache(t.TokenClient, TokenOptions{})
		}
		if t.AllowRealm == nil {
			t.AllowRealm = RealmAllowed(t.Host, t.Host, nil)
		}
	})

	first, did := t.authorize(req)
	resp, err := base.RoundTrip(first)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	ch, ok := pickChallenge(ChallengesFrom(resp))
	if !ok {
		return resp, nil
	}
	retriable := (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
		(req.Body == nil || req.Body == http.NoBody)

	switch ch.Scheme {
	case SchemeBasic:
		if t.Credentials.IsZero() {
			return resp, nil
		}
		t.setState(hostState{scheme: SchemeBasic})
		if !retriable || did.scheme == SchemeBasic {
			return resp, nil
		}
		drain(resp)
		retry := req.Clone(req.Context())
		retry.SetBasicAuth(t.Credentials.Username, t.Credentials.Password)
		return base.RoundTrip(retry)

	case SchemeBearer:
		realm, err := t.checkRealm(req, ch.Realm())
		if err != nil {
			drain(resp)
			return nil, err
		}
		t.setState(hostState{scheme: SchemeBearer, realm: realm, service: ch.Service()})
		if !retriable {
			return resp, nil
		}
		treq := t.tokenRequest(req, realm, ch.Service(), ch.Scopes())
		if did.scheme == SchemeBearer && did.key == treq.Key() {
			// The cached token was rejected: get exactly one fresh one.
			t.Tokens.Invalidate(did.key)
		}
		token, err := t.Tokens.Token(req.Context(), treq)
		if err != nil {
			drain(resp)
			return nil, err
		}
		drain(resp)
		retry := req.Clone(req.Context())
		retry.Header.Set("Authorization", "Bearer "+token)
		return base.RoundTrip(retry)
	}
	return resp, nil
}

// authorize returns the request to send first: with credentials or a
// token attached when the host is known to demand them.
func (t *Transport) authorize(req *http.Request) (*http.Request, sent) {
	st := t.state()
	switch st.scheme {
	case SchemeBasic:
		if t.Credentials.IsZero() {
			return req, sent{}
		}
		r := req.Clone(req.Context())
		r.SetBasicAuth(t.Credentials.Username, t.Credentials.Password)
		return r, sent{scheme: SchemeBasic}
	case SchemeBearer:
		treq := t.tokenRequest(req, st.realm, st.service, nil)
		token, ok := t.Tokens.Cached(treq.Key())
		if !ok {
			var err error
			if token, err = t.Tokens.Token(req.Context(), treq); err != nil {
				// Send without a token; the challenge path decides.
				return req, sent{}
			}
		}
		r := req.Clone(req.Context())
		r.Header.Set("Authorization", "Bearer "+token)
		return r, sent{scheme: SchemeBearer, key: treq.Key()}
	}
	return req, sent{}
}

// tokenRequest builds the token request for req; without scopes from a
// challenge the scope is derived from the request path.
func (t *Transport) tokenRequest(req *http.Request, realm, service string, scopes []string) TokenRequest {
	if len(scopes) == 0 {
		scopes = ScopesFor(req.Method, req.URL.Path)
	}
	return TokenRequest{Realm: realm, Service: service, Scopes: scopes, Credentials: t.Credentials, Client: t.TokenClient}
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
		return "", oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "token realm host %s is not allowed for registry %s (add it to the registry's tokenRealms)", u.Hostname(), t.Host)
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
	_, _ = io.CopyN(io.Discard, resp.Body, 16<<10)
	_ = resp.Body.Close()
}
