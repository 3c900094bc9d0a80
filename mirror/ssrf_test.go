package mirror_test

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

// TestUpstreamRedirectToInternalService: a registry on loopback (its
// configured endpoint) that redirects blob GETs and HEADs to another
// loopback port gets its clients a 502 OCI error; the internal service
// sees no request, a HEAD never reports its status or length, and
// nothing is stored.
func TestUpstreamRedirectToInternalService(t *testing.T) {
	t.Parallel()
	internal, hits := testutil.InternalService(t)
	reg := testreg.Start(t, testreg.Options{TLS: true, RedirectBlob: func(string, string) string {
		return internal.URL + "/admin?token=topsecret"
	}})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 4096))
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/team/app/blobs/" + img.Layers[0].Digest.String()
	for range 2 {
		resp, body := e.do(http.MethodGet, path)
		wantStatus(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
		if strings.Contains(string(body), "internal secret") || strings.Contains(string(body), "topsecret") {
			t.Fatalf("the answer shows the internal service or the redirect's query: %s", body)
		}
		resp, body = e.do(http.MethodHead, path)
		wantStatus(t, resp, body, http.StatusBadGateway, "")
		if resp.ContentLength == 15 || resp.Header.Get("Content-Length") == "15" {
			t.Fatalf("HEAD reported the internal service's length: %v", resp.Header)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the internal service got %d requests, want 0", n)
	}
	if n := reg.Count(http.MethodGet, testreg.KindBlob); n != 2 {
		t.Fatalf("upstream blob GETs = %d, want 2 (one per client GET, none retried)", n)
	}
	if _, err := e.store.StatBlob(t.Context(), img.Layers[0].Digest); err == nil {
		t.Fatal("the blob was stored")
	}
}

// TestUpstreamRedirectToUnopenedStorage: blob storage on another loopback
// port (testreg's CDN) is an internal address: without allowNetworks the
// redirect is refused and the CDN sees nothing (TestBlobRedirectWithout
// Credentials opens it and pulls).
func TestUpstreamRedirectToUnopenedStorage(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, BlobRedirect: true})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 4096))
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	resp, body := e.do(http.MethodGet, "/v2/registry.test/team/app/blobs/"+img.Layers[0].Digest.String())
	wantStatus(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
	if n := reg.Count(http.MethodGet, testreg.KindCDN); n != 0 {
		t.Fatalf("the CDN on another loopback port got %d GETs, want 0", n)
	}
}

// TestTokenRealmOnEndpointHostOtherPort: a registry named
// localhost:<port> (its endpoint 127.0.0.1 at that port) whose challenge
// names a realm on localhost at another port sends it no credentials: the
// realm is refused, the token server sees no request, the client gets a
// 502.
func TestTokenRealmOnEndpointHostOtherPort(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken, RealmHost: "localhost", Username: "robot", Password: "robot-pw"})
	reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 1024))
	_, port, err := net.SplitHostPort(reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	host := "localhost:" + port
	e := newEnvWithCreds(t, host, reg, "robot", "robot-pw")
	resp, body := e.do(http.MethodGet, "/v2/"+host+"/team/app/manifests/v1", "Accept", accept)
	wantStatus(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
	if n := reg.Count(http.MethodGet, testreg.KindToken); n != 0 {
		t.Fatalf("the token server on another port got %d requests, want 0", n)
	}
}
