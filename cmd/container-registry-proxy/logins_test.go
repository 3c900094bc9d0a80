package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// TestFailedLoginsAreLimitedOnTheMirror: with clientAuth.maxFailedLogins
// 3, three refused logins to a registry served to proxy users make the
// fourth request with credentials, even the right ones, a 429
// TOOMANYREQUESTS with Retry-After and the OCI error body.
func TestFailedLoginsAreLimitedOnTheMirror(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 1000))
	users := htpasswdFile(t, map[string]string{"alice": "alice-pw-3"})
	addr, _, _, _ := runProxy(t, fmt.Sprintf(`
dockerHub: false
clientAuth:
  htpasswd: %s
  maxFailedLogins: 3
registries:
  - host: reg.test
    endpoint: %s
    caFile: %s
    access:
      mode: authenticated
`, users, reg.URL, reg.CAFile))
	get := func(pass string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v2/reg.test/team/app/manifests/v1", nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		req.SetBasicAuth("alice", pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	if resp, _ := get("alice-pw-3"); resp.StatusCode != 200 {
		t.Fatalf("the right password: %d", resp.StatusCode)
	}
	for i := range 3 {
		if resp, _ := get("guess"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp, body := get("alice-pw-3")
	var env oci.Envelope
	if resp.StatusCode != http.StatusTooManyRequests || json.Unmarshal(body, &env) != nil || len(env.Errors) != 1 || env.Errors[0].Code != oci.CodeTooManyRequests {
		t.Fatalf("after 3 failures: %d %s; want 429 TOOMANYREQUESTS", resp.StatusCode, body)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 || s > 60 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
}

// TestFailedLoginsAreLimitedOnConnect: refused Proxy-Authorization on
// CONNECT counts too; past the limit a CONNECT with credentials, even the
// right ones, is answered 429 with Retry-After.
func TestFailedLoginsAreLimitedOnConnect(t *testing.T) {
	t.Parallel()
	users := htpasswdFile(t, map[string]string{"alice": "alice-pw-3"})
	addr, logs, _, _ := runProxy(t, fmt.Sprintf("dockerHub: false\nclientAuth:\n  htpasswd: %s\n  requireForConnect: true\n  maxFailedLogins: 3\n", users))
	connect := func(pass string) *http.Response {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cred := base64.StdEncoding.EncodeToString([]byte("alice:" + pass))
		fmt.Fprintf(c, "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\nProxy-Authorization: Basic %s\r\n\r\n", cred)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := range 3 {
		if resp := connect("guess"); resp.StatusCode != http.StatusProxyAuthRequired {
			t.Fatalf("wrong proxy password %d: %d, want 407", i+1, resp.StatusCode)
		}
	}
	resp := connect("alice-pw-3")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after 3 failures: %d, Retry-After %q; want 429 with Retry-After\n%s", resp.StatusCode, resp.Header.Get("Retry-After"), logs)
	}
}
