//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// TestOfflineMirrorAndShim (issue 5, offline service): a three-layer image
// of the token-auth upstream is warmed with skopeo through the mirror path
// (registries.conf) and with ctr through HTTPS_PROXY (the shim), and its
// tag list asked once. Then the upstream, token server included, stops.
// Through both front doors the image still pulls by tag and by digest;
// the tag is answered with cache=STALE in the log and a Warning header;
// /v2/ is answered locally (no challenge, so no token step); tags/list is
// served from the last answer with a Warning.
func TestOfflineMirrorAndShim(t *testing.T) {
	t.Parallel()
	requireTools(t, "skopeo", "containerd", "ctr")
	u := startUpstreams(t)
	p := startProxy(t, u)
	s := newViaShim(t, p)
	c := startContainerd(t)
	reg := u.Priv
	const repo, tag = "team/e2e-offline", "v1"
	img := reg.PushImage(t, repo, tag,
		testreg.RandomLayer(t, 1<<20),
		testreg.LayerFiles(t, map[string][]byte{"etc/offline": []byte("offline\n")}),
		testreg.RandomLayer(t, 512<<10))
	reg.PushManifest(t, repo, "stable", img.MediaType, img.Manifest)
	ref := u.PrivHost + "/" + repo + ":" + tag
	digestRef := u.PrivHost + "/" + repo + "@" + img.ManifestDigest.String()
	conf, policy := registriesConf(t, p, u), policyJSON(t)
	const ns = "e2e-offline"
	ctrPull := func(r string) {
		t.Helper()
		run(t, s.env(), "ctr", "--address", c.Sock, "-n", ns, "images", "pull", "--snapshotter", "native",
			"--platform", "linux/amd64", "--tlscacert", s.CAFile, r)
		c.checkPulled(ns, r, img, img.ManifestDigest.String())
	}
	mirrorBase := p.URL + "/v2/" + u.PrivNS + "/" + repo
	shimBase := "https://" + u.PrivHost + "/v2/" + repo
	shimClient := shimHTTPClient(t, p, s)

	// Warm: skopeo through the mirror, ctr through the shim, tags/list
	// through both.
	l := skopeoCopy(t, conf, policy, ref, tag)
	l.requireImage(l.top(tag).Digest.String(), img)
	ctrPull(ref)
	for _, get := range []func() *http.Response{
		func() *http.Response { return getWith(t, plainClient(), mirrorBase+"/tags/list", "") },
		func() *http.Response { return getWith(t, shimClient, shimBase+"/tags/list", "") },
	} {
		resp := get()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Warning") != "" {
			t.Errorf("tags/list online: status %d, Warning %q", resp.StatusCode, resp.Header.Get("Warning"))
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	reg.Stop()
	stopped := time.Now()

	// Mirror path with skopeo: by tag (stale) and by digest.
	mark := p.Mark()
	l = skopeoCopy(t, conf, policy, ref, tag)
	l.requireImage(l.top(tag).Digest.String(), img)
	requireStaleTag(t, p, mark, http.MethodGet, "/"+u.PrivNS+"/"+repo+"/manifests/"+tag, "")
	l = skopeoCopy(t, conf, policy, digestRef, "bydigest")
	l.requireImage(l.top("bydigest").Digest.String(), img)

	// Shim with ctr: by tag (stale) and by digest, each from an empty
	// content store so every blob is fetched through the proxy.
	c.forget(ns, ref, img)
	mark = p.Mark()
	ctrPull(ref)
	// ctr resolves the tag with a HEAD, then GETs the manifest by digest.
	requireStaleTag(t, p, mark, http.MethodHead, "/manifests/"+tag, connectField(u.PrivHost))
	p.requireShimBlobHits(t, mark, u.PrivHost, imageBlobs(img)...)
	c.forget(ns, ref, img)
	mark = p.Mark()
	ctrPull(digestRef)
	p.requireShimBlobHits(t, mark, u.PrivHost, imageBlobs(img)...)

	// The answers themselves, through both front doors.
	for _, door := range []struct {
		name   string
		client *http.Client
		v2     string
		base   string
		asked  string // the repository name as the door's client writes it
	}{
		{"mirror", plainClient(), p.URL + "/v2/", mirrorBase, u.PrivNS + "/" + repo},
		{"shim", shimClient, "https://" + u.PrivHost + "/v2/", shimBase, repo},
	} {
		t.Run(door.name, func(t *testing.T) {
			resp := getWith(t, door.client, door.v2, "")
			if resp.StatusCode != http.StatusOK || resp.Header.Get("WWW-Authenticate") != "" {
				t.Errorf("GET /v2/ offline: status %d, WWW-Authenticate %q; want 200 answered locally without a challenge",
					resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}

			for _, method := range []string{http.MethodGet, http.MethodHead} {
				resp = doWith(t, door.client, method, door.base+"/manifests/"+tag, oci.ManifestAccept)
				requireStaleAnswer(t, resp, method+" manifests/"+tag)
				if got := resp.Header.Get("Docker-Content-Digest"); got != img.ManifestDigest.String() {
					t.Errorf("%s manifests/%s offline: Docker-Content-Digest %q, want %s", method, tag, got, img.ManifestDigest)
				}
			}

			resp = getWith(t, door.client, door.base+"/manifests/"+img.ManifestDigest.String(), oci.ManifestAccept)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET manifests/<digest> offline: status %d", resp.StatusCode)
			}

			resp = getWith(t, door.client, door.base+"/tags/list", "")
			requireStaleAnswer(t, resp, "GET tags/list")
			var list struct {
				Name string   `json:"name"`
				Tags []string `json:"tags"`
			}
			if err := json.Unmarshal(bodyOf(resp), &list); err != nil {
				t.Errorf("tags/list offline: %v", err)
			}
			if want := []string{"stable", "v1"}; !slices.Equal(list.Tags, want) || list.Name != door.asked {
				t.Errorf("tags/list offline: %+v, want name %s tags %v (the last answer, named as asked)", list, door.asked, want)
			}
		})
	}
	t.Logf("offline checks took %s", time.Since(stopped).Round(time.Millisecond))
}

// requireStaleTag fails unless the proxy answered method for a path
// containing pathPart (and extra, e.g. the CONNECT target) with
// cache=STALE after mark and logged why.
func requireStaleTag(t *testing.T, p *proxy, mark int, method, pathPart, extra string) {
	t.Helper()
	parts := []string{"msg=request", "method=" + method + " ", pathPart, "cache=STALE"}
	if extra != "" {
		parts = append(parts, extra)
	}
	p.waitLogLines(t, mark, parts...)
	// The first stale answer of an outage says why; later ones, answered
	// during the hold without asking upstream, only in their access line.
	if lines := p.logLines(0, "may be stale"); len(lines) == 0 {
		t.Errorf("no log line saying the answer may be stale:\n%s", tail(p.Log(), 40))
	}
	if lines := p.logLines(0, "cached tags are answered stale without asking it"); len(lines) != 1 {
		t.Errorf("want one log line saying that the upstream is held, got %d:\n%s", len(lines), tail(p.Log(), 40))
	}
}

// requireStaleAnswer fails unless resp is a 200 marked stale: X-Cache
// STALE and an RFC 7234 Warning 110.
func requireStaleAnswer(t *testing.T, resp *http.Response, what string) {
	t.Helper()
	w := resp.Header.Get("Warning")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(w, `299 - "Response is stale: `) || resp.Header.Get("X-Cache") != "STALE" {
		t.Errorf("%s offline: status %d, Warning %q, X-Cache %q; want 200, a 299 stale Warning, STALE",
			what, resp.StatusCode, w, resp.Header.Get("X-Cache"))
	}
}

// shimHTTPClient is a Go client that reaches registries through the
// proxy's CONNECT shim (http.ProxyURL) trusting the CA from /ca.crt.
func shimHTTPClient(t *testing.T, p *proxy, s *viaShim) *http.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s: no certificate", s.CAFile)
	}
	proxyURL, err := url.Parse(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy:             http.ProxyURL(proxyURL),
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
}

// getWith is doWith for GET.
func getWith(t *testing.T, c *http.Client, u, accept string) *http.Response {
	t.Helper()
	return doWith(t, c, http.MethodGet, u, accept)
}

// doWith sends one request and returns the response with its body read
// (see bodyOf); a transport error fails the test.
func doWith(t *testing.T, c *http.Client, method, u, accept string) *http.Response {
	t.Helper()
	req := mustRequest(method, u)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp
}

// bodyOf returns the body doWith read.
func bodyOf(resp *http.Response) []byte {
	b, _ := io.ReadAll(resp.Body)
	return b
}
