package oci

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzResolve: whatever repository path and ?ns= a client sends, a route
// names a configured upstream and a repository that is valid on its own
// (re-validates, at most 255 characters, no empty, dot or '_'-led
// component that could reach storage's own directories), and a refusal is
// 400 or 404 NAME_INVALID or 403 DENIED, never anything else.
func FuzzResolve(f *testing.F) {
	for _, seed := range []struct{ name, ns string }{
		{"alpine", ""}, {"bitnami/redis", ""}, {"docker.io/alpine", ""}, {"quay.io/org/app", ""},
		{"registry.local_5000/team/app", ""}, {"localhost_5000/app", ""}, {"org/app", "quay.io"},
		{"team/app", "registry.local:5000"}, {"alpine", "registry-1.docker.io"}, {"quay.io/app", "docker.io"},
		{"ghcr.io/org/app", ""}, {"org/app", "ghcr.io"}, {"169.254.169.254/latest", ""}, {"app", "a b"},
		{"app", "quay.io/x"}, {"quay.io/org//app", ""}, {"../../etc/passwd", ""}, {"quay.io/../x", ""},
		{"quay.io/_links/x", ""}, {"%2e%2e/x", ""}, {"QUAY.IO/org/app", ""}, {"quay.io:443/org/app", ""},
		{"x", "[::1]:5000"},
		// Found by this target: a one-element Docker Hub name of 248 to 255
		// characters became library/<name>, past the 255 allowed.
		{strings.Repeat("a", 250), ""}, {strings.Repeat("a", 250), "docker.io"}, {strings.Repeat("b", 247), ""},
	} {
		f.Add(seed.name, seed.ns)
	}
	f.Fuzz(func(t *testing.T, name, ns string) {
		route, err := Resolve(name, ns, configured)
		if err != nil {
			checkResolveError(t, name, ns, err)
			return
		}
		if up, ok := configured(route.Upstream); !ok || up != route.Upstream {
			t.Fatalf("Resolve(%q, %q) = %+v: not a configured upstream", name, ns, route)
		}
		if !ValidRepository(route.Repo) {
			t.Fatalf("Resolve(%q, %q) = %+v: the repository does not re-validate", name, ns, route)
		}
		for _, c := range strings.Split(route.Repo, "/") {
			if c == "" || c == "." || c == ".." || strings.HasPrefix(c, "_") {
				t.Fatalf("Resolve(%q, %q) = %+v: component %q", name, ns, route, c)
			}
		}
		// The repository is the client's path, less a host prefix, plus
		// library/ for a one-element Docker Hub name.
		if !strings.HasSuffix(name, strings.TrimPrefix(route.Repo, "library/")) {
			t.Fatalf("Resolve(%q, %q) = %+v: the repository is not from the path", name, ns, route)
		}
		if ns != "" {
			if up, _ := configured(ns); up != route.Upstream || !ValidHost(ns) {
				t.Fatalf("Resolve(%q, %q) = %+v: not the upstream ns named", name, ns, route)
			}
		}
	})
}

// checkResolveError asserts that a refusal of Resolve is one a client may
// see: 400 NAME_INVALID for a bad ns, 404 NAME_INVALID, 403 DENIED.
func checkResolveError(t *testing.T, name, ns string, err error) {
	t.Helper()
	status, code := StatusOf(err), CodeOf(err)
	switch {
	case status == http.StatusBadRequest && code == CodeNameInvalid:
		if ns == "" || ValidHost(ns) {
			t.Fatalf("Resolve(%q, %q): 400 for a valid ns: %v", name, ns, err)
		}
	case status == http.StatusNotFound && code == CodeNameInvalid,
		status == http.StatusForbidden && code == CodeDenied:
	default:
		t.Fatalf("Resolve(%q, %q): %d %s: %v", name, ns, status, code, err)
	}
}

// FuzzParseReference: a manifest reference is a valid tag or an accepted
// digest, parses back from its String, and a refusal is 400 TAG_INVALID
// or DIGEST_INVALID.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"latest", "v1.2.3", "_x", "-x", ".x", "a:b", "sha256:" + strings.Repeat("a", 64),
		"sha256:" + strings.Repeat("A", 64), "sha512:" + strings.Repeat("0", 128), strings.Repeat("t", 128),
		strings.Repeat("t", 129), "", "a/b", "a\nb", "sha384:" + strings.Repeat("0", 96),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseReference(s)
		if err != nil {
			if StatusOf(err) != http.StatusBadRequest || (CodeOf(err) != CodeTagInvalid && CodeOf(err) != CodeDigestInvalid) {
				t.Fatalf("ParseReference(%q): %d %s: %v", s, StatusOf(err), CodeOf(err), err)
			}
			return
		}
		if (ref.Tag == "") == (ref.Digest == "") {
			t.Fatalf("ParseReference(%q) = %+v: want a tag or a digest", s, ref)
		}
		if ref.Tag != "" && (!ValidTag(ref.Tag) || len(ref.Tag) > 128 || strings.ContainsAny(ref.Tag, "/:")) {
			t.Fatalf("ParseReference(%q) = %+v: an invalid tag", s, ref)
		}
		if ref.Digest != "" {
			if _, err := ParseDigest(ref.Digest.String()); err != nil {
				t.Fatalf("ParseReference(%q) = %+v: %v", s, ref, err)
			}
		}
		if again, err := ParseReference(ref.String()); err != nil || again != ref || ref.String() != s {
			t.Fatalf("ParseReference(%q) = %+v, String %q parses to %+v, %v", s, ref, ref.String(), again, err)
		}
	})
}

// FuzzHost: a registry host a client or the configuration names is valid
// only as host[:port] without path, query, space or control characters;
// its canonical form is valid too and canonical already (idempotent), and
// a ':' never survives into its namespace alias.
func FuzzHost(f *testing.F) {
	for _, s := range []string{
		"docker.io", "REGISTRY-1.docker.io:443", "quay.io:443", "registry.local:5000", "[::1]:5000", "[::1]:443",
		"10.0.0.1", "localhost", "a..b", "-a", "a-", "a/b", "a b", "[::1", "::1", "a:65536", "a:", "a:0443", "é.test",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		if !ValidHost(h) {
			return
		}
		if strings.ContainsAny(h, "/?#@ \t\r\n\x00\\%") || strings.Count(h, ":") > 1 && !strings.HasPrefix(h, "[") {
			t.Fatalf("ValidHost(%q) accepted", h)
		}
		c := CanonicalHost(h)
		if !ValidHost(c) || CanonicalHost(c) != c || c != strings.ToLower(c) {
			t.Fatalf("CanonicalHost(%q) = %q: not valid and canonical", h, c)
		}
		if IsDockerHub(c) != (c == DockerHub) {
			t.Fatalf("CanonicalHost(%q) = %q, IsDockerHub %v", h, c, IsDockerHub(c))
		}
		if ns := NamespaceFor(h); strings.Contains(ns, ":") || ns != strings.ReplaceAll(c, ":", "_") {
			t.Fatalf("NamespaceFor(%q) = %q", h, ns)
		}
	})
}

// FuzzAccepts: a client's Accept header admits a media type it names
// (in any case, with parameters), admits everything with */* or without
// any media range, and reads the same split over header lines or joined.
func FuzzAccepts(f *testing.F) {
	for _, seed := range []struct{ accept, mt string }{
		{MediaTypeOCIManifest, MediaTypeOCIManifest}, {MediaTypeDockerManifest + "; q=0.5", MediaTypeOCIManifest},
		{"*/*", MediaTypeOCIIndex}, {"", MediaTypeOCIIndex}, {" , ;q=1", MediaTypeOCIIndex},
		{"application/json", MediaTypeDockerV1Signed}, {"APPLICATION/VND.OCI.IMAGE.MANIFEST.V1+JSON", MediaTypeOCIManifest},
	} {
		f.Add(seed.accept, seed.mt)
	}
	f.Fuzz(func(t *testing.T, accept, mt string) {
		lines := strings.Split(accept, "\n")
		got := Accepts(lines, mt)
		if joined := Accepts([]string{strings.Join(lines, ",")}, mt); joined != got {
			t.Fatalf("Accepts(%q, %q) = %v split, %v joined", lines, mt, got, joined)
		}
		named := mt != "" && !strings.ContainsAny(mt, ",;") && strings.TrimSpace(mt) == mt
		if named && !Accepts(append(lines, mt+";q=0.1"), mt) {
			t.Fatalf("Accepts(%q + %q, %q) = false", lines, mt, mt)
		}
		if !Accepts(append(lines, "*/*"), mt) || !Accepts(nil, mt) {
			t.Fatalf("*/* or no Accept refused %q", mt)
		}
	})
}
