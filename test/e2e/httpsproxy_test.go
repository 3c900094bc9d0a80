//go:build e2e

package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// The tests in this file reach the upstreams the way HTTPS_PROXY users do:
// the client sends CONNECT <registry>:443 to the proxy, which terminates
// TLS with a certificate minted by its CA and serves the requests from its
// cache. Image names use hosts only the proxy can resolve
// (registry.test:<port>, docker.io mapped to a loopback registry), since
// Go clients never use a proxy for loopback literals.

// viaShim is what a client needs to pull through the proxy's CONNECT shim:
// the proxy address in HTTPS_PROXY and the proxy's CA in the form each
// client accepts.
type viaShim struct {
	p *proxy
	// CAFile is the proxy's CA certificate (PEM) as GET /ca.crt served it.
	CAFile string
	// CertDir holds ca.crt only: containers/image's --cert-dir layout
	// (skopeo --src-cert-dir, podman pull --cert-dir).
	CertDir string
	// Bundle is the system's CA bundle with the proxy's CA appended, for
	// Go clients' SSL_CERT_FILE.
	Bundle string
}

// newViaShim fetches the proxy's CA from /ca.crt and lays it out for the
// clients.
func newViaShim(t *testing.T, p *proxy) *viaShim {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Get(p.URL + "/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pemBytes, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(pemBytes), "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("GET /ca.crt: %d %q", resp.StatusCode, pemBytes)
	}
	dir := t.TempDir()
	s := &viaShim{p: p}
	s.CAFile = writeFile(t, dir, "ca.pem", string(pemBytes))
	s.CertDir = filepath.Dir(writeFile(t, dir, "certs/ca.crt", string(pemBytes)))
	system, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if len(system) > 0 && !strings.HasSuffix(string(system), "\n") {
		system = append(system, '\n')
	}
	s.Bundle = writeFile(t, dir, "bundle.pem", string(system)+string(pemBytes))
	return s
}

// env is the proxy environment of a client: HTTPS_PROXY only (cleanEnv
// has removed every other proxy variable, in either case, and NO_PROXY).
func (s *viaShim) env(extra ...string) []string {
	return append([]string{"HTTPS_PROXY=" + s.p.URL}, extra...)
}

// noMirrorsConf writes a registries.conf without mirrors or search
// registries, so containers/image clients go to each registry by name
// (through HTTPS_PROXY) and the machine's configuration plays no part.
func noMirrorsConf(t *testing.T) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "registries.conf", "unqualified-search-registries = []\n")
}

// skopeo copies docker://ref into a fresh OCI layout through the shim,
// trusting the proxy's CA with --src-cert-dir.
func (s *viaShim) skopeo(t *testing.T, ref, tag string) ociLayout {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	run(t, s.env(), "skopeo", "--registries-conf", noMirrorsConf(t), "--policy", policyJSON(t),
		"copy", "--retry-times", "0", "--src-no-creds", "--src-cert-dir", s.CertDir,
		"docker://"+ref, "oci:"+dir+":"+tag)
	return ociLayout{t: t, dir: dir}
}

// crane runs crane through the shim, trusting the proxy's CA through
// SSL_CERT_FILE, with an empty Docker config.
func (s *viaShim) crane(t *testing.T, args ...string) string {
	t.Helper()
	return strings.TrimSpace(run(t, s.env("SSL_CERT_FILE="+s.Bundle, "DOCKER_CONFIG="+t.TempDir()), "crane", args...))
}

// cranePullOCI pulls ref through the shim into a fresh OCI layout.
func (s *viaShim) cranePullOCI(t *testing.T, ref string) ociLayout {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	s.crane(t, "pull", "--format", "oci", ref, dir)
	return ociLayout{t: t, dir: dir}
}

// logLines returns the log lines after mark that contain every one of
// parts.
func (p *proxy) logLines(mark int, parts ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(p.LogSince(mark)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		ok := true
		for _, part := range parts {
			ok = ok && strings.Contains(l, part)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// waitLogLines waits (bounded) until the log after mark has at least one
// line containing every one of parts, and returns those lines. The access
// line of a CONNECT is written when its connection ends, which may be just
// after the client process has exited.
func (p *proxy) waitLogLines(t *testing.T, mark int, parts ...string) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if lines := p.logLines(mark, parts...); len(lines) > 0 {
			return lines
		}
		if time.Now().After(deadline) {
			t.Errorf("proxy log has no line with all of %q after the mark:\n%s", parts, tail(p.LogSince(mark), 40))
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logField returns the value of key= in a text-format log line (quotes
// kept), or "".
func logField(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if j := strings.Index(v[1:], `"`); j >= 0 {
			return v[:j+2]
		}
	}
	v, _, _ = strings.Cut(v, " ")
	return v
}

// connectField is how the access log writes a CONNECT target.
func connectField(target string) string {
	if strings.ContainsAny(target, ":") {
		return fmt.Sprintf("connect=%q", target)
	}
	return "connect=" + target
}

// requireShimBlobHits fails unless, after mark, the proxy answered each
// digest's blob GET inside an intercepted connection to target (the
// client's own path, not yet namespaced) from its cache.
func (p *proxy) requireShimBlobHits(t *testing.T, mark int, target string, digests ...string) {
	t.Helper()
	for _, d := range digests {
		p.waitLogLines(t, mark, "msg=request", "method=GET ", connectField(target), "/blobs/"+d, "cache=HIT")
	}
}

// requireUpstreamBlobGets fails unless reg saw exactly want blob GETs since
// its counts were reset.
func requireUpstreamBlobGets(t *testing.T, reg *testreg.Registry, want int, what string) {
	t.Helper()
	if n := reg.Count(http.MethodGet, testreg.KindBlob); n != int64(want) {
		t.Errorf("%s: upstream saw %d blob GETs, want %d: %v", what, n, want, reg.Requests())
	}
}

// TestShimSkopeo: skopeo copies an image of registry.test:<port> through
// HTTPS_PROXY (HTTP/1.1 inside the tunnel), trusting the proxy's CA with
// --src-cert-dir; the second copy is served from the cache.
func TestShimSkopeo(t *testing.T) {
	t.Parallel()
	requireTools(t, "skopeo")
	u := startUpstreams(t)
	p := startProxy(t, u)
	s := newViaShim(t, p)
	img := smallImage(t, u.Priv, "team/e2e-shim-skopeo", "v1")
	ref := u.PrivHost + "/team/e2e-shim-skopeo:v1"

	mark := p.Mark()
	l := s.skopeo(t, ref, "v1")
	l.requireImage(l.top("v1").Digest.String(), img)
	requireUpstreamBlobGets(t, u.Priv, len(imageBlobs(img)), "first copy")
	p.waitLogLines(t, mark, "method=CONNECT", connectField(u.PrivHost), "decision=intercept")
	if t.Failed() {
		t.FailNow()
	}

	u.resetCounts()
	mark = p.Mark()
	l = s.skopeo(t, ref, "v1")
	l.requireImage(l.top("v1").Digest.String(), img)
	requireNoUpstreamGets(t, u.Priv, "second copy")
	p.requireShimBlobHits(t, mark, u.PrivHost, imageBlobs(img)...)
}

// TestShimPodman: podman pulls an image of registry.test:<port> and one of
// docker.io through HTTPS_PROXY with pull --cert-dir; pulls into empty
// storage after that are served from the cache.
func TestShimPodman(t *testing.T) {
	t.Parallel()
	requireTools(t, "podman")
	u := startUpstreams(t)
	p := startProxy(t, u)
	s := newViaShim(t, p)
	priv := smallImage(t, u.Priv, "team/e2e-shim-podman", "v1")
	hub := smallImage(t, u.Hub, "library/e2e-shim-podman", "v2")
	privRef := u.PrivHost + "/team/e2e-shim-podman:v1"
	hubRef := "docker.io/library/e2e-shim-podman:v2"
	conf, policy := noMirrorsConf(t), policyJSON(t)
	newPm := func() *podman {
		pm := newPodman(t, conf, policy)
		pm.env = s.env()
		pm.pullArgs = []string{"--cert-dir", s.CertDir}
		return pm
	}

	mark := p.Mark()
	pm := newPm()
	pm.pull(privRef, priv)
	pm.pull(hubRef, hub)
	p.waitLogLines(t, mark, "method=CONNECT", connectField(u.PrivHost), "decision=intercept")
	p.waitLogLines(t, mark, "method=CONNECT", connectField("registry-1.docker.io:443"), "decision=intercept")
	if t.Failed() {
		t.FailNow()
	}

	u.resetCounts()
	mark = p.Mark()
	pm = newPm()
	pm.pull(privRef, priv)
	pm.pull(hubRef, hub)
	requireNoUpstreamGets(t, u.Priv, "second pull")
	requireNoUpstreamGets(t, u.Hub, "second pull")
	p.requireShimBlobHits(t, mark, u.PrivHost, imageBlobs(priv)...)
	p.requireShimBlobHits(t, mark, "docker.io", imageBlobs(hub)...)
}

// TestShimContainerd: ctr pulls through HTTPS_PROXY without any mirror
// configuration. ctr fetches in its own process (containerd 1.6 has no
// transfer service), so HTTPS_PROXY goes into ctr's environment; the CA is
// given with --tlscacert for registry.test:<port> and with a hosts.toml
// `ca` for docker.io. Second pulls after removing the content are served
// from the cache.
func TestShimContainerd(t *testing.T) {
	t.Parallel()
	requireTools(t, "containerd", "ctr")
	u := startUpstreams(t)
	p := startProxy(t, u)
	s := newViaShim(t, p)
	c := startContainerd(t)
	priv := smallImage(t, u.Priv, "team/e2e-shim-ctr", "v1")
	hub := smallImage(t, u.Hub, "library/e2e-shim-ctr", "v2")
	privRef := u.PrivHost + "/team/e2e-shim-ctr:v1"
	hubRef := "docker.io/library/e2e-shim-ctr:v2"
	// The hosts.toml recipe: the registry's own host, trusting our CA.
	// containerd 1.6 rejects a hosts.toml without a [host] table ("invalid
	// `host` tree"), so the CA goes on an explicit host entry.
	hostsDir := t.TempDir()
	writeFile(t, filepath.Join(hostsDir, "docker.io"), "hosts.toml", fmt.Sprintf(`server = "https://registry-1.docker.io"

[host."https://registry-1.docker.io"]
  capabilities = ["pull", "resolve"]
  ca = %q
`, s.CAFile))
	const ns = "e2e-shim"
	pull := func() {
		t.Helper()
		common := []string{"--address", c.Sock, "-n", ns, "images", "pull", "--snapshotter", "native", "--platform", "linux/amd64"}
		run(t, s.env(), "ctr", append(common, "--tlscacert", s.CAFile, privRef)...)
		c.checkPulled(ns, privRef, priv, priv.ManifestDigest.String())
		run(t, s.env(), "ctr", append(common, "--hosts-dir", hostsDir, hubRef)...)
		c.checkPulled(ns, hubRef, hub, hub.ManifestDigest.String())
	}

	mark := p.Mark()
	pull()
	p.waitLogLines(t, mark, "method=CONNECT", connectField(u.PrivHost), "decision=intercept")
	p.waitLogLines(t, mark, "method=CONNECT", connectField("registry-1.docker.io:443"), "decision=intercept")
	if t.Failed() {
		t.FailNow()
	}

	c.forget(ns, privRef, priv)
	c.forget(ns, hubRef, hub)
	u.resetCounts()
	mark = p.Mark()
	pull()
	requireNoUpstreamGets(t, u.Priv, "second pull")
	requireNoUpstreamGets(t, u.Hub, "second pull")
	p.requireShimBlobHits(t, mark, u.PrivHost, imageBlobs(priv)...)
	p.requireShimBlobHits(t, mark, "docker.io", imageBlobs(hub)...)
}

// TestShimCrane: crane (go-containerregistry, h2 inside the tunnel) pulls
// through HTTPS_PROXY trusting the proxy's CA via SSL_CERT_FILE; its
// intercepted requests are logged with connect= and cache=; the second
// pull is served from the cache. Without the CA it fails on the minted
// certificate: the tunnel really is intercepted.
func TestShimCrane(t *testing.T) {
	t.Parallel()
	requireTools(t, "crane")
	u := startUpstreams(t)
	p := startProxy(t, u)
	s := newViaShim(t, p)
	img := smallImage(t, u.Priv, "team/e2e-shim-crane", "v1")
	ref := u.PrivHost + "/team/e2e-shim-crane:v1"

	out, err := tryRun(t, s.env("DOCKER_CONFIG="+t.TempDir()), "crane", "digest", ref)
	if err == nil || !strings.Contains(out, "x509") {
		t.Errorf("crane without the proxy's CA: err %v, want an x509 error:\n%s", err, out)
	}

	mark := p.Mark()
	l := s.cranePullOCI(t, ref)
	l.requireImage(l.top("").Digest.String(), img)
	requireUpstreamBlobGets(t, u.Priv, len(imageBlobs(img)), "first pull")
	// Every intercepted request of crane's is logged with its CONNECT
	// target and a cache outcome.
	lines := p.waitLogLines(t, mark, "msg=request", connectField(u.PrivHost), "/manifests/v1")
	for _, d := range imageBlobs(img) {
		lines = append(lines, p.waitLogLines(t, mark, "msg=request", connectField(u.PrivHost), "/blobs/"+d)...)
	}
	for _, l := range lines {
		if !strings.Contains(l, " cache=") {
			t.Errorf("intercepted request logged without cache=: %s", l)
		}
	}
	// h2: the whole pull, with its concurrent blob GETs, went through one
	// tunnel (HTTP/1.1 would need a connection per concurrent request):
	// every request line names the same client connection as remote=.
	remotes := map[string]int{}
	for _, l := range p.logLines(mark, "msg=request", connectField(u.PrivHost)) {
		if !strings.Contains(l, "method=CONNECT") {
			remotes[logField(l, "remote")]++
		}
	}
	t.Logf("crane pull: requests per tunnel (client address): %v", remotes)
	if len(remotes) != 1 {
		t.Errorf("crane pull used %d tunnels: want one multiplexed (h2) tunnel: %v", len(remotes), remotes)
	}
	// What Go clients negotiate inside the tunnel, checked directly: h2,
	// with a certificate for the registry's name chaining to the CA.
	status, conn, _ := rawConnect(t, p, u.PrivHost)
	if !strings.Contains(status, " 200 ") {
		t.Fatalf("CONNECT %s: %q", u.PrivHost, status)
	}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(s.CAFile)
	pool.AppendCertsFromPEM(caPEM)
	tc := tls.Client(conn, &tls.Config{ServerName: "registry.test", RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}})
	if err := tc.Handshake(); err != nil {
		t.Errorf("TLS inside the tunnel: %v", err)
	} else if proto := tc.ConnectionState().NegotiatedProtocol; proto != "h2" {
		t.Errorf("ALPN inside the tunnel: %q, want h2", proto)
	}
	tc.Close()
	if got := s.crane(t, "digest", ref); got != img.ManifestDigest.String() {
		t.Errorf("crane digest %s = %s, want %s", ref, got, img.ManifestDigest)
	}
	if t.Failed() {
		t.FailNow()
	}

	u.resetCounts()
	mark = p.Mark()
	l = s.cranePullOCI(t, ref)
	l.requireImage(l.top("").Digest.String(), img)
	requireNoUpstreamGets(t, u.Priv, "second pull")
	p.requireShimBlobHits(t, mark, u.PrivHost, imageBlobs(img)...)
}

// TestShimDockerHubNamesShareCache: skopeo reaches Docker Hub as
// registry-1.docker.io, crane as index.docker.io; both land in the same
// cache, so crane's pull after skopeo's needs no upstream blob GET.
func TestShimDockerHubNamesShareCache(t *testing.T) {
	t.Parallel()
	requireTools(t, "skopeo", "crane")
	u := startUpstreams(t)
	p := startProxy(t, u)
	s := newViaShim(t, p)
	img := smallImage(t, u.Hub, "library/e2e-shim-hub", "v1")
	ref := "docker.io/library/e2e-shim-hub:v1"

	mark := p.Mark()
	l := s.skopeo(t, ref, "v1")
	l.requireImage(l.top("v1").Digest.String(), img)
	p.waitLogLines(t, mark, "method=CONNECT", connectField("registry-1.docker.io:443"), "decision=intercept")
	requireUpstreamBlobGets(t, u.Hub, len(imageBlobs(img)), "skopeo")

	u.resetCounts()
	mark = p.Mark()
	l = s.cranePullOCI(t, ref)
	l.requireImage(l.top("").Digest.String(), img)
	p.waitLogLines(t, mark, "method=CONNECT", connectField("index.docker.io:443"), "decision=intercept")
	requireNoUpstreamGets(t, u.Hub, "crane after skopeo")
	p.requireShimBlobHits(t, mark, "docker.io", imageBlobs(img)...)
}
