package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// bearerRegistry is a fake registry demanding Bearer tokens from a realm.
type bearerRegistry struct {
	*httptest.Server
	realm    string
	hits     atomic.Int64
	denied   atomic.Int64 // 401 answers
	mu       sync.Mutex
	revoked  map[string]bool
	alwaysNo bool
	// scopeInChallenge controls whether the challenge names the scope.
	scopeInChallenge bool
	// redirect, when set, is where blob requests are sent (307).
	redirect string
}

func newBearerRegistry(t *testing.T, realm string) *bearerRegistry {
	t.Helper()
	br := &bearerRegistry{realm: realm, revoked: map[string]bool{}, scopeInChallenge: true}
	br.Server = httptest.NewServer(http.HandlerFunc(br.serve))
	t.Cleanup(br.Close)
	return br
}

func (br *bearerRegistry) serve(w http.ResponseWriter, r *http.Request) {
	br.hits.Add(1)
	authz := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(authz, "Bearer ")
	br.mu.Lock()
	valid := ok && strings.HasPrefix(tok, "tok-") && !br.revoked[tok] && !br.alwaysNo
	br.mu.Unlock()
	if !valid {
		br.denied.Add(1)
		ch := `Bearer realm="` + br.realm + `",service="registry.test"`
		if br.scopeInChallenge {
			if repo := RepositoryFromPath(r.URL.Path); repo != "" {
				ch += `,scope="repository:` + repo + `:pull"`
			}
		}
		w.Header().Set("WWW-Authenticate", ch)
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
		return
	}
	if br.redirect != "" && strings.Contains(r.URL.Path, "/blobs/") {
		http.Redirect(w, r, br.redirect, http.StatusTemporaryRedirect)
		return
	}
	_, _ = w.Write([]byte("ok"))
}

func (br *bearerRegistry) revoke(tok string) {
	br.mu.Lock()
	br.revoked[tok] = true
	br.mu.Unlock()
}

// onlyRealm is a realm policy allowing exactly the host of realm: the
// fake registries and token servers listen on one IP with two ports,
// which the default policy refuses.
func onlyRealm(t *testing.T, realm string) func(*url.URL) bool {
	t.Helper()
	h := hostOf(t, realm)
	return func(u *url.URL) bool { return u.Host == h }
}

func hostOf(t *testing.T, s string) string {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, error) {
	t.Helper()
	resp, err := c.Get(u)
	if err == nil {
		t.Cleanup(func() { resp.Body.Close() })
	}
	return resp, err
}

func TestTransportBearer(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t)
	reg := newBearerRegistry(t, ts.URL+"/token")
	tr := &Transport{Host: hostOf(t, reg.URL), Credentials: Credentials{Username: "bob", Password: "pw"}, Tokens: NewTokenCache(nil, TokenOptions{}), AllowRealm: onlyRealm(t, ts.URL)}
	c := &http.Client{Transport: tr}

	steps := []struct {
		name       string
		path       string
		before     func()
		wantStatus int
		wantHits   int64 // registry requests for this step
		wantTokens int64 // token requests for this step
	}{
		{name: "first request answers challenge", path: "/v2/team/app/manifests/latest", wantStatus: 200, wantHits: 2, wantTokens: 1},
		{name: "same scope attaches cached token", path: "/v2/team/app/blobs/sha256:00", wantStatus: 200, wantHits: 1, wantTokens: 0},
		{name: "new repo fetches token pre-emptively", path: "/v2/team/other/manifests/v1", wantStatus: 200, wantHits: 1, wantTokens: 1},
		{name: "rejected cached token refreshed once", path: "/v2/team/app/manifests/latest", before: func() { reg.revoke("tok-1") }, wantStatus: 200, wantHits: 2, wantTokens: 1},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.before != nil {
				s.before()
			}
			h0, t0 := reg.hits.Load(), ts.hits.Load()
			resp, err := get(t, c, reg.URL+s.path)
			if err != nil || resp.StatusCode != s.wantStatus {
				t.Fatalf("GET %s: %v %v", s.path, resp, err)
			}
			if got := reg.hits.Load() - h0; got != s.wantHits {
				t.Errorf("registry requests = %d, want %d", got, s.wantHits)
			}
			if got := ts.hits.Load() - t0; got != s.wantTokens {
				t.Errorf("token requests = %d, want %d", got, s.wantTokens)
			}
		})
	}
	if authz, q := ts.last(); authz == "" || q.Get("service") != "registry.test" {
		t.Errorf("token request has auth=%v query=%v", authz != "", q)
	}
}

func TestTransportDerivedScope(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t)
	reg := newBearerRegistry(t, ts.URL+"/token")
	reg.scopeInChallenge = false
	c := &http.Client{Transport: &Transport{Host: hostOf(t, reg.URL), AllowRealm: onlyRealm(t, ts.URL)}}
	resp, err := get(t, c, reg.URL+"/v2/a/b/manifests/latest")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	if _, q := ts.last(); q.Get("scope") != "repository:a/b:pull" {
		t.Fatalf("scope = %q", q.Get("scope"))
	}
}

func TestTransportPermanent401(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t)
	reg := newBearerRegistry(t, ts.URL+"/token")
	reg.alwaysNo = true
	c := &http.Client{Transport: &Transport{Host: hostOf(t, reg.URL), AllowRealm: onlyRealm(t, ts.URL)}}
	for i, want := range []struct{ hits, tokens int64 }{{2, 1}, {4, 2}, {6, 3}} {
		resp, err := get(t, c, reg.URL+"/v2/a/manifests/latest")
		if err != nil || resp.StatusCode != 401 {
			t.Fatalf("request %d: %v %v", i, resp, err)
		}
		if reg.hits.Load() != want.hits || ts.hits.Load() != want.tokens {
			t.Fatalf("request %d: registry %d token %d, want %d %d", i, reg.hits.Load(), ts.hits.Load(), want.hits, want.tokens)
		}
	}
}

func TestTransportRealmPolicy(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t)
	tests := []struct {
		name       string
		realm      func(reg string) string
		allow      func(*url.URL) bool
		tlsReg     bool
		wantError  string
		notAllowed bool // the error is ErrRealmNotAllowed
	}{
		{name: "foreign realm host", realm: func(string) string { return strings.Replace(ts.URL, "127.0.0.1", "localhost", 1) }, wantError: "localhost", notAllowed: true},
		{name: "registry's IP, another port", realm: func(string) string { return ts.URL }, wantError: "127.0.0.1", notAllowed: true},
		{name: "policy refuses", realm: func(string) string { return ts.URL }, allow: func(*url.URL) bool { return false }, wantError: "127.0.0.1", notAllowed: true},
		{name: "plain http realm for https registry", realm: func(string) string { return ts.URL }, tlsReg: true, wantError: "plain-http"},
		{name: "invalid realm", realm: func(string) string { return "::bad" }, wantError: "invalid token realm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits atomic.Int64
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+tt.realm("")+`"`)
				w.WriteHeader(401)
			})
			var srv *httptest.Server
			if tt.tlsReg {
				srv = httptest.NewTLSServer(h)
			} else {
				srv = httptest.NewServer(h)
			}
			defer srv.Close()
			base := srv.Client().Transport
			t0 := ts.hits.Load()
			c := &http.Client{Transport: &Transport{Base: base, Host: hostOf(t, srv.URL), AllowRealm: tt.allow}}
			_, err := c.Get(srv.URL + "/v2/a/manifests/latest")
			var oe *oci.Error
			if !errors.As(err, &oe) || oe.Status != http.StatusBadGateway || !strings.Contains(oe.Message, tt.wantError) {
				t.Fatalf("err = %v, want 502 naming %q", err, tt.wantError)
			}
			if errors.Is(err, ErrRealmNotAllowed) != tt.notAllowed {
				t.Fatalf("errors.Is(err, ErrRealmNotAllowed) = %v, want %v", !tt.notAllowed, tt.notAllowed)
			}
			if ts.hits.Load() != t0 || hits.Load() != 1 {
				t.Fatalf("token requests %d, registry %d", ts.hits.Load()-t0, hits.Load())
			}
		})
	}
}

func TestTransportRedirectWithoutCredentials(t *testing.T) {
	t.Parallel()
	var cdnAuth atomic.Value
	var cdnHits atomic.Int64
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cdnHits.Add(1)
		cdnAuth.Store(r.Header.Get("Authorization"))
		_, _ = w.Write([]byte("blob"))
	}))
	defer cdn.Close()
	ts := newTokenServer(t)
	reg := newBearerRegistry(t, ts.URL+"/token")
	reg.redirect = strings.Replace(cdn.URL, "127.0.0.1", "localhost", 1) + "/blob?sig=secret"
	c := &http.Client{Transport: &Transport{Host: hostOf(t, reg.URL), Credentials: Credentials{Username: "u", Password: "p"}, AllowRealm: onlyRealm(t, ts.URL)}}
	resp, err := get(t, c, reg.URL+"/v2/a/blobs/sha256:00")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	if cdnHits.Load() != 1 || cdnAuth.Load().(string) != "" {
		t.Fatalf("cdn hits %d, Authorization %q", cdnHits.Load(), cdnAuth.Load())
	}
}

func TestTransportBasic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		creds    Credentials
		requests int
		want     int
		wantHits int64
	}{
		{name: "good credentials then pre-emptive", creds: Credentials{Username: "bob", Password: "pw"}, requests: 3, want: 200, wantHits: 4},
		{name: "wrong password stops after one retry", creds: Credentials{Username: "bob", Password: "bad"}, requests: 1, want: 401, wantHits: 2},
		{name: "wrong password later requests", creds: Credentials{Username: "bob", Password: "bad"}, requests: 2, want: 401, wantHits: 3},
		{name: "anonymous gets the 401", requests: 1, want: 401, wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				if u, p, ok := r.BasicAuth(); !ok || u != "bob" || p != "pw" {
					w.Header().Set("WWW-Authenticate", `Basic realm="Registry Realm"`)
					w.WriteHeader(401)
					return
				}
				_, _ = w.Write([]byte("ok"))
			}))
			defer srv.Close()
			c := &http.Client{Transport: &Transport{Host: hostOf(t, srv.URL), Credentials: tt.creds}}
			var status int
			for range tt.requests {
				resp, err := get(t, c, srv.URL+"/v2/a/manifests/latest")
				if err != nil {
					t.Fatal(err)
				}
				status = resp.StatusCode
			}
			if status != tt.want || hits.Load() != tt.wantHits {
				t.Fatalf("status %d hits %d, want %d %d", status, hits.Load(), tt.want, tt.wantHits)
			}
		})
	}
}

func TestTransportPassThrough(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	var seen atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		seen.Store(r.Header.Get("Authorization"))
		w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
		w.WriteHeader(401)
	}))
	defer srv.Close()
	tests := []struct {
		name   string
		method string
		authz  string
		host   string
	}{
		{name: "own Authorization kept", method: "GET", authz: "Bearer client-token"},
		{name: "POST not retried", method: "POST"},
		{name: "other host untouched", method: "GET", host: "elsewhere.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := tt.host
			if host == "" {
				host = hostOf(t, srv.URL)
			}
			tr := &Transport{Host: host, Credentials: Credentials{Username: "bob", Password: "pw"}}
			h0 := hits.Load()
			var body *strings.Reader
			req, _ := http.NewRequest(tt.method, srv.URL+"/v2/a/blobs/uploads/", nil)
			if tt.method == "POST" {
				body = strings.NewReader("data")
				req, _ = http.NewRequest(tt.method, srv.URL+"/v2/a/blobs/uploads/", body)
			}
			if tt.authz != "" {
				req.Header.Set("Authorization", tt.authz)
			}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 || hits.Load()-h0 != 1 || seen.Load().(string) != tt.authz {
				t.Fatalf("status %d hits %d authz %q", resp.StatusCode, hits.Load()-h0, seen.Load())
			}
		})
	}
}

func TestRepositoryFromPath(t *testing.T) {
	t.Parallel()
	tests := []struct{ path, want string }{
		{"/v2/library/alpine/manifests/latest", "library/alpine"},
		{"/v2/a/blobs/b/manifests/latest", "a/blobs/b"},
		{"/v2/a/manifests/b/blobs/sha256:00", "a/manifests/b"},
		{"/v2/x/tags/tags/list", "x/tags"},
		{"/v2/a/referrers/sha256:00", "a"},
		{"/v2/a/blobs/uploads/123", "a"},
		{"/prefix/v2/a/b/manifests/1", "a/b"},
		{"/v2/", ""},
		{"/v2/_catalog", ""},
		{"/other", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := RepositoryFromPath(tt.path); got != tt.want {
				t.Fatalf("RepositoryFromPath(%q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}
