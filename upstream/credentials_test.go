package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// jsonKey is a GCR-style _json_key password: multi-line JSON with spaces,
// colons and quotes.
const jsonKey = `{
  "type": "service_account",
  "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg: :: :::\n-----END PRIVATE KEY-----\n",
  "client_email": "proxy@project.iam.gserviceaccount.com",
  "note": "two  spaces and \"quotes\""
}
`

// regHost is the name the tests give testreg registries: not the
// endpoint's 127.0.0.1, so keychain lookups by registry name and by
// endpoint host differ.
func regHost(t *testing.T, reg *testreg.Registry) string {
	t.Helper()
	_, port, err := net.SplitHostPort(reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	return "registry.test:" + port
}

// newFor builds a Registry for a testreg registry. Configured token
// realms (testreg's RealmHost listener, on another loopback port) are
// internal addresses: their network is opened as an operator would.
func newFor(t *testing.T, reg *testreg.Registry, kc auth.Source, realms ...string) *Registry {
	t.Helper()
	opts := Options{Host: regHost(t, reg), Endpoint: reg.URL, CAFile: reg.CAFile, Keychain: kc, TokenRealms: realms}
	if len(realms) > 0 {
		opts.AllowNetworks = testutil.LoopbackNetworks
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func keychain(t *testing.T, entries ...auth.Entry) *auth.Keychain {
	t.Helper()
	k, err := auth.NewKeychain(auth.KeychainOptions{Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fetchImage reads img's manifest and blobs through r.
func fetchImage(ctx context.Context, r *Registry, img testreg.Image) error {
	_, body, err := r.Manifest(ctx, img.Repo, img.Tag, false)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, body)
	body.Close()
	for _, b := range append([]testreg.Blob{img.Config}, img.Layers...) {
		rc, _, err := r.Blob(ctx, img.Repo, b.Digest)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, rc)
		rc.Close()
	}
	return nil
}

func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	if status == 0 {
		if err != nil {
			t.Fatalf("err = %v, want success", err)
		}
		return
	}
	var oe *oci.Error
	if !errors.As(err, &oe) || oe.Status != status {
		t.Fatalf("err = %v, want an *oci.Error with status %d", err, status)
	}
}

func TestBasicAuthFromKeychain(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthBasic, Password: jsonKey, Username: "_json_key"})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 1024))
	good := func(host string) auth.Entry { return auth.Entry{Host: host, Username: "_json_key", Password: jsonKey} }
	tests := []struct {
		name    string
		entries []auth.Entry
		status  int
	}{
		{name: "registry name", entries: []auth.Entry{good(regHost(t, reg))}},
		{name: "endpoint host", entries: []auth.Entry{good(reg.Host)}},
		{name: "wrong password", entries: []auth.Entry{{Host: regHost(t, reg), Username: "_json_key", Password: "nope"}}, status: 401},
		{name: "no credentials", status: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newFor(t, reg, keychain(t, tt.entries...))
			wantStatus(t, fetchImage(t.Context(), r, img), tt.status)
		})
	}
}

// TestTokenRealmOnOtherHost is GitLab's shape: the registry (127.0.0.1,
// named registry.test) sends clients to a realm on another host name
// (localhost); the credentials may be keyed by either host, and the realm
// must be allowed as one of the registry's token realms. The password is
// a multi-line JSON key.
func TestTokenRealmOnOtherHost(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken, RealmHost: "localhost", Username: "_json_key", Password: jsonKey})
	img := reg.PushImage(t, "group/project", "v1", testreg.RandomLayer(t, 1024))
	tests := []struct {
		name    string
		entries []auth.Entry
		realms  []string
		status  int
		errIs   error
	}{
		{name: "realm host", entries: []auth.Entry{{Host: "localhost", Username: "_json_key", Password: jsonKey}}, realms: []string{"localhost"}},
		{name: "realm host wins over the registry's", realms: []string{"localhost"}, entries: []auth.Entry{
			{Host: regHost(t, reg), Username: "_json_key", Password: "wrong"},
			{Host: "localhost", Username: "_json_key", Password: jsonKey},
		}},
		{name: "registry host", entries: []auth.Entry{{Host: regHost(t, reg), Username: "_json_key", Password: jsonKey}}, realms: []string{"localhost"}},
		{name: "wrong password", entries: []auth.Entry{{Host: "localhost", Username: "_json_key", Password: jsonKey + " "}}, realms: []string{"localhost"}, status: 401},
		{name: "realm not allowed", entries: []auth.Entry{{Host: "localhost", Username: "_json_key", Password: jsonKey}}, status: 502, errIs: auth.ErrRealmNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg.ResetCounts()
			r := newFor(t, reg, keychain(t, tt.entries...), tt.realms...)
			err := fetchImage(t.Context(), r, img)
			wantStatus(t, err, tt.status)
			if tt.errIs != nil && !errors.Is(err, tt.errIs) {
				t.Fatalf("err = %v, want one caused by %v", err, tt.errIs)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("err %q shows the password", err)
			}
			if tt.status == 0 {
				if n := reg.Count(http.MethodGet, testreg.KindToken); n != 1 {
					t.Fatalf("token requests = %d, want 1 for one repository", n)
				}
			}
		})
	}
}

// TestTokenEconomy: 50 concurrent pulls after a cold start cost one token
// request per scope; after upstream expired every token, concurrent pulls
// refresh it once, and a single pull refreshes it once and retries once.
func TestTokenEconomy(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken, Username: "robot", Password: "robot-pw"})
	imgA := reg.PushImage(t, "team/a", "v1", testreg.RandomLayer(t, 4096), testreg.RandomLayer(t, 4096))
	imgB := reg.PushImage(t, "team/b", "v1", testreg.RandomLayer(t, 4096))
	r := newFor(t, reg, keychain(t, auth.Entry{Host: "127.0.0.1", Username: "robot", Password: "robot-pw"}))
	ctx := t.Context()

	pullAll := func(n int, imgs ...testreg.Image) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n*len(imgs))
		for i := range n {
			for _, img := range imgs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := fetchImage(ctx, r, img); err != nil {
						errs <- err
					}
				}()
			}
			_ = i
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name       string
		before     func()
		pulls      int
		wantTokens int64
		wantGets   int64 // manifest GETs, when not 0
	}{
		{name: "cold, 50 concurrent pulls of two repositories", pulls: 50, wantTokens: 2},
		{name: "warm", pulls: 50, wantTokens: 0},
		{name: "expired, concurrent", before: reg.ExpireTokens, pulls: 50, wantTokens: 2},
		{name: "expired, one pull refreshes once and retries once", before: reg.ExpireTokens, pulls: 1, wantTokens: 2, wantGets: 4},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.before != nil {
				s.before()
			}
			reg.ResetCounts()
			pullAll(s.pulls, imgA, imgB)
			if n := reg.Count(http.MethodGet, testreg.KindToken); n != s.wantTokens {
				t.Errorf("token requests = %d, want %d (one per scope)", n, s.wantTokens)
			}
			if s.wantGets != 0 {
				if n := reg.Count(http.MethodGet, testreg.KindManifest); n != s.wantGets {
					t.Errorf("manifest GETs = %d, want %d (one 401 and one retry per repository)", n, s.wantGets)
				}
			}
		})
	}
}

// fetchToken asks reg's token server for a pull token for repo.
func fetchToken(t *testing.T, reg *testreg.Registry, repo, user, pass string) string {
	t.Helper()
	u := reg.TokenURL + "?" + url.Values{"service": {testreg.Service}, "scope": {"repository:" + repo + ":pull"}}.Encode()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.SetBasicAuth(user, pass)
	resp, err := reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct{ Token string }
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&tr) != nil || tr.Token == "" {
		t.Fatalf("token server answered %d", resp.StatusCode)
	}
	return tr.Token
}

// TestCheckAccess: the check uses only the credentials in the context
// (never the keychain, which here holds working ones) and maps upstream's
// answer; tokens fetched for one identity never serve another.
func TestCheckAccess(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		auth testreg.AuthMode
	}{{"token", testreg.AuthToken}, {"basic", testreg.AuthBasic}} {
		t.Run(mode.name, func(t *testing.T) {
			reg := testreg.Start(t, testreg.Options{TLS: true, Auth: mode.auth, Username: "alice", Password: "alice-pw"})
			img := reg.PushImage(t, "private/app", "v1", testreg.RandomLayer(t, 1024))
			r := newFor(t, reg, keychain(t, auth.Entry{Host: regHost(t, reg), Username: "alice", Password: "alice-pw"}))
			alice := auth.Credentials{Username: "alice", Password: "alice-pw"}
			mallory := auth.Credentials{Username: "alice", Password: "guess"}
			withCreds := func(c auth.Credentials) context.Context { return auth.WithCredentials(t.Context(), c) }
			tests := []struct {
				name      string
				ctx       context.Context
				what, ref string
				status    int
			}{
				{name: "right credentials", ctx: withCreds(alice), what: AccessManifest, ref: "v1"},
				{name: "no credentials: anonymous, not the keychain", ctx: t.Context(), what: AccessManifest, ref: "v1", status: 401},
				{name: "wrong credentials", ctx: withCreds(mallory), what: AccessManifest, ref: "v1", status: 401},
				{name: "explicit anonymous", ctx: withCreds(auth.Credentials{}), what: AccessManifest, ref: "v1", status: 401},
				{name: "by digest", ctx: withCreds(alice), what: AccessManifest, ref: img.ManifestDigest.String()},
				{name: "blob", ctx: withCreds(alice), what: AccessBlob, ref: img.Layers[0].Digest.String()},
				{name: "tags", ctx: withCreds(alice), what: AccessTags},
				{name: "referrers", ctx: withCreds(alice), what: AccessReferrers, ref: img.ManifestDigest.String()},
				{name: "referrers, anonymous", ctx: t.Context(), what: AccessReferrers, ref: img.ManifestDigest.String(), status: 401},
				{name: "unknown tag", ctx: withCreds(alice), what: AccessManifest, ref: "v9", status: 404},
				{name: "bogus client header", ctx: auth.WithAuthorization(t.Context(), "Bearer bogus"), what: AccessManifest, ref: "v1", status: 401},
				{name: "bad kind", ctx: withCreds(alice), what: "catalog", ref: "v1", status: 400},
			}
			if mode.auth == testreg.AuthToken {
				tok := fetchToken(t, reg, img.Repo, "alice", "alice-pw")
				tests = append(tests, struct {
					name      string
					ctx       context.Context
					what, ref string
					status    int
				}{name: "client's own token passed through", ctx: auth.WithAuthorization(t.Context(), "Bearer "+tok), what: AccessManifest, ref: "v1"})
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					wantStatus(t, r.CheckAccess(tt.ctx, img.Repo, tt.what, tt.ref), tt.status)
				})
			}
			// The keychain still serves ordinary fetches.
			if err := fetchImage(t.Context(), r, img); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCredentialHelperRefreshOnRejection: credentials from a Docker
// config credHelpers entry are cached; when upstream rejects them the
// keychain entry is dropped, so the next request runs the helper again
// and picks up the rotated secret.
func TestCredentialHelperRefreshOnRejection(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken, Username: "helper-user", Password: "current-secret"})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 1024))
	dir := t.TempDir()
	calls, secret := filepath.Join(dir, "calls"), filepath.Join(dir, "secret")
	script := `#!/bin/sh
server=$(cat)
echo "$server" >> '` + calls + `'
printf '{"Username":"helper-user","Secret":"%s"}' "$(cat '` + secret + `')"
`
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-test"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	cfg := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"credHelpers": {"`+regHost(t, reg)+`": "test"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	kc, err := auth.NewKeychain(auth.KeychainOptions{DockerConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	r := newFor(t, reg, kc)
	setSecret := func(s string) {
		if err := os.WriteFile(secret, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	helperRuns := func() int {
		b, _ := os.ReadFile(calls)
		return len(strings.Fields(string(b)))
	}
	steps := []struct {
		name     string
		secret   string
		status   int
		wantRuns int
	}{
		{name: "stale secret rejected", secret: "stale-secret", status: 401, wantRuns: 1},
		{name: "rotated: the helper runs again", secret: "current-secret", wantRuns: 2},
		{name: "accepted answer is cached", wantRuns: 2},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.secret != "" {
				setSecret(s.secret)
			}
			err := fetchImage(t.Context(), r, img)
			wantStatus(t, err, s.status)
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Fatalf("error %q shows the secret", err)
			}
			if n := helperRuns(); n != s.wantRuns {
				t.Fatalf("helper ran %d times, want %d", n, s.wantRuns)
			}
		})
	}
}
