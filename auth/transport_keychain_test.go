package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// fakeSource is a Source backed by a map, recording Invalidate calls.
type fakeSource struct {
	mu          sync.Mutex
	creds       map[string]Credentials
	lookups     []string
	invalidated []string
}

func (f *fakeSource) Lookup(_ context.Context, host string) (Credentials, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups = append(f.lookups, host)
	c, ok := f.creds[host]
	return c, ok, nil
}

func (f *fakeSource) Invalidate(host string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, host)
}

func (f *fakeSource) invalidations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.invalidated...)
}

func basicOf(c Credentials) string {
	r, _ := http.NewRequest("GET", "http://x/", nil)
	r.SetBasicAuth(c.Username, c.Password)
	return r.Header.Get("Authorization")
}

// TestTransportKeychainHosts: for a Bearer challenge the realm host's
// credentials come first (GitLab: gitlab.com for registry.gitlab.com),
// then the registry's, then the static ones.
func TestTransportKeychainHosts(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t)
	realm := strings.Replace(ts.URL, "127.0.0.1", "localhost", 1) + "/token"
	realmHost := hostOf(t, realm)
	realmCreds := Credentials{Username: "realm-user", Password: "realm-pw"}
	regCreds := Credentials{Username: "reg-user", Password: "reg-pw"}
	static := Credentials{Username: "static", Password: "static-pw"}
	tests := []struct {
		name   string
		creds  map[string]Credentials
		static Credentials
		want   Credentials
	}{
		{name: "realm host", creds: map[string]Credentials{realmHost: realmCreds, "registry.test": regCreds}, want: realmCreds},
		{name: "registry name", creds: map[string]Credentials{"registry.test": regCreds}, static: static, want: regCreds},
		{name: "static fallback", creds: map[string]Credentials{}, static: static, want: static},
		{name: "anonymous", creds: map[string]Credentials{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newBearerRegistry(t, realm)
			src := &fakeSource{creds: tt.creds}
			tr := &Transport{Host: hostOf(t, reg.URL), Registry: "registry.test", Keychain: src, Credentials: tt.static,
				AllowRealm: func(*url.URL) bool { return true }, Tokens: NewTokenCache(nil, TokenOptions{})}
			resp, err := get(t, &http.Client{Transport: tr}, reg.URL+"/v2/team/app/manifests/latest")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v", resp, err)
			}
			authz, _ := ts.last()
			want := ""
			if !tt.want.IsZero() {
				want = basicOf(tt.want)
			}
			if authz != want {
				t.Fatalf("token request Authorization %q, want %q", authz, want)
			}
		})
	}
}

// TestTransportBasicKeychain: Basic challenges use the registry's keychain
// entry; rejected keychain credentials are invalidated.
func TestTransportBasicKeychain(t *testing.T) {
	t.Parallel()
	good := Credentials{Username: "bob", Password: "pw"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != good.Username || p != good.Password {
			w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
			w.WriteHeader(401)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	tests := []struct {
		name        string
		creds       Credentials
		want        int
		invalidated []string
	}{
		{name: "accepted", creds: good, want: 200},
		{name: "rejected", creds: Credentials{Username: "bob", Password: "stale"}, want: 401, invalidated: []string{"registry.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{creds: map[string]Credentials{"registry.test": tt.creds}}
			c := &http.Client{Transport: &Transport{Host: hostOf(t, srv.URL), Registry: "registry.test", Keychain: src}}
			resp, err := get(t, c, srv.URL+"/v2/a/manifests/latest")
			if err != nil || resp.StatusCode != tt.want {
				t.Fatalf("%v %v", resp, err)
			}
			if got := src.invalidations(); strings.Join(got, ",") != strings.Join(tt.invalidated, ",") {
				t.Fatalf("invalidated %q, want %q", got, tt.invalidated)
			}
		})
	}
}

// TestTransportInvalidateOnRealmRejection: the token realm refusing the
// keychain's credentials tells the keychain.
func TestTransportInvalidateOnRealmRejection(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t)
	ts.reply = func(w http.ResponseWriter, r *http.Request, n int64) { w.WriteHeader(401) }
	reg := newBearerRegistry(t, ts.URL+"/token")
	src := &fakeSource{creds: map[string]Credentials{"registry.test": {Username: "u", Password: "expired"}}}
	c := &http.Client{Transport: &Transport{Host: hostOf(t, reg.URL), Registry: "registry.test", Keychain: src, AllowRealm: onlyRealm(t, ts.URL)}}
	_, err := c.Get(reg.URL + "/v2/a/manifests/latest")
	if err == nil || !strings.Contains(err.Error(), "rejected the credentials") {
		t.Fatalf("err = %v", err)
	}
	if got := src.invalidations(); len(got) != 1 || got[0] != "registry.test" {
		t.Fatalf("invalidated %q", got)
	}
}

func TestTransportContextOverrides(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t)
	reg := newBearerRegistry(t, ts.URL+"/token")
	keychain := Credentials{Username: "proxy", Password: "proxy-pw"}
	client := Credentials{Username: "client", Password: "client-pw"}
	tests := []struct {
		name      string
		ctx       func(context.Context) context.Context
		wantAuth  string // at the token server
		wantCode  int
		wantHits  int64
		wantToken int64
	}{
		{name: "keychain", ctx: func(c context.Context) context.Context { return c }, wantAuth: basicOf(keychain), wantCode: 200, wantHits: 2, wantToken: 1},
		{name: "client credentials", ctx: func(c context.Context) context.Context { return WithCredentials(c, client) }, wantAuth: basicOf(client), wantCode: 200, wantHits: 1, wantToken: 1},
		{name: "explicitly anonymous", ctx: func(c context.Context) context.Context { return WithCredentials(c, Credentials{}) }, wantAuth: "", wantCode: 200, wantHits: 1, wantToken: 1},
		{name: "client header unchanged, 401 returned", ctx: func(c context.Context) context.Context {
			return WithAuthorization(WithCredentials(c, client), "Bearer not-a-token")
		}, wantCode: 401, wantHits: 1, wantToken: 0},
	}
	src := &fakeSource{creds: map[string]Credentials{"registry.test": keychain}}
	tr := &Transport{Host: hostOf(t, reg.URL), Registry: "registry.test", Keychain: src, AllowRealm: onlyRealm(t, ts.URL)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h0, t0 := reg.hits.Load(), ts.hits.Load()
			req, _ := http.NewRequestWithContext(tt.ctx(t.Context()), "GET", reg.URL+"/v2/team/app/manifests/latest", nil)
			resp, err := (&http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				return tr.RoundTrip(r)
			})}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || reg.hits.Load()-h0 != tt.wantHits || ts.hits.Load()-t0 != tt.wantToken {
				t.Fatalf("status %d, registry %d, token %d", resp.StatusCode, reg.hits.Load()-h0, ts.hits.Load()-t0)
			}
			if tt.wantToken > 0 {
				if authz, _ := ts.last(); authz != tt.wantAuth {
					t.Fatalf("token request Authorization %q, want %q", authz, tt.wantAuth)
				}
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestIdentityTokenFlow: identity tokens go to the realm as an OAuth2
// refresh_token grant; a realm without POST support gets GET with Basic.
func TestIdentityTokenFlow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		postStatus int
		wantCalls  string
	}{
		{name: "oauth2 POST", postStatus: 200, wantCalls: "POST"},
		{name: "POST not supported falls back to GET", postStatus: 405, wantCalls: "POST GET"},
		{name: "POST rejected is final", postStatus: 401, wantCalls: "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var calls []string
			ts := newTokenServer(t)
			ts.reply = func(w http.ResponseWriter, r *http.Request, n int64) {
				mu.Lock()
				calls = append(calls, r.Method)
				mu.Unlock()
				switch r.Method {
				case http.MethodPost:
					_ = r.ParseForm()
					if r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("refresh_token") != "rt" ||
						r.PostForm.Get("service") != "svc" || r.PostForm.Get("scope") != "repository:a:pull" {
						w.WriteHeader(400)
						return
					}
					if tt.postStatus != 200 {
						w.WriteHeader(tt.postStatus)
						return
					}
					_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-post"})
				case http.MethodGet:
					if u, p, _ := r.BasicAuth(); u != IdentityTokenUsername || p != "rt" {
						w.WriteHeader(401)
						return
					}
					_ = json.NewEncoder(w).Encode(map[string]any{"token": "tok-get"})
				}
			}
			c := NewTokenCache(nil, TokenOptions{})
			tok, err := c.Token(t.Context(), TokenRequest{Realm: ts.URL + "/token", Service: "svc", Scopes: []string{"repository:a:pull"},
				Credentials: Credentials{Username: IdentityTokenUsername, Password: "rt"}})
			if tt.postStatus == 401 {
				if err == nil {
					t.Fatal("want an error")
				}
			} else if err != nil || !strings.HasPrefix(tok, "tok-") {
				t.Fatalf("Token = %q, %v", tok, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if got := strings.Join(calls, " "); got != tt.wantCalls {
				t.Fatalf("realm calls %q, want %q", got, tt.wantCalls)
			}
		})
	}
}
