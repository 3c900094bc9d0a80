package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/storage"
)

// postGC sends POST /_admin/gc to addr with the bearer token (none when
// "") and returns the status.
func postGC(t *testing.T, method, addr, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+addr+adminGCPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		var rep storage.Report
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			t.Fatalf("the gc report: %v", err)
		}
	}
	return resp.StatusCode
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestAdminGCNeedsTheToken: POST /_admin/gc is refused (401) without the
// admin token even from loopback, where a TLS front end on the same host
// puts every client; with the token the proxy generated at start (in the
// cache directory, 0600) it makes the pass, on the main listener and on
// the metrics listener.
func TestAdminGCNeedsTheToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	maddr := freeAddr(t)
	addr, _, _, _ := runProxyIn(t, dir, "dockerHub: false\nmetricsListen: "+maddr+"\n")
	p := filepath.Join(dir, "cache", adminTokenFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the admin token file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 32 {
		t.Fatalf("generated token %q is short", token)
	}
	for _, a := range []string{addr, maddr} {
		if got := postGC(t, http.MethodPost, a, ""); got != http.StatusUnauthorized {
			t.Errorf("%s: POST from loopback without the token: %d; want 401", a, got)
		}
		if got := postGC(t, http.MethodPost, a, token+"x"); got != http.StatusUnauthorized {
			t.Errorf("%s: POST with a wrong token: %d; want 401", a, got)
		}
		if got := postGC(t, http.MethodGet, a, token); got != http.StatusMethodNotAllowed {
			t.Errorf("%s: GET with the token: %d; want 405", a, got)
		}
		if got := postGC(t, http.MethodPost, a, token); got != http.StatusOK {
			t.Errorf("%s: POST with the token: %d; want 200", a, got)
		}
	}
}

// TestAdminGCConfiguredToken: with admin.token set, that token opens the
// admin gc, none is generated, and the gc subcommand beside the proxy
// uses it.
func TestAdminGCConfiguredToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const token = "0123456789abcdef-admin"
	yaml := "dockerHub: false\nadmin:\n  token: " + token + "\n"
	addr, _, _, _ := runProxyIn(t, dir, yaml)
	if _, err := os.Stat(filepath.Join(dir, "cache", adminTokenFile)); !os.IsNotExist(err) {
		t.Fatalf("a token file was written although admin.token is set: %v", err)
	}
	if got := postGC(t, http.MethodPost, addr, token); got != http.StatusOK {
		t.Fatalf("POST with admin.token: %d", got)
	}
	if got := postGC(t, http.MethodPost, addr, ""); got != http.StatusUnauthorized {
		t.Fatalf("POST without it: %d", got)
	}
	var out, errb strings.Builder
	code := run([]string{"gc", "--config", filepath.Join(dir, "config.yml"), "--cache-dir", filepath.Join(dir, "cache"),
		"--ca-dir", filepath.Join(dir, "ca"), "--listen", addr}, envMap(nil), &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "made the pass itself") {
		t.Fatalf("gc beside the proxy: exit %d\n%s%s", code, out.String(), errb.String())
	}
}
