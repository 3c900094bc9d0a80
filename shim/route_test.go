package shim

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

// recorder stands in for the mirror and the real registry, and records what reached each.
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
			if strings.HasSuffix(r.URL.Path, "/referrer") {
				// A registry with the referrers API names the subject.
				w.Header().Set("OCI-Subject", testSubject)
			}
			w.WriteHeader(http.StatusCreated)
		case name == "upstream" && r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/refused/"):
			w.WriteHeader(http.StatusNotFound)
		case name == "upstream" && r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusAccepted)
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

// purgeRecorder is the Purger of the test shims: it keeps what it was
// told and fails with err.
type purgeRecorder struct {
	mu     sync.Mutex
	forgot []string
	err    error
}

func (f *purgeRecorder) record(what string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgot = append(f.forgot, what)
	return f.err
}

func (f *purgeRecorder) ForgetTag(_ context.Context, host, repo, tag string) error {
	return f.record("tag " + host + " " + repo + " " + tag)
}

func (f *purgeRecorder) ForgetReferrers(_ context.Context, host, repo string, subject digest.Digest) error {
	return f.record("referrers " + host + " " + repo + " " + subject.String())
}

// testSubject is the subject the test registry names in OCI-Subject.
const testSubject = "sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"

func (f *purgeRecorder) ForgetManifest(_ context.Context, host, repo string, d digest.Digest) error {
	return f.record("manifest " + host + " " + repo + " " + d.String())
}

func (f *purgeRecorder) ForgetBlob(_ context.Context, host, repo string, d digest.Digest) error {
	return f.record("blob " + host + " " + repo + " " + d.String())
}

func (f *purgeRecorder) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.forgot...)
}

type testShim struct {
	sh     *Shim
	up     *tlsUpstream
	addr   string
	pool   *x509.CertPool
	rec    *recorder
	purged *purgeRecorder
	logs   *testutil.SyncBuffer
}

// testShimOptions are what the route tests vary.
type testShimOptions struct {
	allowPush, ownAuth bool
	tagErr             error
	pushHint           string
	// hosts are the intercepted registries, all served by the recording
	// registry; default docker.io, registry.test:5000 and quay.io.
	hosts []string
}

// newTestShim serves a Shim on loopback in front of a recording mirror and
// a recording registry behind real TLS, which Docker Hub, quay.io and
// registry.test:5000 all pass through to.
func newTestShim(t *testing.T, o testShimOptions) *testShim {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts := &testShim{rec: &recorder{}, purged: &purgeRecorder{err: o.tagErr}, logs: &testutil.SyncBuffer{}, pool: x509.NewCertPool()}
	ts.pool.AddCert(ca.Certificate())
	up := newTLSUpstream(t, ts.rec.handler("upstream"))
	reg := func(host string) Registry { return Registry{Host: host, Endpoint: up.srv.URL, CAFile: up.caFile} }
	logger := logrus.New()
	logger.Out = ts.logs
	hosts := o.hosts
	if hosts == nil {
		hosts = []string{"docker.io", "registry.test:5000", "quay.io"}
	}
	var regs []Registry
	for _, h := range hosts {
		regs = append(regs, reg(h))
	}
	sh, err := New(ts.rec.handler("mirror"), NewMinter(ca, MinterOptions{}), Options{
		Registries:           regs,
		DockerHub:            slices.Contains(hosts, "docker.io"),
		AllowPush:            o.allowPush,
		AllowPushWithOwnAuth: o.ownAuth,
		PushHint:             o.pushHint,
		RequestBuffering:     true,
		SpoolDir:             t.TempDir(),
		Purger:               ts.purged,
		HeaderTimeout:        5 * time.Second,
		Logger:               logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The token host's real endpoint is on the internet: the test keeps
	// to loopback by aiming its route at the recording registry.
	// No test looks real names up: only IP literals have addresses.
	sh.addrs.lookup = func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("no DNS in tests") }
	if sh.routes[dockerHubAuth] != nil {
		sh.routes[dockerHubAuth] = &hostRoute{base: up.url, rt: sh.routes[hosts[0]].rt}
	}
	srv := httptest.NewServer(sh)
	t.Cleanup(func() {
		srv.Close()
		if err := sh.Close(); err != nil {
			t.Error(err)
		}
	})
	ts.addr = srv.Listener.Addr().String()
	ts.sh, ts.up = sh, up
	return ts
}

func (ts *testShim) client(t *testing.T) *http.Client { return proxyClient(t, ts.addr, ts.pool) }

func TestRouteThroughTheShim(t *testing.T) {
	t.Parallel()
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
		{"write forwarded with the client's credentials", true, "POST", "https://quay.io/v2/org/app/blobs/uploads/", []string{"Authorization", "Bearer client-token"}, "upstream POST /v2/org/app/blobs/uploads/ range= auth=Bearer client-token"},
		{"plain-HTTP registry in absolute form", false, "GET", "http://quay.io/v2/org/app/manifests/1", nil, "mirror GET /v2/quay.io/org/app/manifests/1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestShim(t, testShimOptions{allowPush: tc.allowPush})
			req, err := http.NewRequestWithContext(t.Context(), tc.method, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			resp, err := ts.client(t).Do(req)
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

// TestWritesRefusedWhenPushesAreOff: a write through the shim with pushes
// off is answered 405 UNSUPPORTED by the shim itself, naming what the
// caller said turns pushes on; neither the mirror nor the registry sees it.
func TestWritesRefusedWhenPushesAreOff(t *testing.T) {
	t.Parallel()
	ts := newTestShim(t, testShimOptions{pushHint: "set PUSHES=on"})
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		req, err := http.NewRequestWithContext(t.Context(), m, "https://quay.io/v2/org/app/blobs/uploads/", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ts.client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(string(body), `"code":"UNSUPPORTED"`) ||
			!strings.Contains(string(body), "pushes through this proxy are disabled") || !strings.Contains(string(body), "set PUSHES=on") {
			t.Fatalf("%s: %d %s", m, resp.StatusCode, body)
		}
	}
	if got := ts.rec.last(); got != "" {
		t.Fatalf("a refused write reached %q", got)
	}
}

func TestPushPassthrough(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		tagErr  error
		wantLog string
	}{
		{name: "tag record dropped"},
		{name: "a failure to drop it is logged, the push still succeeds", tagErr: errors.New("index unavailable"), wantLog: "updating the cache after a write passed through"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestShim(t, testShimOptions{allowPush: true, tagErr: tc.tagErr})
			c := ts.client(t)
			req, err := http.NewRequestWithContext(t.Context(), "POST", "https://registry.test:5000/v2/team/app/blobs/uploads/", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "https://registry.test:5000/v2/team/app/blobs/uploads/123") {
				t.Fatalf("Location %q does not point back at the registry host", loc)
			}
			body := strings.Repeat("x", 1<<20)
			req, err = http.NewRequestWithContext(t.Context(), "PUT", "https://registry.test:5000/v2/team/app/manifests/v2", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err = c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated || !strings.Contains(ts.rec.last(), fmt.Sprintf("body=%d", len(body))) {
				t.Fatalf("PUT: %d, upstream saw %q", resp.StatusCode, ts.rec.last())
			}
			if got := ts.purged.list(); len(got) != 1 || got[0] != "tag registry.test:5000 team/app v2" {
				t.Fatalf("tag records dropped: %q", got)
			}
			logs := ts.logs.String()
			if tc.wantLog != "" && (!strings.Contains(logs, tc.wantLog) || !strings.Contains(logs, tc.tagErr.Error())) {
				t.Fatalf("log lacks %q with the cause:\n%s", tc.wantLog, logs)
			}
		})
	}
}

func TestClientsVanishingMidHandshakeLeakNothing(t *testing.T) {
	// Not parallel: it compares the whole process's goroutines and
	// descriptors before and after.
	ts := newTestShim(t, testShimOptions{})
	// Warm up: one full request, so lazily started goroutines exist.
	c := ts.client(t)
	req, err := http.NewRequestWithContext(t.Context(), "GET", "https://quay.io/v2/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.CloseIdleConnections()
	baseG, baseFD := goleak.IgnoreCurrent(), countFDs(t)
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
			hello := &firstWrite{Conn: conn, wrote: make(chan struct{})}
			tc := tls.Client(hello, &tls.Config{ServerName: "quay.io", RootCAs: ts.pool})
			done := make(chan struct{})
			go func() { defer close(done); tc.Handshake() }()
			<-hello.wrote
			conn.Close()
			<-done
		}
		conn.Close()
	}
	// Every goroutine the connections started ends (goleak retries while
	// they wind down), and with them their descriptors.
	goleak.VerifyNone(t, baseG)
	if fd := countFDs(t); fd > baseFD+2 {
		t.Fatalf("leak: %d descriptors open, %d before", fd, baseFD)
	}
}

// firstWrite closes wrote once the first write (a ClientHello) is on the
// wire.
type firstWrite struct {
	net.Conn
	wrote chan struct{}
	once  sync.Once
}

func (f *firstWrite) Write(p []byte) (int, error) {
	n, err := f.Conn.Write(p)
	f.once.Do(func() { close(f.wrote) })
	return n, err
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestPushWithOwnAuth(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, auth, want string
		status           int
	}{
		{"without credentials the shim refuses", "", "", http.StatusMethodNotAllowed},
		{"with the client's own credentials it goes upstream", "Bearer mine", "upstream POST", http.StatusAccepted},
	}
	ts := newTestShim(t, testShimOptions{ownAuth: true})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), "POST", "https://quay.io/v2/org/app/blobs/uploads/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := ts.client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := ts.rec.last(); !strings.HasPrefix(got, tc.want) || (tc.want == "" && got != "") || resp.StatusCode != tc.status {
				t.Fatalf("%d, reached %q; want %d, %q", resp.StatusCode, got, tc.status, tc.want)
			}
		})
	}
}

// TestWritesPurgeWhatTheyChanged: each write the registry accepted tells
// the Purger what it changed, before the client has its answer: a
// manifest PUT by tag the tag, a manifest DELETE by digest the manifest, by
// tag the tag, a blob DELETE the blob. A manifest PUT by digest, a write
// the registry refused, an upload session and a POST tell it nothing.
func TestWritesPurgeWhatTheyChanged(t *testing.T) {
	t.Parallel()
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cases := []struct {
		method, path string
		want         string
	}{
		{"PUT", "/v2/team/app/manifests/v2", "tag registry.test:5000 team/app v2"},
		{"PUT", "/v2/team/app/manifests/" + d, ""},
		{"PUT", "/v2/team/app/manifests/referrer", "tag registry.test:5000 team/app referrer|referrers registry.test:5000 team/app " + testSubject},
		{"DELETE", "/v2/team/app/manifests/" + d, "manifest registry.test:5000 team/app " + d},
		{"DELETE", "/v2/team/app/manifests/v2", "tag registry.test:5000 team/app v2"},
		{"DELETE", "/v2/team/app/blobs/" + d, "blob registry.test:5000 team/app " + d},
		{"DELETE", "/v2/refused/app/blobs/" + d, ""},
		{"DELETE", "/v2/refused/app/manifests/" + d, ""},
		{"DELETE", "/v2/team/app/blobs/uploads/123", ""},
		{"DELETE", "/v2/team/app/blobs/sha256:nothex", ""},
		{"POST", "/v2/team/app/blobs/uploads/", ""},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			t.Parallel()
			ts := newTestShim(t, testShimOptions{allowPush: true})
			req, err := http.NewRequestWithContext(t.Context(), tc.method, "https://registry.test:5000"+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ts.client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := ts.rec.last(); !strings.HasPrefix(got, "upstream "+tc.method+" "+tc.path) {
				t.Fatalf("upstream saw %q", got)
			}
			// The client has its answer: the purge is already done.
			got := ts.purged.list()
			if strings.Join(got, "|") != tc.want {
				t.Fatalf("purged %q, want %q", got, tc.want)
			}
		})
	}
}

// eventWriter is a ResponseWriter that records the order of what happens
// to it.
type eventWriter struct {
	http.ResponseWriter
	events *[]string
}

func (e eventWriter) WriteHeader(code int) {
	*e.events = append(*e.events, fmt.Sprintf("header %d", code))
}

func (e eventWriter) Write(p []byte) (int, error) {
	*e.events = append(*e.events, "body")
	return len(p), nil
}

// TestAnswerWaitsForThePurge: the purge of a write runs with the final
// status before the client gets any of the answer, informational answers
// (100 Continue) pass before it, and it runs once; a body without a header
// is a 200.
func TestAnswerWaitsForThePurge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		write func(w http.ResponseWriter)
		want  string
	}{
		{"header then body", func(w http.ResponseWriter) { w.WriteHeader(202); w.Write([]byte("x")) }, "purge 202,header 202,body"},
		{"1xx first", func(w http.ResponseWriter) { w.WriteHeader(100); w.WriteHeader(201) }, "header 100,purge 201,header 201"},
		{"body only", func(w http.ResponseWriter) { w.Write([]byte("x")); w.Write([]byte("y")) }, "purge 200,header 200,body,body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var events []string
			tc.write(&answerHook{ResponseWriter: eventWriter{events: &events}, before: func(status int) {
				events = append(events, fmt.Sprintf("purge %d", status))
			}})
			if got := strings.Join(events, ","); got != tc.want {
				t.Fatalf("events %s, want %s", got, tc.want)
			}
		})
	}
}
