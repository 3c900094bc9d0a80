package oci

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

func TestParseDigest(t *testing.T) {
	t.Parallel()
	s256 := sha256.Sum256([]byte("a"))
	s512 := sha512.Sum512([]byte("a"))
	hex256, hex512 := hex.EncodeToString(s256[:]), hex.EncodeToString(s512[:])
	for _, ok := range []string{"sha256:" + hex256, "sha512:" + hex512} {
		d, err := ParseDigest(ok)
		if err != nil || d.String() != ok {
			t.Errorf("ParseDigest(%q) = %q, %v", ok, d, err)
		}
		if err == nil && !d.Algorithm().Available() {
			t.Errorf("ParseDigest(%q): algorithm %s is not linked", ok, d.Algorithm())
		}
	}
	for _, bad := range []string{
		"sha512:xyz",
		"sha512:" + hex512[:127],
		"sha512:" + hex512 + "0",
		"sha512:" + strings.ToUpper(hex512),
		"sha512:" + hex256,
		"sha256:" + hex256[:63],
		"sha256:" + hex512,
		"sha512:",
		"md5:0cc175b9c0f1b6a831c399e269772661",
		"sha384:" + hex512[:96],
		"blake3:" + hex256,
		":" + hex256,
		hex256,
		"",
	} {
		d, err := ParseDigest(bad)
		if err == nil || StatusOf(err) != http.StatusBadRequest || CodeOf(err) != CodeDigestInvalid {
			t.Errorf("ParseDigest(%q) = %q, %v; want 400 %s", bad, d, err, CodeDigestInvalid)
		}
	}
}

// acceptedDigest is what ParseDigest may accept, and all of it.
var acceptedDigest = regexp.MustCompile(`^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$`)

// FuzzParseDigest: a digest from a URL or an upstream header is accepted
// exactly when it is a lower-case sha256 or sha512 digest, and a refusal
// is always 400 DIGEST_INVALID.
func FuzzParseDigest(f *testing.F) {
	s512 := sha512.Sum512(nil)
	for _, s := range []string{
		"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"sha512:" + hex.EncodeToString(s512[:]),
		"sha512:xyz", "md5:0cc175b9c0f1b6a831c399e269772661", "sha256+b64:abc", "", ":",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			if StatusOf(err) != http.StatusBadRequest || CodeOf(err) != CodeDigestInvalid || d != "" {
				t.Fatalf("ParseDigest(%q) = %q, %v; want 400 %s", s, d, err, CodeDigestInvalid)
			}
			if acceptedDigest.MatchString(s) {
				t.Fatalf("ParseDigest(%q) refused a valid digest: %v", s, err)
			}
			return
		}
		if !acceptedDigest.MatchString(s) || d.String() != s || !d.Algorithm().Available() {
			t.Fatalf("ParseDigest(%q) accepted %q", s, d)
		}
	})
}
