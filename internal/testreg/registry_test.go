package testreg

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

func TestAuthModesPushPull(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		opts       Options
		user, pass string
		challenge  string // prefix of the /v2/ challenge; "" = none
	}{
		{name: "none/plain-http", opts: Options{}},
		{name: "none/tls", opts: Options{TLS: true}},
		{name: "basic/tls", opts: Options{TLS: true, Auth: AuthBasic, Username: "u", Password: "p"}, user: "u", pass: "p", challenge: `Basic realm="testreg"`},
		{name: "token-anonymous/tls", opts: Options{TLS: true, Auth: AuthToken}, challenge: `Bearer realm="https://127.0.0.1:`},
		{name: "token-credentials/tls", opts: Options{TLS: true, Auth: AuthToken, Username: "alice", Password: "secret", TokenTTL: 60}, user: "alice", pass: "secret", challenge: `Bearer realm="https://127.0.0.1:`},
		{name: "token-realm-on-its-own-listener/tls", opts: Options{TLS: true, Auth: AuthToken, RealmHost: "127.0.0.1"}, challenge: `Bearer realm="https://127.0.0.1:`},
		{name: "token-realm-localhost/tls-h1", opts: Options{TLS: true, Auth: AuthToken, RealmHost: "localhost", DisableHTTP2: true}, challenge: `Bearer realm="https://localhost:`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := Start(t, tc.opts)
			img := reg.PushImage(t, "team/app", "v1", RandomLayer(t, 4096), RandomLayer(t, 8192))
			idx := reg.PushIndex(t, "team/multi", "latest")

			p := newPuller(t, reg, tc.user, tc.pass)
			resp, _ := newPuller(t, reg, "", "").once(http.MethodGet, "/v2/", nil)
			if tc.challenge == "" {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("/v2/: status %d", resp.StatusCode)
				}
			} else {
				if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), tc.challenge) {
					t.Fatalf("/v2/ anonymous: %d %q, want 401 %q…", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), tc.challenge)
				}
			}

			reg.ResetCounts()
			p.pullImage(img)
			wantManifest, wantToken := int64(1), int64(0)
			if tc.opts.Auth == AuthToken {
				wantManifest, wantToken = 2, 1 // 401, token, retry
			}
			checkCounts(t, reg, map[[2]string]int64{
				{"GET", KindManifest}: wantManifest,
				{"GET", KindToken}:    wantToken,
				{"GET", KindBlob}:     3,
				{"", KindOther}:       0,
			})
			if recs := reg.Requests(); recs[len(recs)-1].Status != http.StatusOK {
				t.Fatalf("last record %+v, want status 200", recs[len(recs)-1])
			}

			p.token = ""
			resp, body := p.get("/v2/team/multi/manifests/latest", MediaTypeOCIIndex)
			if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != idx.ManifestDigest {
				t.Fatalf("index: status %d digest %s, want %s", resp.StatusCode, digest.FromBytes(body), idx.ManifestDigest)
			}
			if len(idx.Images) != 2 || idx.Images[0].Layers[0].Digest == idx.Images[1].Layers[0].Digest {
				t.Fatalf("index children: %d, want 2 with distinct layers", len(idx.Images))
			}
			for _, child := range idx.Images {
				p.pullImage(child)
			}
		})
	}
}

func checkCounts(t *testing.T, reg *Registry, want map[[2]string]int64) {
	t.Helper()
	for k, n := range want {
		if got := reg.Count(k[0], k[1]); got != n {
			t.Errorf("Count(%q, %q) = %d, want %d; requests: %+v", k[0], k[1], got, n, reg.Requests())
		}
	}
}

func TestTokenRules(t *testing.T) {
	t.Parallel()
	reg := Start(t, Options{TLS: true, Auth: AuthToken, Username: "alice", Password: "secret"})
	img := reg.PushImage(t, "team/app", "v1")
	reg.PushImage(t, "team/other", "v1")
	manifest := "/v2/team/app/manifests/v1"

	p := newPuller(t, reg, "alice", "secret")
	if resp, _ := p.get(manifest, img.MediaType); resp.StatusCode != http.StatusOK {
		t.Fatalf("with token: %d", resp.StatusCode)
	}
	cases := []struct {
		name      string
		path      string
		prepare   func()
		wantError bool // challenge carries error="invalid_token"
	}{
		{name: "token works again", path: manifest},
		{name: "scope of another repo", path: "/v2/team/other/manifests/v1", wantError: true},
		{name: "expired tokens", path: manifest, prepare: reg.ExpireTokens, wantError: true},
		{name: "no token", path: manifest, prepare: func() { p.token = "" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prepare != nil {
				tc.prepare()
			}
			resp, _ := p.once(http.MethodGet, tc.path, []string{img.MediaType})
			if !tc.wantError && p.token != "" {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d, want 200", resp.StatusCode)
				}
				return
			}
			h := resp.Header.Get("WWW-Authenticate")
			if resp.StatusCode != http.StatusUnauthorized || strings.Contains(h, "invalid_token") != tc.wantError {
				t.Fatalf("got %d %q", resp.StatusCode, h)
			}
			if params := parseChallenge(h); params["service"] != Service || params["realm"] != reg.TokenURL ||
				!strings.HasPrefix(params["scope"], "repository:team/") {
				t.Fatalf("challenge %q", h)
			}
		})
	}

	t.Run("token server wants credentials", func(t *testing.T) {
		for _, creds := range [][2]string{{"", ""}, {"alice", "wrong"}} {
			req, _ := http.NewRequest(http.MethodGet, reg.TokenURL+"?service=testreg&scope=repository:team/app:pull", nil)
			if creds[0] != "" {
				req.SetBasicAuth(creds[0], creds[1])
			}
			resp, err := reg.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("creds %q: status %d, want 401", creds, resp.StatusCode)
			}
		}
	})
}

func TestStopRestart(t *testing.T) {
	t.Parallel()
	for _, auth := range []AuthMode{AuthNone, AuthToken} {
		t.Run([]string{"none", "basic", "token"}[auth], func(t *testing.T) {
			reg := Start(t, Options{TLS: true, Auth: auth})
			img := reg.PushImage(t, "app", "v1")
			host, tokenURL := reg.Host, reg.TokenURL
			p := newPuller(t, reg, "", "")
			p.pullImage(img)

			reg.Stop()
			reg.Stop() // idempotent
			for _, u := range []string{reg.URL + "/v2/", reg.TokenURL} {
				if u == "" {
					continue
				}
				_, err := reg.Client().Get(u)
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("GET %s while stopped: %v, want connection refused", u, err)
				}
			}
			reg.PushImage(t, "app", "v2") // helpers keep working while stopped

			reg.Restart(t)
			if reg.Host != host || reg.TokenURL != tokenURL {
				t.Fatalf("moved: %s %s, was %s %s", reg.Host, reg.TokenURL, host, tokenURL)
			}
			p.token = ""
			p.c = reg.Client()
			p.pullImage(img)
		})
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	cases := []struct{ path, kind, repo string }{
		{"/v2/", KindOther, ""},
		{"/v2/_catalog", KindOther, ""},
		{"/v2/library/alpine/manifests/3.20", KindManifest, "library/alpine"},
		{"/v2/a/blobs/sha256:abc", KindBlob, "a"},
		{"/v2/a/blobs/uploads/", KindOther, "a"},
		{"/v2/a/blobs/uploads/123", KindOther, "a"},
		{"/v2/a/b/c/tags/list", KindTags, "a/b/c"},
		{"/v2/a/referrers/sha256:abc", KindReferrers, "a"},
		{"/v2/x/blobs/y/manifests/latest", KindManifest, "x/blobs/y"},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			if kind, repo := classify(tc.path); kind != tc.kind || repo != tc.repo {
				t.Fatalf("classify = %s %q, want %s %q", kind, repo, tc.kind, tc.repo)
			}
		})
	}
}

func TestDistributionLogsSilenced(t *testing.T) {
	// Not parallel: it swaps the output of logrus's standard logger.
	var buf bytes.Buffer
	std := logrus.StandardLogger()
	out, level := std.Out, std.GetLevel()
	std.SetOutput(&buf)
	std.SetLevel(logrus.DebugLevel)
	defer func() { std.SetOutput(out); std.SetLevel(level) }()

	reg := Start(t, Options{})
	reg.PushImage(t, "app", "v1")
	for _, path := range []string{"/v2/", "/v2/app/manifests/v1", "/v2/app/manifests/missing", "/v2/app/blobs/" + digest.FromString("x").String()} {
		resp, err := reg.Client().Get(reg.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	reg.Close()
	if buf.Len() != 0 {
		t.Fatalf("distribution logged to the standard logger:\n%s", buf.String())
	}
}
