package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// fakeSignedUpstream is a plain-HTTP registry whose blobs redirect to
// signed URLs on its own address (as S3 or a CDN would, query and all),
// which accepts upload PATCHes, and which serves /plain to absolute-form
// clients. Paths with "broken" cut the connection.
func fakeSignedUpstream(t *testing.T, blob []byte, secret string) (*httptest.Server, digest.Digest, digest.Digest) {
	t.Helper()
	ok := digest.FromBytes(blob)
	bad := digest.FromString("broken " + secret)
	cut := func(w http.ResponseWriter) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		switch p := r.URL.Path; {
		case p == "/v2/":
			w.WriteHeader(200)
		case p == "/v2/app/blobs/"+ok.String():
			http.Redirect(w, r, "/cdn/ok?X-Amz-Credential=AKIA%2F"+secret+"&X-Amz-Signature="+secret, http.StatusTemporaryRedirect)
		case p == "/v2/app/blobs/"+bad.String():
			http.Redirect(w, r, "/cdn/broken?X-Amz-Signature="+secret, http.StatusTemporaryRedirect)
		case p == "/cdn/ok":
			w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
			w.Write(blob)
		case strings.Contains(p, "broken"):
			cut(w)
		case strings.HasPrefix(p, "/v2/app/blobs/uploads/"):
			w.Header().Set("Location", p+"?_state="+secret)
			w.WriteHeader(http.StatusAccepted)
		case p == "/plain":
			io.WriteString(w, "plain")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, ok, bad
}

// TestNoSecretQueryInAnyLog: query values that may be credentials
// (X-Amz-Signature, token, upload _state) never reach the log, at debug
// level, on any path a request takes: the mirror's access line, the
// upstream lines of a fill redirected to a signed URL (and of one whose
// signed URL fails), the access line of a request forwarded through an
// intercepted CONNECT (a push's upload PATCH, and one whose upstream
// fails), and an absolute-form request (HTTP_PROXY) forwarded or answered
// by the mirror.
func TestNoSecretQueryInAnyLog(t *testing.T) {
	t.Parallel()
	secrets := map[string]string{}
	for _, name := range []string{"mirror", "upstream", "push", "pushfail", "plain", "absmirror"} {
		sum := sha256.Sum256([]byte(name + t.Name()))
		secrets[name] = fmt.Sprintf("S3CR3T%x", sum[:6])
	}
	blob := []byte("layer bytes behind a signed URL")
	up, ok, bad := fakeSignedUpstream(t, blob, secrets["upstream"])
	u, _ := url.Parse(up.URL)
	_, upPort, _ := net.SplitHostPort(u.Host)
	addr, logs, pool, stop := runProxy(t, fmt.Sprintf(`
debug: true
dockerHub: false
allowPush: true
registries:
  - host: reg.test
    endpoint: %s
    insecure: true
connect:
  allowPorts: [443, %s]
  allowNetworks: [127.0.0.1/32]
`, up.URL, upPort))
	send := func(c *http.Client, method, rawURL string) int {
		t.Helper()
		req, err := http.NewRequest(method, rawURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, rawURL, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	direct := &http.Client{}
	if got := send(direct, "GET", "http://"+addr+"/v2/reg.test/app/blobs/"+ok.String()+"?token="+secrets["mirror"]); got != 200 {
		t.Fatalf("mirror GET through a signed redirect: %d\n%s", got, logs)
	}
	if got := send(direct, "GET", "http://"+addr+"/v2/reg.test/app/blobs/"+bad.String()); got < 500 {
		t.Fatalf("mirror GET whose signed URL fails: %d", got)
	}
	shim := proxyClient(addr, pool)
	if got := send(shim, "PATCH", "https://reg.test/v2/app/blobs/uploads/1?_state="+secrets["push"]); got != http.StatusAccepted {
		t.Fatalf("upload PATCH through the shim: %d\n%s", got, logs)
	}
	if got := send(shim, "PATCH", "https://reg.test/v2/app/blobs/uploads/broken?_state="+secrets["pushfail"]); got != http.StatusBadGateway {
		t.Fatalf("upload PATCH whose upstream fails: %d", got)
	}
	if got := send(shim, "GET", "http://"+u.Host+"/plain?token="+secrets["plain"]); got != 200 {
		t.Fatalf("absolute-form GET: %d\n%s", got, logs)
	}
	if got := send(shim, "GET", "http://reg.test/v2/app/blobs/"+ok.String()+"?X-Amz-Signature="+secrets["absmirror"]); got != 200 {
		t.Fatalf("absolute-form GET of the mirror: %d\n%s", got, logs)
	}
	shim.CloseIdleConnections()
	stop()
	out := logs.String()
	for name, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the %s secret is in the log:\n%s", name, out)
		}
	}
	for _, want := range []string{"token=REDACTED", "_state=REDACTED", "X-Amz-Signature=REDACTED", "upstream request", "shim request failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q (the paths under test were not logged):\n%s", want, out)
		}
	}
}
