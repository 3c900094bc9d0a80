package warm

import (
	"errors"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// FuzzParseReference: an image name given to warm is either refused with
// a one-line ReferenceError, or normalised to a name on a canonical host
// whose repository and manifest reference the proxy accepts, and that
// parses back to itself.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"alpine", "docker://alpine:3.19", "library/alpine@sha256:" + strings.Repeat("a", 64), "quay.io/org/app:v1",
		"Quay.IO:443/org/app", "registry-1.docker.io/app", "localhost:5000/x", "UPPER/app", "app:-x", "app@sha256:abc",
		"app:v1@sha512:" + strings.Repeat("0", 128), "[::1]:5000/app", "a/" + strings.Repeat("b", 260), " ", "app\n:1",
		// Found by this target: a digest of an algorithm the proxy does
		// not serve (sha384) was accepted, and the proxy then refused it.
		"app@sha384:" + strings.Repeat("0", 96),
		// Found by this target: a host with a six-digit port was accepted,
		// and the proxy then refused the name.
		"[0]:000000/0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		named, err := ParseReference(s)
		if err != nil {
			var re *ReferenceError
			if !errors.As(err, &re) || re.Image != s || strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("ParseReference(%q): %v", s, err)
			}
			return
		}
		host, path := reference.Domain(named), reference.Path(named)
		if oci.CanonicalHost(host) != host || !oci.ValidHost(host) || !oci.ValidRepository(path) {
			t.Fatalf("ParseReference(%q) = %s: host %q, repository %q", s, named, host, path)
		}
		ref, d := manifestRef(named)
		r, err := oci.ParseReference(ref)
		if err != nil || (d != "" && r.Digest != d) {
			t.Fatalf("ParseReference(%q) = %s: the proxy refuses its manifest reference %q: %v", s, named, ref, err)
		}
		again, err := ParseReference(named.String())
		if err != nil || again.String() != named.String() {
			t.Fatalf("ParseReference(%q) = %s, which parses to %v, %v", s, named, again, err)
		}
	})
}

// FuzzReadList: an image list yields one name per line that holds one,
// trimmed, without comments.
func FuzzReadList(f *testing.F) {
	for _, s := range []string{"alpine\n# comment\n\n quay.io/org/app:v1 # pinned\r\n", "#", "", "a\rb", "a#b#c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		names, err := ReadList(strings.NewReader(s))
		if err != nil {
			return
		}
		if len(names) > strings.Count(s, "\n")+1 {
			t.Fatalf("%d names from %q", len(names), s)
		}
		for _, n := range names {
			if n == "" || n != strings.TrimSpace(n) || strings.ContainsAny(n, "#\n") || !strings.Contains(s, n) {
				t.Fatalf("name %q from %q", n, s)
			}
		}
	})
}
