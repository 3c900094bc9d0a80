package mirror_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

func TestErrorsAreOCIEnvelopes(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	img := reg.PushImage(t, "library/alpine", "3.20", testreg.RandomLayer(t, 1000))
	e := newEnv(t, envOptions{}, upstreamSpec{host: "docker.io", reg: reg}, upstreamSpec{host: "quay.io", reg: reg})
	missing := "sha256:" + strings.Repeat("ab", 32)
	cases := []struct {
		name   string
		method string
		path   string
		hdr    []string
		status int
		code   string
	}{
		{"unknown manifest", "GET", "/v2/docker.io/library/alpine/manifests/nope", nil, 404, "MANIFEST_UNKNOWN"},
		{"malformed tag", "GET", "/v2/docker.io/library/alpine/manifests/.INVALID", nil, 404, "MANIFEST_UNKNOWN"},
		{"unknown manifest digest", "GET", "/v2/docker.io/library/alpine/manifests/" + missing, nil, 404, "MANIFEST_UNKNOWN"},
		{"unknown blob", "GET", "/v2/docker.io/library/alpine/blobs/" + missing, nil, 404, "BLOB_UNKNOWN"},
		{"unknown blob HEAD", "HEAD", "/v2/docker.io/library/alpine/blobs/" + missing, nil, 404, ""},
		{"malformed digest", "GET", "/v2/docker.io/library/alpine/blobs/sha256:xyz", nil, 400, "DIGEST_INVALID"},
		{"unsupported algorithm", "GET", "/v2/docker.io/library/alpine/blobs/md5:" + strings.Repeat("a", 32), nil, 400, "DIGEST_INVALID"},
		{"malformed name", "GET", "/v2/docker.io/Library/Alpine/manifests/latest", nil, 404, "NAME_INVALID"},
		{"unconfigured host", "GET", "/v2/ghcr.io/org/app/manifests/latest", nil, 403, "DENIED"},
		{"unconfigured ns", "GET", "/v2/org/app/manifests/latest?ns=ghcr.io", nil, 403, "DENIED"},
		{"bad ns", "GET", "/v2/org/app/manifests/latest?ns=a%20b", nil, 400, "NAME_INVALID"},
		{"push start", "POST", "/v2/docker.io/library/alpine/blobs/uploads/", nil, 405, "UNSUPPORTED"},
		{"manifest put", "PUT", "/v2/docker.io/library/alpine/manifests/3.20", nil, 405, "UNSUPPORTED"},
		{"manifest delete", "DELETE", "/v2/docker.io/library/alpine/manifests/3.20", nil, 405, "UNSUPPORTED"},
		{"catalog", "GET", "/v2/_catalog", nil, 404, "UNSUPPORTED"},
		{"bad pagination", "GET", "/v2/docker.io/library/alpine/tags/list?n=-1", nil, 400, "PAGINATION_NUMBER_INVALID"},
		{"accept excludes type", "GET", "/v2/docker.io/library/alpine/manifests/3.20", []string{"Accept", "application/vnd.docker.distribution.manifest.v2+json"}, 404, "MANIFEST_UNKNOWN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(tc.method, tc.path, tc.hdr...)
			wantStatus(t, resp, body, tc.status, tc.code)
			if tc.method != "HEAD" {
				var env struct {
					Errors []struct{ Code, Message string } `json:"errors"`
				}
				if err := json.Unmarshal(body, &env); err != nil || len(env.Errors) == 0 || env.Errors[0].Message == "" {
					t.Fatalf("not an OCI error envelope: %s", body)
				}
			}
		})
	}
	t.Run("405 says the mirror serves pulls only", func(t *testing.T) {
		// Whatever ALLOW_PUSH says: mirror paths never take writes (the
		// push passthrough is the shim's), so the message names no setting.
		_, body := e.do("PUT", "/v2/docker.io/library/alpine/manifests/3.20")
		if !strings.Contains(string(body), "serves pulls only") || strings.Contains(string(body), "ALLOW_PUSH") {
			t.Fatalf("body %s", body)
		}
	})
	t.Run("docker hub default and library prefix", func(t *testing.T) {
		for _, p := range []string{"/v2/alpine/manifests/3.20", "/v2/library/alpine/manifests/3.20", "/v2/alpine/manifests/3.20?ns=docker.io", "/v2/index.docker.io/library/alpine/manifests/3.20", "/v2/alpine/manifests/3.20?ns=registry-1.docker.io"} {
			resp, _ := e.do("GET", p, "Accept", accept)
			if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != img.ManifestDigest.String() {
				t.Fatalf("%s: %d %s", p, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
			}
		}
	})
	t.Run("base", func(t *testing.T) {
		for _, m := range []string{"GET", "HEAD"} {
			resp, _ := e.do(m, "/v2/")
			if resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
				t.Fatalf("%s /v2/: %d", m, resp.StatusCode)
			}
		}
	})
}

func TestUpstreamFailuresMapToStatuses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		fault      testreg.Fault
		status     int
		code       string
		retryAfter string
	}{
		{"rate limited", testreg.FaultStatus(429), 429, "TOOMANYREQUESTS", "7"},
		{"unauthorized", testreg.FaultStatus(401), 401, "UNAUTHORIZED", ""},
		{"forbidden", testreg.FaultStatus(403), 403, "DENIED", ""},
		{"server error", testreg.FaultStatus(500), 502, "UNAVAILABLE", ""},
		{"bad gateway", testreg.FaultStatus(503), 502, "UNAVAILABLE", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := testreg.Start(t, testreg.Options{TLS: true})
			e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
			reg.SetFault(tc.fault)
			for _, p := range []string{"/v2/registry.test/app/manifests/latest", "/v2/registry.test/app/blobs/sha256:" + strings.Repeat("cd", 32)} {
				resp, body := e.do("GET", p, "Accept", accept)
				wantStatus(t, resp, body, tc.status, tc.code)
				if resp.Header.Get("Retry-After") != tc.retryAfter {
					t.Fatalf("Retry-After = %q, want %q", resp.Header.Get("Retry-After"), tc.retryAfter)
				}
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		reg := testreg.Start(t, testreg.Options{TLS: true})
		e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
		reg.Stop()
		resp, body := e.do("GET", "/v2/registry.test/app/manifests/latest", "Accept", accept)
		wantStatus(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
	})
}

func TestTagsListAndReferrers(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	for _, tag := range []string{"c", "a", "e", "b", "d"} {
		reg.PushImage(t, "app", tag, testreg.RandomLayer(t, 100))
	}
	img := reg.PushImage(t, "app", "z", testreg.RandomLayer(t, 100))
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	type list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	cases := []struct {
		query string
		want  string
		link  bool
	}{
		{"", "a,b,c,d,e,z", false},
		{"?n=2", "a,b", true},
		{"?n=2&last=b", "c,d", true},
		{"?last=d", "e,z", false},
		{"?n=0", "", false},
		{"?n=10&last=z", "", false},
	}
	for _, tc := range cases {
		t.Run("tags"+tc.query, func(t *testing.T) {
			resp, body := e.do("GET", "/v2/registry.test/app/tags/list"+tc.query)
			wantStatus(t, resp, body, 200, "")
			var l list
			if err := json.Unmarshal(body, &l); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(l.Tags, ","); got != tc.want || l.Name != "registry.test/app" {
				t.Fatalf("tags = %q (name %q), want %q", got, l.Name, tc.want)
			}
			if link := resp.Header.Get("Link"); (link != "") != tc.link || (tc.link && !strings.Contains(link, `rel="next"`)) {
				t.Fatalf("Link = %q", link)
			}
		})
	}
	t.Run("referrers", func(t *testing.T) {
		resp, body := e.do("GET", "/v2/registry.test/app/referrers/"+img.ManifestDigest.String())
		wantStatus(t, resp, body, 200, "")
		if resp.Header.Get("Content-Type") != "application/vnd.oci.image.index.v1+json" {
			t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
		}
		var idx struct {
			SchemaVersion int   `json:"schemaVersion"`
			Manifests     []any `json:"manifests"`
		}
		if err := json.Unmarshal(body, &idx); err != nil || idx.SchemaVersion != 2 || idx.Manifests == nil {
			t.Fatalf("not an index: %s", body)
		}
	})
	t.Run("unknown repository", func(t *testing.T) {
		resp, body := e.do("GET", "/v2/registry.test/nothing/here/tags/list")
		wantStatus(t, resp, body, 404, "NAME_UNKNOWN")
	})
}
