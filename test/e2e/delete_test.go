//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// shimHead sends a HEAD for https://<host><path> through the shim, trusting
// the proxy's CA, and returns the status and X-Cache.
func (s *viaShim) shimHead(t *testing.T, host, path string) (int, string) {
	t.Helper()
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(s.CAFile)
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("the proxy's CA %s: %v", s.CAFile, err)
	}
	pu, err := url.Parse(s.p.URL)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodHead, "https://"+host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Cache")
}

// TestShimCraneDelete: with allowPush on (and tag caching on, so a stale
// tag would show), crane pulls an image through the shim, which caches
// it (a digest HEAD is a HIT), then deletes its manifest by digest through
// the shim. The registry accepts; from then on the proxy forgets it at
// once: crane manifest <digest> fails, a digest HEAD through the shim is
// 404 (it was 200 HIT before this change), and the tag, cached for an
// hour, is asked for upstream and unknown there.
func TestShimCraneDelete(t *testing.T) {
	t.Parallel()
	requireTools(t, "crane")
	u := startAnonUpstreams(t)
	p := startProxyWith(t, u, "allowPush: true\nmanifestCache:\n  enabled: true\n  defaultTime: 1h\n")
	s := newViaShim(t, p)
	img := smallImage(t, u.Priv, "team/e2e-delete", "v1")
	repo := u.PrivHost + "/team/e2e-delete"
	md := img.ManifestDigest.String()

	l := s.cranePullOCI(t, repo+":v1")
	l.requireImage(l.top("").Digest.String(), img)
	if status, xc := s.shimHead(t, u.PrivHost, "/v2/team/e2e-delete/manifests/"+md); status != http.StatusOK || xc != "HIT" {
		t.Fatalf("digest HEAD after the pull: %d X-Cache %q, want 200 HIT", status, xc)
	}

	mark := p.Mark()
	s.crane(t, "delete", repo+"@"+md)
	if d := upstreamDigest(t, u.Priv, "team/e2e-delete", md); strings.HasPrefix(d, "sha256:") {
		t.Fatalf("upstream still has %s after crane delete", md)
	}
	p.waitLogLines(t, mark, "manifest deleted through the proxy", md)
	out, err := tryRun(t, s.env("SSL_CERT_FILE="+s.Bundle, "DOCKER_CONFIG="+t.TempDir()), "crane", "manifest", repo+"@"+md)
	if err == nil {
		t.Fatalf("crane manifest of the deleted digest succeeded:\n%s", out)
	}
	if !strings.Contains(out, "MANIFEST_UNKNOWN") && !strings.Contains(out, "404") {
		t.Errorf("crane manifest of the deleted digest failed, but not with 404 MANIFEST_UNKNOWN:\n%s", out)
	}
	if status, xc := s.shimHead(t, u.PrivHost, "/v2/team/e2e-delete/manifests/"+md); status != http.StatusNotFound {
		t.Fatalf("digest HEAD after crane delete: %d X-Cache %q, want 404", status, xc)
	}
	if out, err := tryRun(t, s.env("SSL_CERT_FILE="+s.Bundle, "DOCKER_CONFIG="+t.TempDir()), "crane", "digest", repo+":v1"); err == nil {
		t.Fatalf("crane digest of the tag of the deleted manifest succeeded (a cached tag record survived):\n%s", out)
	}
}
