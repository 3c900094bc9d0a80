package oci

import (
	"net/http"
	"strings"
	"testing"
)

// configured mimics a proxy serving Docker Hub, quay.io and a registry
// with a port under its default alias.
func configured(name string) (string, bool) {
	switch CanonicalHost(name) {
	case "docker.io":
		return "docker.io", true
	case "quay.io":
		return "quay.io", true
	case "registry.local:5000", "registry.local_5000":
		return "registry.local:5000", true
	case "localhost_5000", "localhost:5000":
		return "localhost:5000", true
	}
	return "", false
}

func TestResolve(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, path, ns string
		upstream, repo string
		status         int
		code           string
	}{
		{name: "docker hub default", path: "alpine", upstream: "docker.io", repo: "library/alpine"},
		{name: "docker hub org", path: "bitnami/redis", upstream: "docker.io", repo: "bitnami/redis"},
		{name: "docker hub prefix", path: "docker.io/alpine", upstream: "docker.io", repo: "library/alpine"},
		{name: "index.docker.io alias", path: "index.docker.io/library/alpine", upstream: "docker.io", repo: "library/alpine"},
		{name: "registry-1 alias", path: "registry-1.docker.io/org/app", upstream: "docker.io", repo: "org/app"},
		{name: "host prefix", path: "quay.io/org/app", upstream: "quay.io", repo: "org/app"},
		{name: "host prefix deep", path: "quay.io/org/team/app", upstream: "quay.io", repo: "org/team/app"},
		{name: "quay one element stays", path: "quay.io/app", upstream: "quay.io", repo: "app"},
		{name: "alias with port", path: "registry.local_5000/team/app", upstream: "registry.local:5000", repo: "team/app"},
		{name: "alias without dot", path: "localhost_5000/team/app", upstream: "localhost:5000", repo: "team/app"},
		{name: "ns param", path: "org/app", ns: "quay.io", upstream: "quay.io", repo: "org/app"},
		{name: "ns with port", path: "team/app", ns: "registry.local:5000", upstream: "registry.local:5000", repo: "team/app"},
		{name: "ns docker hub adds library", path: "alpine", ns: "docker.io", upstream: "docker.io", repo: "library/alpine"},
		{name: "ns registry-1", path: "alpine", ns: "registry-1.docker.io", upstream: "docker.io", repo: "library/alpine"},
		{name: "ns wins over prefix", path: "quay.io/app", ns: "docker.io", upstream: "docker.io", repo: "quay.io/app"},
		{name: "unconfigured host", path: "ghcr.io/org/app", status: http.StatusForbidden, code: CodeDenied},
		{name: "unconfigured ns", path: "org/app", ns: "ghcr.io", status: http.StatusForbidden, code: CodeDenied},
		{name: "unconfigured host with port", path: "registry.local:6000/app", status: http.StatusForbidden, code: CodeDenied},
		{name: "metadata address is just unconfigured", path: "169.254.169.254/latest", status: http.StatusForbidden, code: CodeDenied},
		{name: "localhost unconfigured", path: "localhost/app", status: http.StatusForbidden, code: CodeDenied},
		{name: "uppercase repo", path: "quay.io/Org/App", status: http.StatusNotFound, code: CodeNameInvalid},
		{name: "bad ns", path: "app", ns: "a b", status: http.StatusBadRequest, code: CodeNameInvalid},
		{name: "ns with path", path: "app", ns: "quay.io/x", status: http.StatusBadRequest, code: CodeNameInvalid},
		{name: "double separator", path: "quay.io/org//app", status: http.StatusNotFound, code: CodeNameInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Resolve(tc.path, tc.ns, configured)
			if tc.status != 0 {
				if err == nil {
					t.Fatalf("Resolve = %+v, want error %d %s", got, tc.status, tc.code)
				}
				if StatusOf(err) != tc.status || CodeOf(err) != tc.code {
					t.Fatalf("error %v: status %d code %s, want %d %s", err, StatusOf(err), CodeOf(err), tc.status, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Upstream != tc.upstream || got.Repo != tc.repo {
				t.Fatalf("Resolve = %+v, want %s %s", got, tc.upstream, tc.repo)
			}
		})
	}
}

func TestParseReference(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in      string
		tag     string
		digest  bool
		invalid bool
	}{
		{in: "latest", tag: "latest"},
		{in: "v1.25.4-rc1", tag: "v1.25.4-rc1"},
		{in: "_underscore", tag: "_underscore"},
		{in: "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", digest: true},
		{in: "sha512:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", digest: true},
		{in: ".INVALID", invalid: true},
		{in: "-dash", invalid: true},
		{in: "sha256:short", invalid: true},
		{in: "md5:0123456789abcdef0123456789abcdef", invalid: true},
		{in: string(make([]byte, 129)), invalid: true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			ref, err := ParseReference(tc.in)
			if tc.invalid {
				if err == nil || StatusOf(err) != http.StatusBadRequest {
					t.Fatalf("ParseReference(%q) = %+v, %v; want a 400", tc.in, ref, err)
				}
				return
			}
			if err != nil || ref.Tag != tc.tag || (ref.Digest != "") != tc.digest {
				t.Fatalf("ParseReference(%q) = %+v, %v", tc.in, ref, err)
			}
		})
	}
}

func TestAcceptsAndMediaTypes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		accept []string
		mt     string
		want   bool
	}{
		{"no header", nil, MediaTypeOCIIndex, true},
		{"exact", []string{MediaTypeOCIManifest}, MediaTypeOCIManifest, true},
		{"list in one header", []string{MediaTypeDockerManifest + ", " + MediaTypeOCIIndex + ";q=0.5"}, MediaTypeOCIIndex, true},
		{"several headers", []string{MediaTypeDockerManifest, MediaTypeDockerList}, MediaTypeDockerList, true},
		{"excluded", []string{MediaTypeDockerManifest}, MediaTypeOCIManifest, false},
		{"wildcard", []string{"*/*"}, MediaTypeOCIManifest, true},
		{"schema1 as json", []string{"application/json"}, MediaTypeDockerV1Signed, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Accepts(tc.accept, tc.mt); got != tc.want {
				t.Fatalf("Accepts(%q, %s) = %v", tc.accept, tc.mt, got)
			}
		})
	}
	shapes := []struct {
		name, body, want string
	}{
		{"declared", `{"mediaType":"` + MediaTypeDockerManifest + `","config":{}}`, MediaTypeDockerManifest},
		{"oci index without mediaType", `{"schemaVersion":2,"manifests":[]}`, MediaTypeOCIIndex},
		{"oci manifest without mediaType", `{"schemaVersion":2,"config":{},"layers":[]}`, MediaTypeOCIManifest},
		{"schema1 signed", `{"schemaVersion":1,"fsLayers":[],"signatures":[{}]}`, MediaTypeDockerV1Signed},
		{"not json", `hello`, ""},
		{"not a manifest", `{"a":1}`, ""},
	}
	for _, tc := range shapes {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := ManifestMediaType([]byte(tc.body)); got != tc.want {
				t.Fatalf("ManifestMediaType = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEnvelopeHidesInternalErrors(t *testing.T) {
	t.Parallel()
	status, body := EnvelopeFor(errString("disk /secret/path exploded"))
	if status != 500 || string(body) != `{"errors":[{"code":"UNKNOWN","message":"internal error"}]}` {
		t.Fatalf("EnvelopeFor = %d %s", status, body)
	}
	status, body = EnvelopeFor(Wrap(502, CodeUnavailable, errString("dial tcp: refused"), "upstream %s unreachable", "quay.io"))
	if status != 502 || string(body) != `{"errors":[{"code":"UNAVAILABLE","message":"upstream quay.io unreachable"}]}` {
		t.Fatalf("EnvelopeFor = %d %s", status, body)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestHugeAcceptAllocatesNothing: a client's Accept header of up to the
// server's 1 MiB limit is read in place (it was split into a slice: 8 MiB
// for 500,000 empty entries).
func TestHugeAcceptAllocatesNothing(t *testing.T) {
	// Not parallel: AllocsPerRun counts every goroutine's allocations.
	accept := []string{strings.Repeat(",", 500_000) + "application/x-nothing"}
	var ok bool
	if n := testing.AllocsPerRun(20, func() { ok = Accepts(accept, MediaTypeOCIManifest) }); n != 0 {
		t.Fatalf("%v allocations per Accepts", n)
	}
	if ok {
		t.Fatal("an Accept naming another type admits an OCI manifest")
	}
}
