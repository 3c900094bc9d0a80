package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/opencontainers/go-digest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// hostileEnv is the whole proxy, in process, in front of a private
// registry (token auth, the proxy's robot credentials, readable by the
// proxy user alice only) and a public one, both with an image already in
// the cache.
type hostileEnv struct {
	addr     string
	pool     *x509.CertPool
	cacheDir string
	// slowAddr is a second proxy with a short header timeout, for slow
	// clients.
	slowAddr string
	slowPool *x509.CertPool
	logs     *testutil.SyncBuffer

	private, public   *testreg.Registry
	privImg, pubImg   testreg.Image
	privPort, pubPort string
}

// The header timeouts of the hostile proxies: generous on the one that
// must read (and refuse) 1 MiB headers on a busy machine, short on the
// one slow clients try, so that they are dropped within the test (the
// tests assert the drop, not its time).
const (
	hostileHeaderTimeout = "30s"
	slowHeaderTimeout    = "1s"
)

const hostileConfig = `
dockerHub: false
clientAuth:
  htpasswd: %s
client:
  headerTimeout: %s
registries:
  - host: private.test
    endpoint: %s
    caFile: %s
    username: robot
    password: robot-secret-1
  - host: public.test
    endpoint: %s
    caFile: %s
`

func startHostile(t *testing.T) *hostileEnv {
	t.Helper()
	e := &hostileEnv{
		private: testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken, Username: "robot", Password: "robot-secret-1"}),
		public:  testreg.Start(t, testreg.Options{TLS: true}),
	}
	e.privImg = e.private.PushImage(t, "team/secret", "v1", testreg.RandomLayer(t, 20_000))
	e.pubImg = e.public.PushImage(t, "lib/open", "v1", testreg.RandomLayer(t, 50_000))
	_, e.privPort, _ = net.SplitHostPort(e.private.Host)
	_, e.pubPort, _ = net.SplitHostPort(e.public.Host)
	users := htpasswdFile(t, map[string]string{"alice": "alice-pw-3"})
	config := func(timeout string) string {
		return fmt.Sprintf(hostileConfig, users, timeout, e.private.URL, e.private.CAFile, e.public.URL, e.public.CAFile)
	}
	dir := t.TempDir()
	e.cacheDir = filepath.Join(dir, "cache")
	e.addr, e.logs, _, _, e.pool = runProxyFull(t, dir, config(hostileHeaderTimeout))
	e.slowAddr, _, _, _, e.slowPool = runProxyFull(t, t.TempDir(), config(slowHeaderTimeout))
	e.warm(t)
	return e
}

// warm puts both images in the cache: manifests by tag and by digest,
// every blob.
func (e *hostileEnv) warm(t *testing.T) {
	t.Helper()
	alice := []string{"Authorization", basicAuth("alice", "alice-pw-3")}
	for _, w := range []struct {
		ns  string
		img testreg.Image
	}{{"private.test", e.privImg}, {"public.test", e.pubImg}} {
		base := "/v2/" + w.ns + "/" + w.img.Repo
		paths := []string{base + "/manifests/v1", base + "/manifests/" + w.img.ManifestDigest.String(), base + "/blobs/" + w.img.Config.Digest.String()}
		for _, l := range w.img.Layers {
			paths = append(paths, base+"/blobs/"+l.Digest.String())
		}
		for _, p := range paths {
			r := e.do(t, front, "GET", p, append([]string{"Accept", w.img.MediaType}, alice...)...)
			if r.status != http.StatusOK {
				t.Fatalf("warming %s: %d %s", p, r.status, r.body)
			}
		}
	}
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// door is how a request reaches the proxy: its front listener (connect
// empty), or inside CONNECT connect with TLS for sni.
type door struct {
	connect, sni string
	proxyAuth    string // Proxy-Authorization on the CONNECT
}

var front = door{}

func shimDoor(connect, sni string) door { return door{connect: connect, sni: sni} }

// answer is what came back: the status (0 when there was no HTTP answer,
// err says why), the headers and the body.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

// do sends one request written as is — method, request target, headers
// (Host defaults to the proxy's address or the SNI) — through d and reads
// the answer. A refused CONNECT is the answer.
func (e *hostileEnv) do(t *testing.T, d door, method, target string, hdr ...string) answer {
	t.Helper()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Bounds a test that goes wrong; no assertion depends on it.
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	var rw io.ReadWriter = conn
	br := bufio.NewReader(conn)
	host := e.addr
	if d.connect != "" {
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", d.connect, d.connect)
		if d.proxyAuth != "" {
			fmt.Fprintf(conn, "Proxy-Authorization: %s\r\n", d.proxyAuth)
		}
		io.WriteString(conn, "\r\n")
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			return answer{err: fmt.Errorf("CONNECT: %w", err)}
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return answer{status: resp.StatusCode, header: resp.Header, body: b}
		}
		tc := tls.Client(&prefixConn{Conn: conn, r: br}, &tls.Config{ServerName: d.sni, RootCAs: e.pool, NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			return answer{err: fmt.Errorf("TLS: %w", err)}
		}
		rw, br, host = tc, bufio.NewReader(tc), d.sni
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\n", method, target)
	if !slices.Contains(hdr, "Host") {
		fmt.Fprintf(&req, "Host: %s\r\n", host)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&req, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	req.WriteString("Content-Length: 0\r\nConnection: close\r\n\r\n")
	// Written while the answer is read: a proxy that refuses a huge
	// header answers before it has read all of it.
	wrote := make(chan error, 1)
	go func() {
		_, err := rw.Write(req.Bytes())
		wrote <- err
	}()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		conn.Close()
		return answer{err: errors.Join(err, <-wrote)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return answer{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

// prefixConn reads first what a bufio.Reader already holds.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}

// storage lists the cache's files with their sizes, but for the index
// database (its pages change with every access time).
func (e *hostileEnv) storage(t *testing.T) map[string]int64 {
	t.Helper()
	files := map[string]int64{}
	err := filepath.WalkDir(e.cacheDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(e.cacheDir, p)
		if strings.HasSuffix(rel, ".db") || strings.HasSuffix(rel, ".lock") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files[rel] = info.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func (e *hostileEnv) upstreamRequests() int {
	return len(e.private.Requests()) + len(e.public.Requests())
}

// hostileCase is one request of a hostile client and what the proxy must
// answer: the status (0: no HTTP answer at all, e.g. a refused TLS
// handshake), the OCI error code when the answer is an OCI error, and
// whether upstream may see it (by default neither registry does). The
// cache is never changed by one.
type hostileCase struct {
	name   string
	door   door
	method string
	target string
	hdr    []string
	status int
	code   string
	// upstream: the request may reach a registry (an unknown digest or
	// repository is asked there).
	upstream bool
	check    func(t *testing.T, a answer)
}

// TestHostileClients: requests no registry client sends, through every
// door of the real proxy (its listener, CONNECT with TLS inside,
// absolute-form), each answered with the right status and OCI error, none
// changing the cache, none reaching a registry unless it must; slow
// clients are dropped, HTTP/2 resets contained, and at the end no
// goroutine or descriptor is left behind.
func TestHostileClients(t *testing.T) {
	// Not parallel: it compares the process's goroutines and descriptors
	// before and after.
	e := startHostile(t)
	baseG, baseFD := settle(t, -1, -1)
	cases := hostileCases(e)
	if len(cases) < 60 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, ups := e.storage(t), e.upstreamRequests()
			a := e.do(t, tc.door, tc.method, tc.target, tc.hdr...)
			checkAnswer(t, tc, a)
			if after := e.storage(t); !mapsEqual(before, after) {
				t.Errorf("the cache changed: %v → %v", before, after)
			}
			if n := e.upstreamRequests(); n != ups && !tc.upstream {
				t.Errorf("%d requests reached a registry", n-ups)
			}
		})
	}
	t.Run("slow clients are dropped", func(t *testing.T) { slowClients(t, e) })
	t.Run("HTTP/2 rapid reset is contained", func(t *testing.T) { rapidReset(t, e) })
	// The proxy still answers, and nothing is left behind.
	if a := e.do(t, front, "GET", "/v2/public.test/lib/open/blobs/"+e.pubImg.Layers[0].Digest.String()); a.status != 200 || !bytes.Equal(a.body, e.pubImg.Layers[0].Bytes) {
		t.Fatalf("after the abuse: %d %v", a.status, a.err)
	}
	settle(t, baseG, baseFD)
}

func checkAnswer(t *testing.T, tc hostileCase, a answer) {
	t.Helper()
	if a.status != tc.status {
		t.Fatalf("%s %s via %+v: status %d (%v), want %d\n%.300s", tc.method, tc.target, tc.door, a.status, a.err, tc.status, a.body)
	}
	if tc.code != "" {
		want := fmt.Sprintf(`"code":%q`, tc.code)
		if !bytes.Contains(a.body, []byte(want)) || a.header.Get("Content-Type") != "application/json" {
			t.Fatalf("answer %s (%s), want an OCI error %s", a.body, a.header.Get("Content-Type"), tc.code)
		}
	}
	if tc.check != nil {
		tc.check(t, a)
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// settle waits (bounded) until the process's goroutines and descriptors
// are back to at most baseG and baseFD plus a small allowance (idle
// connections of the proxy's upstream clients come and go) and returns
// them; with negative bases it waits until they stop changing.
func settle(t *testing.T, baseG, baseFD int) (int, int) {
	t.Helper()
	const slack = 8
	deadline := time.Now().Add(30 * time.Second)
	prevG, prevFD := -1, -1
	for {
		runtime.GC()
		g, fd := runtime.NumGoroutine(), countOpenFDs(t)
		switch {
		case baseG < 0 && g == prevG && fd == prevFD:
			return g, fd
		case baseG >= 0 && g <= baseG+slack && fd <= baseFD+slack:
			return g, fd
		case time.Now().After(deadline):
			if baseG >= 0 {
				buf := make([]byte, 1<<20)
				t.Fatalf("goroutines %d (before %d), descriptors %d (before %d)\n%s", g, baseG, fd, baseFD, buf[:runtime.Stack(buf, true)])
			}
			return g, fd
		}
		prevG, prevFD = g, fd
		time.Sleep(200 * time.Millisecond)
	}
}

func countOpenFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// isPlain431 checks the answer to a header beyond the server's limit.
func isPlain431(t *testing.T, a answer) {
	t.Helper()
	if !bytes.Contains(a.body, []byte("Request Header Fields Too Large")) {
		t.Fatalf("431 body %q", a.body)
	}
}

func hostileCases(e *hostileEnv) []hostileCase {
	var cases []hostileCase
	for _, group := range [][]hostileCase{privateDoors(e), pathCases(e), digestCases(e), rangeCases(e), methodCases(e), connectCases(e), uncleanShimPaths(e), headerCases(e)} {
		cases = append(cases, group...)
	}
	return cases
}

// privateDoors: the cached private image through every door, without
// credentials or with wrong ones.
func privateDoors(e *hostileEnv) []hostileCase {
	img := e.privImg
	m := "/v2/private.test/team/secret/manifests/v1"
	blob := "/v2/private.test/team/secret/blobs/" + img.Layers[0].Digest.String()
	accept := []string{"Accept", img.MediaType}
	sh := shimDoor("private.test:443", "private.test")
	return []hostileCase{
		{name: "private manifest", door: front, method: "GET", target: m, hdr: accept, status: 401, code: "UNAUTHORIZED"},
		{name: "private manifest HEAD", door: front, method: "HEAD", target: m, hdr: accept, status: 401},
		{name: "private manifest by digest", door: front, method: "GET", target: "/v2/private.test/team/secret/manifests/" + img.ManifestDigest.String(), hdr: accept, status: 401, code: "UNAUTHORIZED"},
		{name: "private manifest via ns", door: front, method: "GET", target: "/v2/team/secret/manifests/v1?ns=private.test", hdr: accept, status: 401, code: "UNAUTHORIZED"},
		{name: "private blob", door: front, method: "GET", target: blob, status: 401, code: "UNAUTHORIZED"},
		{name: "private blob range", door: front, method: "GET", target: blob, hdr: []string{"Range", "bytes=0-9"}, status: 401, code: "UNAUTHORIZED"},
		{name: "private blob If-None-Match", door: front, method: "GET", target: blob, hdr: []string{"If-None-Match", `"` + img.Layers[0].Digest.String() + `"`}, status: 401, code: "UNAUTHORIZED"},
		{name: "private tags", door: front, method: "GET", target: "/v2/private.test/team/secret/tags/list", status: 401, code: "UNAUTHORIZED"},
		{name: "private referrers", door: front, method: "GET", target: "/v2/private.test/team/secret/referrers/" + img.ManifestDigest.String(), status: 401, code: "UNAUTHORIZED"},
		{name: "private blob wrong password", door: front, method: "GET", target: blob, hdr: []string{"Authorization", basicAuth("alice", "nope")}, status: 401, code: "UNAUTHORIZED"},
		{name: "private blob the registry's robot credentials", door: front, method: "GET", target: blob, hdr: []string{"Authorization", basicAuth("robot", "robot-secret-1")}, status: 401, code: "UNAUTHORIZED"},
		{name: "private blob encoded slash", door: front, method: "GET", target: "/v2/private.test%2fteam/secret/blobs/" + img.Layers[0].Digest.String(), status: 401, code: "UNAUTHORIZED"},
		{name: "private absolute-form", door: front, method: "GET", target: "http://private.test/v2/team/secret/manifests/v1", hdr: accept, status: 401, code: "UNAUTHORIZED"},
		{name: "private absolute-form blob", door: front, method: "GET", target: "http://private.test:0080/v2/team/secret/blobs/" + img.Layers[0].Digest.String(), status: 401, code: "UNAUTHORIZED"},
		{name: "private via CONNECT", door: sh, method: "GET", target: "/v2/team/secret/manifests/v1", hdr: accept, status: 401, code: "UNAUTHORIZED"},
		{name: "private blob via CONNECT", door: sh, method: "GET", target: "/v2/team/secret/blobs/" + img.Layers[0].Digest.String(), status: 401, code: "UNAUTHORIZED"},
		{name: "private via CONNECT odd spelling", door: shimDoor("PRIVATE.TEST.:0443", "private.test"), method: "GET", target: "/v2/team/secret/manifests/v1", hdr: accept, status: 401, code: "UNAUTHORIZED"},
		{name: "private via CONNECT to its endpoint address", door: shimDoor("127.0.0.1:"+e.privPort, "127.0.0.1"), method: "GET", target: "/v2/team/secret/blobs/" + img.Layers[0].Digest.String(), status: 401, code: "UNAUTHORIZED"},
		{name: "private via CONNECT to its mapped endpoint address", door: shimDoor("[::ffff:127.0.0.1]:"+e.privPort, "127.0.0.1"), method: "GET", target: "/v2/team/secret/manifests/v1", hdr: accept, status: 401, code: "UNAUTHORIZED"},
		{name: "private via CONNECT to the public registry with its Host", door: shimDoor("public.test:443", "public.test"), method: "GET", target: "/v2/team/secret/blobs/" + img.Layers[0].Digest.String(), hdr: []string{"Host", "private.test"}, status: 404, code: "BLOB_UNKNOWN", upstream: true},
		{name: "private SNI inside CONNECT to the public registry", door: shimDoor("public.test:443", "private.test"), method: "GET", target: "/v2/team/secret/manifests/v1", status: 0},
		{name: "private via CONNECT wrong proxy password", door: door{connect: "private.test:443", sni: "private.test", proxyAuth: basicAuth("alice", "nope")}, method: "GET", target: "/v2/", status: 407},
		{name: "private via traversal from the public namespace", door: front, method: "GET", target: "/v2/public.test/../private.test/team/secret/manifests/v1", status: 307,
			check: func(t *testing.T, a answer) {
				if loc := a.header.Get("Location"); loc != "/v2/private.test/team/secret/manifests/v1" {
					t.Fatalf("Location %q", loc)
				}
			}},
	}
}

// pathCases: traversal, encodings and odd names on the front listener.
func pathCases(e *hostileEnv) []hostileCase {
	_ = e
	man := "/manifests/" + e.pubImg.ManifestDigest.String()
	return []hostileCase{
		{name: "dot-dot in the name", door: front, method: "GET", target: "/v2/public.test/lib/../lib/open" + man, status: 307},
		{name: "encoded dot-dot in the name", door: front, method: "GET", target: "/v2/public.test/lib/%2e%2e/open" + man, status: 404, code: "NAME_INVALID"},
		{name: "encoded slash in the name", door: front, method: "GET", target: "/v2/public.test/lib%2fopen" + man, status: 200},
		{name: "double-encoded dot-dot", door: front, method: "GET", target: "/v2/public.test/lib/%252e%252e/open" + man, status: 404, code: "NAME_INVALID"},
		{name: "backslash in the name", door: front, method: "GET", target: `/v2/public.test/lib\open` + man, status: 404, code: "NAME_INVALID"},
		{name: "NUL in the name", door: front, method: "GET", target: "/v2/public.test/lib/open%00" + man, status: 404, code: "NAME_INVALID"},
		{name: "upper case name", door: front, method: "GET", target: "/v2/public.test/LIB/open" + man, status: 404, code: "NAME_INVALID"},
		{name: "overlong name", door: front, method: "GET", target: "/v2/public.test/" + strings.Repeat("a", 300) + man, status: 404, code: "NAME_INVALID"},
		{name: "overlong tag", door: front, method: "GET", target: "/v2/public.test/lib/open/manifests/" + strings.Repeat("t", 200), status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "traversal tag", door: front, method: "GET", target: "/v2/public.test/lib/open/manifests/..%2f..%2fx", status: 404, code: "UNSUPPORTED"},
		{name: "unknown registry", door: front, method: "GET", target: "/v2/unknown.test/lib/open" + man, status: 403, code: "DENIED"},
		{name: "ns naming a loopback address", door: front, method: "GET", target: "/v2/lib/open" + man + "?ns=127.0.0.1:" + e.pubPort, status: 403, code: "DENIED"},
		{name: "ns with traversal", door: front, method: "GET", target: "/v2/lib/open" + man + "?ns=../private.test", status: 400, code: "NAME_INVALID"},
		{name: "not an API path", door: front, method: "GET", target: "/v3/public.test/lib/open" + man, status: 404, code: "UNSUPPORTED"},
		{name: "asterisk", door: front, method: "OPTIONS", target: "*", status: 200}, // net/http answers it
	}
}

// digestCases: odd digests on the blob and manifest paths.
func digestCases(e *hostileEnv) []hostileCase {
	hex := e.pubImg.Layers[0].Digest.Encoded()
	b := "/v2/public.test/lib/open/blobs/"
	unknown512 := digest.SHA512.FromString("nowhere")
	return []hostileCase{
		{name: "upper-case hex", door: front, method: "GET", target: b + "sha256:" + strings.ToUpper(hex), status: 400, code: "DIGEST_INVALID"},
		{name: "upper-case algorithm", door: front, method: "GET", target: b + "SHA256:" + hex, status: 400, code: "DIGEST_INVALID"},
		{name: "short hex", door: front, method: "GET", target: b + "sha256:" + hex[:63], status: 400, code: "DIGEST_INVALID"},
		{name: "long hex", door: front, method: "GET", target: b + "sha256:" + hex + "0", status: 400, code: "DIGEST_INVALID"},
		{name: "unknown algorithm", door: front, method: "GET", target: b + "md5:0123456789abcdef0123456789abcdef", status: 400, code: "DIGEST_INVALID"},
		{name: "empty hex", door: front, method: "GET", target: b + "sha256:", status: 400, code: "DIGEST_INVALID"},
		{name: "no algorithm", door: front, method: "GET", target: b + hex, status: 400, code: "DIGEST_INVALID"},
		{name: "traversal digest", door: front, method: "GET", target: b + "sha256:..%2f..%2f..%2fetc%2fpasswd", status: 404, code: "UNSUPPORTED"},
		{name: "sha512 unknown", door: front, method: "GET", target: b + unknown512.String(), status: 404, code: "BLOB_UNKNOWN", upstream: true},
		{name: "sha256 unknown", door: front, method: "GET", target: b + digest.FromString("nowhere").String(), status: 404, code: "BLOB_UNKNOWN", upstream: true},
		{name: "upper-case manifest digest", door: front, method: "GET", target: "/v2/public.test/lib/open/manifests/sha256:" + strings.ToUpper(e.pubImg.ManifestDigest.Encoded()), status: 400, code: "DIGEST_INVALID"},
		{name: "referrers of no digest", door: front, method: "GET", target: "/v2/public.test/lib/open/referrers/latest", status: 400, code: "DIGEST_INVALID"},
	}
}

// rangeCases: ranges on a cached blob: one range is served, many,
// overlapping or overlong ones get the blob once, a header beyond the
// server's limit is 431.
func rangeCases(e *hostileEnv) []hostileCase {
	l := e.pubImg.Layers[0]
	p := "/v2/public.test/lib/open/blobs/" + l.Digest.String()
	whole := func(t *testing.T, a answer) {
		if !bytes.Equal(a.body, l.Bytes) || a.header.Get("Content-Range") != "" {
			t.Fatalf("%d bytes, Content-Range %q: want the blob once", len(a.body), a.header.Get("Content-Range"))
		}
	}
	many := "bytes=0-9" + strings.Repeat(",0-9", 78_999)
	return []hostileCase{
		{name: "one range", door: front, method: "GET", target: p, hdr: []string{"Range", "bytes=10-19"}, status: 206, check: func(t *testing.T, a answer) {
			if !bytes.Equal(a.body, l.Bytes[10:20]) {
				t.Fatalf("range body %d bytes", len(a.body))
			}
		}},
		{name: "79,000 ranges", door: front, method: "GET", target: p, hdr: []string{"Range", many}, status: 200, check: whole},
		{name: "79,000 ranges via CONNECT", door: shimDoor("public.test:443", "public.test"), method: "GET", target: "/v2/lib/open/blobs/" + l.Digest.String(), hdr: []string{"Range", many}, status: 200, check: whole},
		{name: "overlapping ranges", door: front, method: "GET", target: p, hdr: []string{"Range", "bytes=0-,0-,0-,0-,0-"}, status: 200, check: whole},
		{name: "overlong range", door: front, method: "GET", target: p, hdr: []string{"Range", "bytes=" + strings.Repeat("0", 500) + "1-2"}, status: 200, check: whole},
		{name: "range past the end", door: front, method: "GET", target: p, hdr: []string{"Range", fmt.Sprintf("bytes=%d-", l.Size)}, status: 416, code: "RANGE_INVALID"},
		{name: "empty suffix range", door: front, method: "GET", target: p, hdr: []string{"Range", "bytes=-0"}, status: 416, code: "RANGE_INVALID"},
		{name: "range header beyond the limit", door: front, method: "GET", target: p, hdr: []string{"Range", "bytes=0-1" + strings.Repeat(",0-1", 300_000)}, status: 431, check: isPlain431},
		{name: "1 MiB If-None-Match", door: front, method: "GET", target: p, hdr: []string{"If-None-Match", strings.Repeat(`"x",`, 250_000)}, status: 200, check: whole},
		{name: "1 MiB Accept", door: front, method: "GET", target: "/v2/public.test/lib/open/manifests/" + e.pubImg.ManifestDigest.String(), hdr: []string{"Accept", strings.Repeat(",", 1_000_000)}, status: 200},
	}
}

// methodCases: writes with pushes off, on the mirror's paths and
// through the shim.
func methodCases(e *hostileEnv) []hostileCase {
	_ = e
	sh := shimDoor("public.test:443", "public.test")
	var cases []hostileCase
	for _, m := range []string{"PUT", "POST", "DELETE", "PATCH"} {
		cases = append(cases,
			hostileCase{name: m + " on the mirror", door: front, method: m, target: "/v2/public.test/lib/open/manifests/v1", status: 405, code: "UNSUPPORTED"},
			hostileCase{name: m + " through the shim", door: sh, method: m, target: "/v2/lib/open/blobs/uploads/", status: 405, code: "UNSUPPORTED"},
		)
	}
	return append(cases,
		hostileCase{name: "TRACE on the mirror", door: front, method: "TRACE", target: "/v2/", status: 405, code: "UNSUPPORTED"},
		hostileCase{name: "DELETE in absolute form", door: front, method: "DELETE", target: "http://public.test/v2/lib/open/manifests/v1", status: 405, code: "UNSUPPORTED"},
	)
}

// connectCases: CONNECT targets in every spelling.
func connectCases(e *hostileEnv) []hostileCase {
	_, proxyPort, _ := net.SplitHostPort(e.addr)
	man := "/v2/lib/open/manifests/" + e.pubImg.ManifestDigest.String()
	var cases []hostileCase
	for _, c := range []struct {
		target string
		status int
	}{
		{"127.0.0.1:443", 403}, {"127.0.0.1:" + proxyPort, 403}, {"127.1:443", 400}, {"0x7f000001:443", 400},
		{"0177.0.0.1:443", 400}, {"2130706433:443", 400}, {"[::1]:443", 403}, {"[::ffff:127.0.0.1]:443", 403},
		{"[::]:443", 403}, {"0.0.0.0:443", 403}, {"169.254.169.254:443", 403}, {"[::ffff:169.254.169.254]:443", 403},
		{"[fd00:ec2::254]:443", 403}, {"100.100.100.200:443", 403}, {"metadata.google.internal:443", 403},
		{"Metadata.Google.Internal.:443", 403}, {"metadata:443", 403}, {"localhost:443", 403}, {"app.localhost.:443", 403},
		{"public.test:65536", 400}, {"public.test:0", 400}, {"public.test:", 400}, {"public.test", 400}, {":443", 400},
		{"user@public.test:443", 400}, {"[fe80::1%25lo]:443", 400}, {"example.com:22", 403},
	} {
		cases = append(cases, hostileCase{name: "CONNECT " + c.target, door: shimDoor(c.target, "x"), method: "GET", target: "/", status: c.status})
	}
	for _, c := range []struct{ target, sni string }{
		{"public.test:0443", "public.test"}, {"PUBLIC.TEST.:443", "public.test"}, {"127.0.0.1:" + e.pubPort, "127.0.0.1"},
		{"127.0.0.1:" + e.pubPort, "public.test"}, {"[::ffff:127.0.0.1]:00" + e.pubPort, "127.0.0.1"},
	} {
		cases = append(cases, hostileCase{name: "CONNECT " + c.target + " is public.test", door: shimDoor(c.target, c.sni), method: "GET", target: man, status: 200})
	}
	return append(cases, hostileCase{name: "CONNECT empty target", door: shimDoor(" ", "x"), method: "GET", target: "/", status: 400})
}

// uncleanShimPaths: paths that are not canonical inside an intercepted
// connection, for reads and writes.
func uncleanShimPaths(e *hostileEnv) []hostileCase {
	_ = e
	sh := shimDoor("public.test:443", "public.test")
	var cases []hostileCase
	for _, p := range []string{"//v2/lib/open/manifests/v1", "/./v2/lib/open/manifests/v1", "/x/../v2/lib/open/manifests/v1", "/%2e/v2/lib/open/manifests/v1",
		"/v2%2flib/open/manifests/v1", "/v2/lib/open/manifests/v1%5c", `/v2\lib/open/manifests/v1`, "/v2/lib/open/manifests/v1%00"} {
		for _, m := range []string{"GET", "DELETE"} {
			cases = append(cases, hostileCase{name: m + " " + p + " through the shim", door: sh, method: m, target: p, status: 400, code: "UNSUPPORTED"})
		}
	}
	return cases
}

// headerCases: headers beyond the servers' 1 MiB limit, on each listener.
func headerCases(e *hostileEnv) []hostileCase {
	_ = e
	huge := []string{"X-Padding", strings.Repeat("a", 2<<20)}
	return []hostileCase{
		{name: "huge header", door: front, method: "GET", target: "/v2/", hdr: huge, status: 431, check: isPlain431},
		{name: "huge header through the shim", door: shimDoor("public.test:443", "public.test"), method: "GET", target: "/v2/", hdr: huge, status: 431, check: isPlain431},
		{name: "many headers", door: front, method: "GET", target: "/v2/", hdr: slices.Repeat([]string{"X-A", strings.Repeat("b", 50)}, 20_000), status: 431, check: isPlain431},
	}
}

// slowClients: a request header, a CONNECT header and an intercepted
// connection that trickle or say nothing are closed by the proxy (the
// header timeout), while the client is still sending.
func slowClients(t *testing.T, e *hostileEnv) {
	for _, tc := range []struct {
		name  string
		start func(conn net.Conn) io.Writer
	}{
		{"request header", func(conn net.Conn) io.Writer {
			io.WriteString(conn, "GET /v2/ HTTP/1.1\r\nHost: x\r\n")
			return conn
		}},
		{"CONNECT header", func(conn net.Conn) io.Writer {
			io.WriteString(conn, "CONNECT public.test:443 HTTP/1.1\r\n")
			return conn
		}},
		{"silent TLS client inside CONNECT", func(conn net.Conn) io.Writer {
			io.WriteString(conn, "CONNECT public.test:443 HTTP/1.1\r\nHost: public.test:443\r\n\r\n")
			return io.Discard
		}},
		{"request header inside CONNECT", func(conn net.Conn) io.Writer {
			io.WriteString(conn, "CONNECT public.test:443 HTTP/1.1\r\nHost: public.test:443\r\n\r\n")
			br := bufio.NewReader(conn)
			if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %v", err)
			}
			tc := tls.Client(&prefixConn{Conn: conn, r: br}, &tls.Config{ServerName: "public.test", RootCAs: e.slowPool, NextProtos: []string{"http/1.1"}})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			io.WriteString(tc, "GET /v2/ HTTP/1.1\r\nHost: public.test\r\n")
			return tc
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", e.slowAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			w := tc.start(conn)
			closed := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, conn)
				closed <- err
			}()
			// One header byte every 100 ms for as long as the proxy
			// keeps the connection: it must end it first.
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case err := <-closed:
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatal("the proxy kept a trickling client for 60 s")
					}
					return
				case <-tick.C:
					w.Write([]byte{"X-Slow: 1\r\n"[i%11]})
				}
			}
		})
	}
}

// rapidReset opens HTTP/2 inside an intercepted connection and sends
// thousands of requests each cancelled at once (CVE-2023-44487), then one
// more it lets run: the proxy either still answers it or ends the
// connection (GOAWAY), and no registry sees any of them (the manifest is
// cached). The goroutines and descriptors are checked when the test
// ends.
func rapidReset(t *testing.T, e *hostileEnv) {
	ups, before := e.upstreamRequests(), e.storage(t)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	io.WriteString(conn, "CONNECT public.test:443 HTTP/1.1\r\nHost: public.test:443\r\n\r\n")
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v", err)
	}
	tc := tls.Client(&prefixConn{Conn: conn, r: br}, &tls.Config{ServerName: "public.test", RootCAs: e.pool, NextProtos: []string{"h2"}})
	if err := tc.Handshake(); err != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatalf("h2 handshake: %v, protocol %q", err, tc.ConnectionState().NegotiatedProtocol)
	}
	io.WriteString(tc, http2.ClientPreface)
	w := http2.NewFramer(tc, nil)
	w.WriteSettings()
	w.WriteSettingsAck()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "public.test"},
		{":path", "/v2/lib/open/manifests/" + e.pubImg.ManifestDigest.String()}, {"accept", e.pubImg.MediaType}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	const resets = 5000
	last := uint32(2*resets + 1)
	outcome := make(chan string, 1)
	go readH2(http2.NewFramer(nil, tc), last, outcome)
	for i := range uint32(resets) {
		id := 2*i + 1
		if w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}) != nil ||
			w.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break // the proxy closed the connection
		}
	}
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: last, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
	got := <-outcome
	if got != "200" && !strings.HasPrefix(got, "GOAWAY") && !strings.HasPrefix(got, "closed") {
		t.Fatalf("after %d reset streams: %s", resets, got)
	}
	t.Logf("after %d reset streams: %s", resets, got)
	tc.Close()
	if n := e.upstreamRequests(); n != ups {
		t.Errorf("%d requests reached a registry", n-ups)
	}
	if after := e.storage(t); !mapsEqual(before, after) {
		t.Errorf("the cache changed: %v → %v", before, after)
	}
}

// readH2 reads frames until the answer to stream last ("200"), a GOAWAY
// or the end of the connection, and reports which.
func readH2(r *http2.Framer, last uint32, outcome chan<- string) {
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := r.ReadFrame()
		if err != nil {
			outcome <- "closed: " + err.Error()
			return
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			outcome <- "GOAWAY " + f.ErrCode.String()
			return
		case *http2.HeadersFrame:
			fields, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				outcome <- "bad header block: " + err.Error()
				return
			}
			if f.StreamID != last {
				continue
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					outcome <- hf.Value
					return
				}
			}
		}
	}
}
