package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"golang.org/x/crypto/bcrypt"
)

// htpasswdFile writes user:bcrypt lines.
func htpasswdFile(t *testing.T, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	f := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCachedPrivateImagesStayPrivate(t *testing.T) {
	t.Parallel()
	private := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken, Username: "robot", Password: "robot-secret-1"})
	public := testreg.Start(t, testreg.Options{TLS: true})
	perRepo := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthBasic, Username: "bob", Password: "bob-secret-2"})
	privImg := private.PushImage(t, "team/secret", "v1", testreg.RandomLayer(t, 10_000))
	pubImg := public.PushImage(t, "lib/open", "v1", testreg.RandomLayer(t, 10_000))
	upImg := perRepo.PushImage(t, "bob/app", "v1", testreg.RandomLayer(t, 10_000))
	users := htpasswdFile(t, map[string]string{"alice": "alice-pw-3", "carol": "carol-pw-4"})
	addr, logs, pool, stop := runProxy(t, fmt.Sprintf(`
dockerHub: false
clientAuth:
  htpasswd: %s
registries:
  - host: private.test
    endpoint: %s
    caFile: %s
    username: robot
    password: robot-secret-1
  - host: public.test
    endpoint: %s
    caFile: %s
  - host: perrepo.test
    endpoint: %s
    caFile: %s
    username: bob
    password: bob-secret-2
    access:
      mode: upstream
  - host: onlycarol.test
    endpoint: %s
    caFile: %s
    access:
      mode: users
      users: [carol]
`, users, private.URL, private.CAFile, public.URL, public.CAFile, perRepo.URL, perRepo.CAFile, public.URL, public.CAFile))

	get := func(path, user, pass string) (int, string, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b)
	}
	priv := "/v2/private.test/team/secret/manifests/v1"
	privBlob := "/v2/private.test/team/secret/blobs/" + privImg.Layers[0].Digest.String()
	cases := []struct {
		name, path, user, pass string
		status                 int
		challenge              bool
	}{
		{"proxy user fills the cache", priv, "alice", "alice-pw-3", 200, false},
		{"anonymous refused a cached private manifest", priv, "", "", 401, true},
		{"anonymous refused a cached private blob", privBlob, "", "", 401, true},
		{"wrong proxy password refused", priv, "alice", "nope", 401, true},
		{"proxy user reads the blob", privBlob, "alice", "alice-pw-3", 200, false},
		{"base challenges anonymous clients", "/v2/", "", "", 401, true},
		{"base lets proxy users in", "/v2/", "alice", "alice-pw-3", 200, false},
		{"public registry needs nothing", "/v2/public.test/lib/open/manifests/v1", "", "", 200, false},
		{"users mode: listed user", "/v2/onlycarol.test/lib/open/manifests/v1", "carol", "carol-pw-4", 200, false},
		{"users mode: other user denied", "/v2/onlycarol.test/lib/open/manifests/v1", "alice", "alice-pw-3", 403, false},
		{"upstream mode: no credentials", "/v2/perrepo.test/bob/app/manifests/v1", "", "", 401, true},
		{"upstream mode: credentials upstream rejects", "/v2/perrepo.test/bob/app/manifests/v1", "bob", "wrong", 401, true},
		{"upstream mode: proxy user is not enough", "/v2/perrepo.test/bob/app/manifests/v1", "alice", "alice-pw-3", 401, true},
		{"upstream mode: client's own credentials", "/v2/perrepo.test/bob/app/manifests/v1", "bob", "bob-secret-2", 200, false},
		{"upstream mode: cached, still refused to others", "/v2/perrepo.test/bob/app/manifests/v1", "mallory", "x", 401, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, chal, body := get(tc.path, tc.user, tc.pass)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if tc.challenge != strings.HasPrefix(chal, "Basic realm=") {
				t.Fatalf("WWW-Authenticate %q (want challenge: %v)", chal, tc.challenge)
			}
			if status >= 400 && !strings.Contains(body, `"errors"`) {
				t.Fatalf("denial is not an OCI error: %s", body)
			}
		})
	}
	_ = pubImg
	_ = upImg

	// Through the shim: Proxy-Authorization on CONNECT identifies the user.
	t.Run("shim", func(t *testing.T) {
		for _, tc := range []struct {
			user   string
			status int
		}{{"", 401}, {"alice", 200}} {
			c := proxyClient(addr, pool)
			if tc.user != "" {
				c = proxyClientAuth(addr, pool, "alice", "alice-pw-3")
			}
			req, _ := http.NewRequest("GET", "https://private.test/v2/team/secret/manifests/v1", nil)
			req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("user %q through the shim: %d, want %d", tc.user, resp.StatusCode, tc.status)
			}
		}
		// A wrong Proxy-Authorization is a 407 at CONNECT.
		c := proxyClientAuth(addr, pool, "alice", "wrong")
		if _, err := c.Get("https://private.test/v2/"); err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
			t.Fatalf("wrong proxy credentials: err %v, want 407", err)
		}
	})

	stop()
	all := logs.String()
	for _, secret := range []string{"robot-secret-1", "bob-secret-2", "alice-pw-3", "carol-pw-4"} {
		if strings.Contains(all, secret) {
			t.Errorf("the log contains the secret %q", secret)
		}
	}
	if !strings.Contains(all, "access denied") || !strings.Contains(all, "client=anonymous") {
		t.Errorf("denials are not logged with the client's identity")
	}
}

func TestAllowOwnAuthUsesTheClientsCredentials(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken, Username: "dave", Password: "dave-secret-5"})
	reg.PushImage(t, "dave/app", "v1", testreg.RandomLayer(t, 1000))
	addr, logs, _, stop := runProxy(t, fmt.Sprintf(`
dockerHub: false
allowOwnAuth: true
registries:
  - host: own.test
    endpoint: %s
    caFile: %s
`, reg.URL, reg.CAFile))
	get := func(user, pass string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v2/own.test/dave/app/manifests/v1", nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}
	if status, chal := get("", ""); status != 401 || !strings.HasPrefix(chal, "Basic") {
		t.Fatalf("anonymous: %d %q, want 401 with a challenge", status, chal)
	}
	if status, _ := get("dave", "wrong"); status != 401 {
		t.Fatalf("wrong own credentials: %d, want 401", status)
	}
	if status, _ := get("dave", "dave-secret-5"); status != 200 {
		t.Fatalf("own credentials: %d, want 200", status)
	}
	stop()
	if strings.Contains(logs.String(), "dave-secret-5") {
		t.Fatal("the client's password appears in the log")
	}
}
