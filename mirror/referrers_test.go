package mirror_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/opencontainers/go-digest"
)

const (
	sigType  = "application/vnd.example.sig+json"
	sbomType = "application/vnd.example.sbom+json"
	// emptyJSON is the OCI empty descriptor's content ("{}").
	emptyJSON = "application/vnd.oci.empty.v1+json"
)

// pusher is a test registry that takes pushes.
type pusher interface {
	PushBlob(t testing.TB, repo string, data []byte) string
	PushManifest(t testing.TB, repo, ref, mediaType string, body []byte) string
}

const ociManifest = "application/vnd.oci.image.manifest.v1+json"

// subjectImage is a pushed image that referrers point at.
type subjectImage struct {
	digest    digest.Digest
	size      int
	layer     string
	layerSize int
}

// pushSubject pushes an image tagged v1 to repo.
func pushSubject(t *testing.T, reg pusher, repo string) (subjectImage, string) {
	t.Helper()
	reg.PushBlob(t, repo, []byte("{}"))
	payload := []byte("payload of " + repo)
	s := subjectImage{layer: reg.PushBlob(t, repo, payload), layerSize: len(payload)}
	img := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":2},`+
		`"layers":[{"mediaType":"application/octet-stream","digest":%q,"size":%d}]}`,
		ociManifest, emptyJSON, digest.FromString("{}"), s.layer, s.layerSize)
	s.digest, s.size = digest.Digest(reg.PushManifest(t, repo, "v1", ociManifest, img)), len(img)
	return s, string(img)
}

// pushReferrer pushes (by digest) an artifact manifest of artifactType
// whose subject is s, and returns it as artifactType@digest and its
// descriptor. Its config has the artifact type as media type too, which
// go-containerregistry's registry reports as the artifactType.
func pushReferrer(t *testing.T, reg pusher, repo string, s subjectImage, artifactType string) (string, string) {
	t.Helper()
	body := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"artifactType":%q,`+
		`"config":{"mediaType":%q,"digest":%q,"size":2},`+
		`"layers":[{"mediaType":"application/octet-stream","digest":%q,"size":%d}],`+
		`"subject":{"mediaType":%q,"digest":%q,"size":%d}}`,
		ociManifest, artifactType, artifactType, digest.FromString("{}"), s.layer, s.layerSize, ociManifest, s.digest, s.size)
	d := reg.PushManifest(t, repo, digest.FromBytes(body).String(), ociManifest, body)
	desc := fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,"artifactType":%q,"annotations":{"org.example":"yes"}}`, ociManifest, d, len(body), artifactType)
	return artifactType + "@" + d, desc
}

// referrersAnswer is what the tests read of a referrers answer.
type referrersAnswer struct {
	MediaType string `json:"mediaType"`
	Manifests []struct {
		Digest       string `json:"digest"`
		ArtifactType string `json:"artifactType"`
	} `json:"manifests"`
}

// getReferrers GETs path and returns the referrers' digests (sorted as
// answered), failing unless the answer is a 200 image index.
func (e *env) getReferrers(path string) (*http.Response, []string) {
	e.t.Helper()
	resp, body := e.do("GET", path)
	wantStatus(e.t, resp, body, http.StatusOK, "")
	var a referrersAnswer
	if err := json.Unmarshal(body, &a); err != nil || a.MediaType != "application/vnd.oci.image.index.v1+json" ||
		resp.Header.Get("Content-Type") != a.MediaType {
		e.t.Fatalf("GET %s: not an image index (%s, %v): %s", path, resp.Header.Get("Content-Type"), err, body)
	}
	out := []string{}
	for _, m := range a.Manifests {
		out = append(out, m.ArtifactType+"@"+m.Digest)
	}
	return resp, out
}

func sameSet(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	seen := map[string]bool{}
	for _, g := range got {
		seen[g] = true
	}
	for _, w := range want {
		if !seen[w] {
			return false
		}
	}
	return true
}

// TestReferrersAPI: with an upstream that has the referrers API
// (go-containerregistry's registry), the answer lists the referrers, is
// filtered by artifactType here, is served from its record inside the
// TTL without an upstream request, shows a new referrer after the TTL,
// and is served stale with a Warning when upstream is down.
func TestReferrersAPI(t *testing.T) {
	t.Parallel()
	reg := testutil.StartOCIRegistry(t)
	subject, _ := pushSubject(t, reg, "team/app")
	attach := func(artifactType string) string {
		ref, _ := pushReferrer(t, reg, "team/app", subject, artifactType)
		return ref
	}
	sig, sbom := attach(sigType), attach(sbomType)
	reg.ResetCounts()
	e := newPlainEnv(t, "registry.test", reg.URL, time.Hour)
	path := "/v2/registry.test/team/app/referrers/" + subject.digest.String()

	resp, got := e.getReferrers(path)
	if !sameSet(got, sig, sbom) || resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("referrers = %v (X-Cache %q), want %s and %s", got, resp.Header.Get("X-Cache"), sig, sbom)
	}
	resp, got = e.getReferrers(path + "?artifactType=" + url.QueryEscape(sigType))
	if !sameSet(got, sig) || resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers = %v (OCI-Filters-Applied %q), want %s", got, resp.Header.Get("OCI-Filters-Applied"), sig)
	}
	if n := len(reg.Requests()); n != 1 {
		t.Fatalf("inside the TTL upstream saw %v, want one referrers GET", reg.Requests())
	}
	third := attach("application/vnd.example.vex+json")
	e.clock.Advance(2 * time.Hour)
	if _, got = e.getReferrers(path); !sameSet(got, sig, sbom, third) {
		t.Fatalf("after the TTL referrers = %v, want the new %s too", got, third)
	}
	reg.Stop()
	e.clock.Advance(2 * time.Hour)
	resp, got = e.getReferrers(path)
	if !sameSet(got, sig, sbom, third) || resp.Header.Get("X-Cache") != "STALE" || !strings.Contains(resp.Header.Get("Warning"), "Response is stale") {
		t.Fatalf("upstream down: referrers %v, X-Cache %q, Warning %q", got, resp.Header.Get("X-Cache"), resp.Header.Get("Warning"))
	}
}

// newPlainEnv is newEnv (inmemory storage, every tag trusted for ttl)
// for the plain-HTTP registry at endpoint served as host.
func newPlainEnv(t *testing.T, host, endpoint string, ttl time.Duration) *env {
	t.Helper()
	return newEnv(t, envOptions{tagTTL: ttl}, upstreamSpec{host: host, endpoint: endpoint})
}

// pushFallback pushes to reg an image and a referrer of each artifact
// type listed in its fallback tag sha256-<hex> (as oras attach does on a
// registry without the referrers API), and returns the image and the
// referrers as artifactType@digest.
func pushFallback(t *testing.T, reg pusher, repo string, artifactTypes ...string) (subjectImage, []string) {
	t.Helper()
	s, _ := pushSubject(t, reg, repo)
	var refs, descs []string
	for _, at := range artifactTypes {
		ref, desc := pushReferrer(t, reg, repo, s, at)
		refs, descs = append(refs, ref), append(descs, desc)
	}
	if len(artifactTypes) > 0 {
		index := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + strings.Join(descs, ",") + `]}`
		reg.PushManifest(t, repo, "sha256-"+s.digest.Encoded(), "application/vnd.oci.image.index.v1+json", []byte(index))
	}
	return s, refs
}

// TestReferrersFallbackTag: with docker-registry 2.8 upstream (no
// referrers API), the answer is built from the fallback tag sha256-<hex>:
// the referrers are listed and filtered by artifactType, a second answer
// inside the TTL asks upstream nothing, the fallback tag is cached as a
// tag, a subject without one has no referrers, a fallback tag that is no
// image index is refused, and upstream down answers stale with a Warning.
func TestReferrersFallbackTag(t *testing.T) {
	t.Parallel()
	reg := testutil.StartDockerRegistry(t)
	subject, refs := pushFallback(t, reg, "team/app", sigType, sbomType)
	lonely, _ := pushFallback(t, reg, "team/lonely")
	bad, _ := pushFallback(t, reg, "team/bad")
	_, notIndex := pushSubject(t, reg, "team/bad")
	reg.PushManifest(t, "team/bad", "sha256-"+bad.digest.Encoded(), ociManifest, []byte(notIndex))
	reg.ResetCounts()
	e := newPlainEnv(t, "legacy.test", reg.URL, time.Hour)
	path := "/v2/legacy.test/team/app/referrers/" + subject.digest.String()

	if _, got := e.getReferrers(path); !sameSet(got, refs...) {
		t.Fatalf("referrers = %v, want %v (from the fallback tag)", got, refs)
	}
	resp, got := e.getReferrers(path + "?artifactType=" + url.QueryEscape(sbomType))
	if !sameSet(got, refs[1]) || resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers = %v (OCI-Filters-Applied %q), want %s", got, resp.Header.Get("OCI-Filters-Applied"), refs[1])
	}
	resp, _ = e.do("GET", "/v2/legacy.test/team/app/manifests/sha256-"+subject.digest.Encoded(), "Accept", "application/vnd.oci.image.index.v1+json")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Cache") != "HIT" {
		t.Fatalf("the fallback tag through the mirror: %d %q, want a cached tag", resp.StatusCode, resp.Header.Get("X-Cache"))
	}
	if n := len(reg.Requests()); n != 2 {
		t.Fatalf("upstream saw %v, want the referrers API's 404 and the fallback tag's GET", reg.Requests())
	}
	if _, got := e.getReferrers("/v2/legacy.test/team/lonely/referrers/" + lonely.digest.String()); len(got) != 0 {
		t.Fatalf("a subject without a fallback tag has referrers %v", got)
	}
	resp, body := e.do("GET", "/v2/legacy.test/team/bad/referrers/"+bad.digest.String())
	wantStatus(t, resp, body, http.StatusBadGateway, "MANIFEST_INVALID")

	reg.Stop()
	e.clock.Advance(2 * time.Hour)
	resp, got = e.getReferrers(path)
	if !sameSet(got, refs...) || resp.Header.Get("X-Cache") != "STALE" || !strings.Contains(resp.Header.Get("Warning"), "Response is stale") {
		t.Fatalf("upstream down: referrers %v, X-Cache %q, Warning %q", got, resp.Header.Get("X-Cache"), resp.Header.Get("Warning"))
	}
}
