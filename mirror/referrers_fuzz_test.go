package mirror

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// FuzzFallbackTag: every digest a client may name has a fallback tag that
// is a valid tag, <alg>-<hex prefix>, at most 32+1+64 characters.
func FuzzFallbackTag(f *testing.F) {
	for _, s := range []string{
		"sha256:" + strings.Repeat("a", 64), "sha512:" + strings.Repeat("0", 128),
		"sha384:" + strings.Repeat("f", 96), "sha256:xyz", "", "md5:abc",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := oci.ParseDigest(s)
		if err != nil {
			return
		}
		tag := fallbackTag(d)
		if !oci.ValidTag(tag) || len(tag) > 97 {
			t.Fatalf("fallbackTag(%s) = %q: not a valid tag", d, tag)
		}
		enc := d.Encoded()
		if want := string(d.Algorithm()) + "-" + enc[:min(len(enc), 64)]; tag != want {
			t.Fatalf("fallbackTag(%s) = %q, want %q", d, tag, want)
		}
	})
}

// FuzzReferrersIndex: whatever upstream sends as a referrers index (API
// answer or fallback tag), parsing never panics, the answer built from it
// is an image index that parses back to the same descriptors, and
// filtering keeps exactly the descriptors of the artifact type asked for.
func FuzzReferrersIndex(f *testing.F) {
	desc := `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + digest.FromString("x").String() + `","size":3,"artifactType":"a/b"}`
	for _, s := range []string{
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + desc + `]}`,
		`{"manifests":[` + desc + `,{"digest":"nope"},7,null]}`,
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json"}`,
		`[]`, `null`, ``, `{"manifests":null}`, `{"manifests":[{"mediaType":"x","digest":"sha256:` + strings.Repeat("0", 64) + `","size":-1}]}`,
	} {
		f.Add([]byte(s), "a/b")
	}
	f.Fuzz(func(t *testing.T, body []byte, artifactType string) {
		descs, err := parseReferrers(body)
		if err != nil {
			return
		}
		out, err := referrersBody(descs)
		if err != nil {
			t.Fatalf("referrersBody: %v", err)
		}
		again, err := parseReferrers(out)
		if err != nil || len(again) != len(descs) {
			t.Fatalf("the answer %s parses to %d descriptors (%v), want %d", out, len(again), err, len(descs))
		}
		filtered, err := filterReferrers(out, artifactType)
		if err != nil {
			t.Fatalf("filterReferrers: %v", err)
		}
		kept, err := parseReferrers(filtered)
		if err != nil {
			t.Fatalf("the filtered answer %s: %v", filtered, err)
		}
		want := 0
		for _, raw := range descs {
			var d referrerDescriptor
			if json.Unmarshal(raw, &d) == nil && d.ArtifactType == artifactType {
				want++
			}
		}
		if len(kept) != want {
			t.Fatalf("filtering %s by %q kept %d, want %d", out, artifactType, len(kept), want)
		}
		if !bytes.Contains(filtered, []byte(`"mediaType":"application/vnd.oci.image.index.v1+json"`)) {
			t.Fatalf("the filtered answer is no image index: %s", filtered)
		}
	})
}
