package shim

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder stands in for the mirror, the next handler and the real
// registry, and records what reached each.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (rec *recorder) handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.seen = append(rec.seen, fmt.Sprintf("%s %s %s range=%s auth=%s body=%d", name, r.Method, r.URL.RequestURI(), r.Header.Get("Range"), r.Header.Get("Authorization"), len(body)))
		rec.mu.Unlock()
		switch {
		case name == "upstream" && r.Method == http.MethodPost:
			w.Header().Set("Location", "https://"+r.Host+"/v2/team/app/blobs/uploads/123")
			w.WriteHeader(http.StatusAccepted)
		case name == "upstream" && r.Method == http.MethodPut:
			w.WriteHeader(http.StatusCreated)
		default:
			io.WriteString(w, "ok")
		}
	})
}

func (rec *recorder) last() string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.seen) == 0 {
		return ""
	}
	return rec.seen[len(rec.seen)-1]
}

type testShim struct {
	addr   string
	pool   *x509.CertPool
	rec    *recorder
	minter *Minter
	mu     sync.Mutex
	forgot []string
}

// newTestShimOwnAuth is newTestShim with ALLOW_PUSH off and
// ALLOW_PUSH_WITH_OWN_AUTH on.
func newTestShimOwnAuth(t *testing.T) *testShim { return newTestShimOpts(t, false, true) }

// newTestShim serves a Shim on loopback in front of recorders.
func newTestShim(t *testing.T, allowPush bool) *testShim { return newTestShimOpts(t, allowPush, false) }

func newTestShimOpts(t *testing.T, allowPush, ownAuth bool) *testShim {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts := &testShim{rec: &recorder{}, minter: NewMinter(ca, MinterOptions{}), pool: x509.NewCertPool()}
	ts.pool.AddCert(ca.Certificate())
	up := httptest.NewTLSServer(ts.rec.handler("upstream"))
	t.Cleanup(up.Close)
	upURL, _ := url.Parse(up.URL)
	namespaces := map[string]string{"docker.io": "docker.io", "registry.test:5000": "registry.test_5000", "quay.io": "quay.io"}
	sh, err := New(ts.rec.handler("mirror"), ts.rec.handler("next"), ts.minter, Options{
		Policy: Policy{Intercepted: func(h string) bool {
			_, ok := namespaces[h]
			return ok || h == "auth.docker.io"
		}},
		Namespace: func(h string) (string, bool) { ns, ok := namespaces[h]; return ns, ok },
		Forward: func(string) (*url.URL, http.RoundTripper) {
			return upURL, up.Client().Transport
		},
		AllowPush:            allowPush,
		AllowPushWithOwnAuth: ownAuth,
		RequestBuffering:     true,
		SpoolDir:             t.TempDir(),
		OnManifestChange: func(_ context.Context, host, repo, ref string) {
			ts.mu.Lock()
			ts.forgot = append(ts.forgot, host+" "+repo+" "+ref)
			ts.mu.Unlock()
		},
		HeaderTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sh)
	t.Cleanup(func() { srv.Close(); sh.Close() })
	ts.addr = srv.Listener.Addr().String()
	return ts
}

func (ts *testShim) client() *http.Client {
	pu, _ := url.Parse("http://" + ts.addr)
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: ts.pool}, ForceAttemptHTTP2: true}}
}

func TestRouteThroughTheShim(t *testing.T) {
	cases := []struct {
		name      string
		allowPush bool
		method    string
		url       string
		hdr       []string
		want      string
	}{
		{"docker hub api host", false, "GET", "https://registry-1.docker.io/v2/library/alpine/manifests/3.20", nil, "mirror GET /v2/docker.io/library/alpine/manifests/3.20"},
		{"crane's index host, same cache", false, "GET", "https://index.docker.io/v2/library/alpine/blobs/sha256:abc", nil, "mirror GET /v2/docker.io/library/alpine/blobs/sha256:abc"},
		{"range and query kept", false, "GET", "https://quay.io/v2/org/app/blobs/sha256:abc?x=1", []string{"Range", "bytes=5-9"}, "mirror GET /v2/quay.io/org/app/blobs/sha256:abc?x=1 range=bytes=5-9"},
		{"registry with port under its alias", false, "HEAD", "https://registry.test:5000/v2/team/app/manifests/v1", nil, "mirror HEAD /v2/registry.test_5000/team/app/manifests/v1"},
		{"base answered by the mirror", false, "GET", "https://quay.io/v2/", nil, "mirror GET /v2/"},
		{"base forwarded when pushes are on", true, "GET", "https://quay.io/v2/", nil, "upstream GET /v2/"},
		{"token realm forwarded", false, "GET", "https://auth.docker.io/token?scope=x", []string{"Authorization", "Basic dTpw"}, "upstream GET /token?scope=x range= auth=Basic dTpw"},
		{"non-API path forwarded", false, "GET", "https://quay.io/api/v1/repository", nil, "upstream GET /api/v1/repository"},
		{"write refused by the mirror when pushes are off", false, "POST", "https://quay.io/v2/org/app/blobs/uploads/", nil, "mirror POST /v2/quay.io/org/app/blobs/uploads/"},
		{"write forwarded with the client's credentials", true, "POST", "https://quay.io/v2/org/app/blobs/uploads/", []string{"Authorization", "Bearer client-token"}, "upstream POST /v2/org/app/blobs/uploads/ range= auth=Bearer client-token"},
		{"origin-form goes to next", false, "GET", "http://" + "SELF" + "/setup/systemd", nil, "next GET /setup/systemd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestShim(t, tc.allowPush)
			u := strings.Replace(tc.url, "SELF", ts.addr, 1)
			req, _ := http.NewRequest(tc.method, u, nil)
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			c := ts.client()
			if strings.HasPrefix(u, "http://"+ts.addr) {
				c = http.DefaultClient
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := ts.rec.last(); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("reached %q, want prefix %q", got, tc.want)
			}
		})
	}
}

func TestPushPassthrough(t *testing.T) {
	ts := newTestShim(t, true)
	c := ts.client()
	resp, err := c.Post("https://registry.test:5000/v2/team/app/blobs/uploads/", "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "https://registry.test:5000/v2/team/app/blobs/uploads/123") {
		t.Fatalf("Location %q does not point back at the registry host", loc)
	}
	body := strings.Repeat("x", 1<<20)
	req, _ := http.NewRequest("PUT", "https://registry.test:5000/v2/team/app/manifests/v2", strings.NewReader(body))
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || !strings.Contains(ts.rec.last(), fmt.Sprintf("body=%d", len(body))) {
		t.Fatalf("PUT: %d, upstream saw %q", resp.StatusCode, ts.rec.last())
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.forgot) != 1 || ts.forgot[0] != "registry.test:5000 team/app v2" {
		t.Fatalf("tag records dropped: %q", ts.forgot)
	}
}

func TestClientsVanishingMidHandshakeLeakNothing(t *testing.T) {
	ts := newTestShim(t, false)
	// Warm up: one full request, so lazily started goroutines exist.
	resp, err := ts.client().Get("https://quay.io/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ts.client().CloseIdleConnections()
	baseG, baseFD := runtime.NumGoroutine(), countFDs(t)
	for i := range 60 {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "CONNECT quay.io:443 HTTP/1.1\r\nHost: quay.io:443\r\n\r\n")
		br := bufio.NewReader(conn)
		if line, _ := br.ReadString('\n'); !strings.Contains(line, "200") {
			t.Fatalf("CONNECT: %q", line)
		}
		br.ReadString('\n')
		switch i % 3 {
		case 0: // gone before the ClientHello
		case 1: // a few bytes of garbage
			conn.Write([]byte("\x16\x03\x01\x00"))
		case 2: // a real ClientHello, then gone
			tc := tls.Client(conn, &tls.Config{ServerName: "quay.io", RootCAs: ts.pool})
			tc.SetDeadline(time.Now().Add(50 * time.Millisecond))
			go tc.Handshake()
		}
		conn.Close()
	}
	// Goroutines and descriptors return to where they were.
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, fd := runtime.NumGoroutine(), countFDs(t)
		if g <= baseG+2 && fd <= baseFD+2 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("leak: goroutines %d (base %d), fds %d (base %d)\n%s", g, baseG, fd, baseFD, buf[:n])
		}
		runtime.Gosched()
		time.Sleep(20 * time.Millisecond) // polling for the leak check, not synchronisation
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestPushWithOwnAuth(t *testing.T) {
	cases := []struct {
		name, auth, want string
	}{
		{"without credentials the mirror refuses", "", "mirror POST"},
		{"with the client's own credentials it goes upstream", "Bearer mine", "upstream POST"},
	}
	sh := newTestShimOwnAuth(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "https://quay.io/v2/org/app/blobs/uploads/", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := sh.client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := sh.rec.last(); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("reached %q, want %q", got, tc.want)
			}
		})
	}
}
