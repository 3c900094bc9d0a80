package mirror

import (
	"mime"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// FuzzFallbackSubject: a tag pushed through the shim is read as a
// referrers fallback tag exactly when it is the one fallbackTag writes for
// a digest: the algorithm and the hex it names are that digest's.
func FuzzFallbackSubject(f *testing.F) {
	for _, s := range []string{
		fallbackTag(digest.FromString("x")), fallbackTag(digest.SHA512.FromString("x")), "sha256-abc", "latest", "sha256-" + strings.Repeat("A", 64),
		"sha384-" + strings.Repeat("0", 64), "md5-" + strings.Repeat("0", 32), "sha256-" + strings.Repeat("0", 65), "-", "sha256--",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tag string) {
		alg, hex, ok := fallbackSubject(tag)
		if !ok {
			return
		}
		if !oci.ValidTag(tag) || !alg.Available() {
			t.Fatalf("fallbackSubject(%q) = %s, %s: not a tag of an available algorithm", tag, alg, hex)
		}
		// The digest the tag names starts with hex; any completion of it
		// to a full digest has this very fallback tag.
		full := digest.NewDigestFromEncoded(alg, hex+strings.Repeat("0", alg.Size()*2-len(hex)))
		if full.Validate() != nil || fallbackTag(full) != tag {
			t.Fatalf("fallbackSubject(%q) = %s, %s; the tag of %s is %q", tag, alg, hex, full, fallbackTag(full))
		}
	})
}

// FuzzManifestType: whatever Content-Type and body an upstream sends for
// a manifest, the media type the proxy stores and serves as Content-Type
// is empty (refused: not a manifest) or a plain type/subtype, without
// parameters, control characters or more than 255 bytes.
func FuzzManifestType(f *testing.F) {
	for _, seed := range []struct{ ct, body string }{
		{oci.MediaTypeOCIManifest, `{"schemaVersion":2,"config":{}}`}, {"application/json", `{"schemaVersion":2,"manifests":[]}`},
		{"", `{"schemaVersion":1,"fsLayers":[],"signatures":[{}]}`}, {"text/plain; charset=utf-8", `{"config":{}}`},
		{oci.MediaTypeDockerManifest + "; charset=utf-8", `  {}`}, {"application/octet-stream", `{"mediaType":"a/b"}`},
		{"application/vnd.evil", `<html>`}, {"application/json", `{"mediaType":""}`}, {"bogus", `{"config":{}}`},
		// Found by this target: the mediaType a manifest declares was
		// taken verbatim, however long and whatever it held.
		{"application/json", `{"mediaType":"a/b\r\nX-Evil: 1"}`}, {"", `{"mediaType":"` + strings.Repeat("a", 300) + `/b"}`},
		{"", `{"mediaType":"application/vnd.oci.image.manifest.v1+json; x=1"}`}, {"", `{"mediaType":"nonsense"}`},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		for what, mt := range map[string]string{"manifestType": manifestType(contentType, body), "ManifestMediaType": oci.ManifestMediaType(body)} {
			if mt == "" {
				continue
			}
			parsed, params, err := mime.ParseMediaType(mt)
			if err != nil || len(params) > 0 || !strings.EqualFold(parsed, mt) || len(mt) > 255 || strings.Count(mt, "/") != 1 {
				t.Fatalf("%s(%q, %q) = %q: not a plain media type (%v)", what, contentType, body, mt, err)
			}
		}
	})
}
