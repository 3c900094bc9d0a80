package mirror_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/mirror"
)

const accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

func TestPullThroughThenHit(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		backend string
		auth    testreg.AuthMode
	}{
		{"inmemory/anonymous", "inmemory", testreg.AuthNone},
		{"filesystem/anonymous", "filesystem", testreg.AuthNone},
		{"filesystem/token", "filesystem", testreg.AuthToken},
		{"inmemory/token", "inmemory", testreg.AuthToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := testreg.Start(t, testreg.Options{TLS: true, Auth: tc.auth})
			img := reg.PushImage(t, "team/app", "v1.0", testreg.RandomLayer(t, 300_000), testreg.RandomLayer(t, 10_000))
			e := newEnv(t, envOptions{backend: tc.backend}, upstreamSpec{host: "registry.test:5000", reg: reg})
			base := "/v2/registry.test_5000/team/app"

			resp, body := e.do("GET", base+"/manifests/v1.0", "Accept", accept)
			wantStatus(t, resp, body, 200, "")
			if !bytes.Equal(body, img.Manifest) || resp.Header.Get("Docker-Content-Digest") != img.ManifestDigest.String() {
				t.Fatalf("manifest differs from upstream's")
			}
			if ct := resp.Header.Get("Content-Type"); ct != img.MediaType {
				t.Fatalf("Content-Type = %q, want %q", ct, img.MediaType)
			}
			if got := resp.Header.Get("X-Cache"); got != "MISS" {
				t.Fatalf("X-Cache = %q, want MISS", got)
			}
			head, _ := e.do("HEAD", base+"/manifests/v1.0", "Accept", accept)
			for _, h := range []string{"Content-Length", "Content-Type", "Docker-Content-Digest"} {
				if head.Header.Get(h) != resp.Header.Get(h) {
					t.Fatalf("HEAD %s = %q, GET had %q", h, head.Header.Get(h), resp.Header.Get(h))
				}
			}
			blobs := append([]testreg.Blob{img.Config}, img.Layers...)
			for _, b := range blobs {
				resp, body := e.do("GET", base+"/blobs/"+b.Digest.String())
				wantStatus(t, resp, body, 200, "")
				if sha(body) != b.Digest.String() {
					t.Fatalf("blob %s: body hashes to %s", b.Digest, sha(body))
				}
			}

			reg.ResetCounts()
			for _, b := range blobs {
				resp, body := e.do("GET", base+"/blobs/"+b.Digest.String())
				if resp.Header.Get("X-Cache") != "HIT" || sha(body) != b.Digest.String() {
					t.Fatalf("second GET of %s: X-Cache %q", b.Digest, resp.Header.Get("X-Cache"))
				}
				head, _ := e.do("HEAD", base+"/blobs/"+b.Digest.String())
				if head.Header.Get("Content-Length") != resp.Header.Get("Content-Length") || head.Header.Get("Docker-Content-Digest") != b.Digest.String() {
					t.Fatalf("HEAD blob headers differ from GET")
				}
			}
			resp, _ = e.do("GET", base+"/manifests/"+img.ManifestDigest.String(), "Accept", accept)
			if resp.Header.Get("X-Cache") != "HIT" {
				t.Fatalf("manifest by digest: X-Cache %q", resp.Header.Get("X-Cache"))
			}
			// Tag caching is off: one HEAD revalidates, no GET.
			resp, _ = e.do("GET", base+"/manifests/v1.0", "Accept", accept)
			if resp.Header.Get("X-Cache") != "REVALIDATED" {
				t.Fatalf("tag: X-Cache %q, want REVALIDATED", resp.Header.Get("X-Cache"))
			}
			if n := served(reg, "GET", "blob") + served(reg, "GET", "manifest"); n != 0 {
				t.Fatalf("second pull made %d upstream GETs", n)
			}
			if n := served(reg, "HEAD", "manifest"); n != 1 {
				t.Fatalf("second pull made %d manifest HEADs, want 1", n)
			}
			if !strings.Contains(e.logs.String(), "cache=HIT") {
				t.Fatalf("no cache=HIT in the access log")
			}
		})
	}
}

func TestTagTTLTiers(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	first := reg.PushImage(t, "app", "stable", testreg.RandomLayer(t, 1000))
	e := newEnv(t, envOptions{tagTTL: 10 * time.Minute}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/manifests/stable"

	resp, _ := e.do("GET", path, "Accept", accept)
	if resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("first: %q", resp.Header.Get("X-Cache"))
	}
	reg.ResetCounts()
	for range 5 {
		resp, _ = e.do("GET", path, "Accept", accept)
		if resp.Header.Get("X-Cache") != "HIT" {
			t.Fatalf("inside TTL: X-Cache %q", resp.Header.Get("X-Cache"))
		}
	}
	if n := len(reg.Requests()); n != 0 {
		t.Fatalf("inside the TTL the mirror made %d upstream requests, want 0", n)
	}
	// Past the TTL: one HEAD, same digest.
	e.clock.Advance(11 * time.Minute)
	resp, _ = e.do("GET", path, "Accept", accept)
	if resp.Header.Get("X-Cache") != "REVALIDATED" || reg.Count("HEAD", "manifest") != 1 || reg.Count("GET", "manifest") != 0 {
		t.Fatalf("past TTL: X-Cache %q, HEAD %d, GET %d", resp.Header.Get("X-Cache"), reg.Count("HEAD", "manifest"), reg.Count("GET", "manifest"))
	}
	// The tag moves upstream: past the TTL, HEAD sees it and one GET follows.
	second := reg.PushImage(t, "app", "stable", testreg.RandomLayer(t, 1000))
	e.clock.Advance(11 * time.Minute)
	reg.ResetCounts()
	resp, body := e.do("GET", path, "Accept", accept)
	if resp.Header.Get("Docker-Content-Digest") != second.ManifestDigest.String() || !bytes.Equal(body, second.Manifest) {
		t.Fatalf("moved tag: got %s, want %s (old %s)", resp.Header.Get("Docker-Content-Digest"), second.ManifestDigest, first.ManifestDigest)
	}
	if reg.Count("HEAD", "manifest") != 1 || reg.Count("GET", "manifest") != 1 {
		t.Fatalf("moved tag: HEAD %d GET %d, want 1 and 1", reg.Count("HEAD", "manifest"), reg.Count("GET", "manifest"))
	}
}

func TestOfflineServesStale(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken})
	img := reg.PushImage(t, "app", "latest", testreg.RandomLayer(t, 5000))
	e := newEnv(t, envOptions{backend: "filesystem"}, upstreamSpec{host: "registry.test", reg: reg})
	base := "/v2/registry.test/app"
	e.do("GET", base+"/manifests/latest", "Accept", accept)
	for _, b := range img.Layers {
		e.do("GET", base+"/blobs/"+b.Digest.String())
	}
	e.do("GET", base+"/tags/list")

	reg.Stop()
	resp, body := e.do("GET", base+"/manifests/latest", "Accept", accept)
	wantStatus(t, resp, body, 200, "")
	if resp.Header.Get("X-Cache") != "STALE" || !strings.HasPrefix(resp.Header.Get("Warning"), `299 - "Response is stale: `) || !bytes.Equal(body, img.Manifest) {
		t.Fatalf("offline tag: X-Cache %q Warning %q", resp.Header.Get("X-Cache"), resp.Header.Get("Warning"))
	}
	resp, _ = e.do("GET", base+"/manifests/"+img.ManifestDigest.String(), "Accept", accept)
	if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "HIT" {
		t.Fatalf("offline digest: %d %q", resp.StatusCode, resp.Header.Get("X-Cache"))
	}
	resp, body = e.do("GET", base+"/blobs/"+img.Layers[0].Digest.String())
	if resp.StatusCode != 200 || sha(body) != img.Layers[0].Digest.String() {
		t.Fatalf("offline blob: %d", resp.StatusCode)
	}
	resp, body = e.do("GET", base+"/tags/list")
	if resp.StatusCode != 200 || resp.Header.Get("Warning") == "" || !strings.Contains(string(body), `"latest"`) {
		t.Fatalf("offline tags/list: %d %q %s", resp.StatusCode, resp.Header.Get("Warning"), body)
	}
	if !strings.Contains(e.logs.String(), "may be stale") {
		t.Fatal("no log line says the answer may be stale")
	}
	// Something never cached cannot be served: a gateway error.
	resp, body = e.do("GET", base+"/manifests/other", "Accept", accept)
	wantStatus(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
	reg.Restart(t)
	// Within the hold after the failure, the tag is still answered stale
	// without asking; after it, the next pull revalidates.
	resp, _ = e.do("GET", base+"/manifests/latest", "Accept", accept)
	if resp.Header.Get("X-Cache") != "STALE" {
		t.Fatalf("after restart, within the hold: %q", resp.Header.Get("X-Cache"))
	}
	e.clock.Advance(mirror.DefaultDownHold + time.Second)
	resp, _ = e.do("GET", base+"/manifests/latest", "Accept", accept)
	if resp.Header.Get("X-Cache") != "REVALIDATED" {
		t.Fatalf("after restart: %q", resp.Header.Get("X-Cache"))
	}
}

// TestBlobRedirectWithoutCredentials: blob storage on a network the
// operator opened (allowNetworks; testreg's CDN is on another loopback
// port) is followed, without the registry's credentials.
func TestBlobRedirectWithoutCredentials(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken, Username: "alice", Password: "s3cret", BlobRedirect: true})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 200_000))
	e := newEnv(t, envOptions{creds: auth.Credentials{Username: "alice", Password: "s3cret"}, allowNetworks: testutil.LoopbackNetworks}, upstreamSpec{host: "registry.test", reg: reg})
	resp, body := e.do("GET", "/v2/registry.test/team/app/manifests/v1", "Accept", accept)
	wantStatus(t, resp, body, 200, "")
	_, sum, _, err := hashGET(e, "/v2/registry.test/team/app/blobs/"+img.Layers[0].Digest.String())
	if err != nil || sum != img.Layers[0].Digest.String() {
		t.Fatalf("redirected blob: %s %v", sum, err)
	}
	if reg.Count("GET", "cdn") == 0 {
		t.Fatal("the blob did not come from the CDN")
	}
	if reg.CDNSawAuthorization() {
		t.Fatal("the registry's Authorization header was sent to the CDN")
	}
	if strings.Contains(e.logs.String(), "s3cret") {
		t.Fatal("the password appears in the logs")
	}
}
