package warm

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

// TestParseReference: image names are normalised as docker does, with the
// proxy's canonical hosts, and a refused name says which part is wrong.
func TestParseReference(t *testing.T) {
	t.Parallel()
	const dg = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cases := []struct {
		in, want string
		err      string
	}{
		{in: "alpine", want: "docker.io/library/alpine:latest"},
		{in: "alpine:3.20", want: "docker.io/library/alpine:3.20"},
		{in: "library/alpine", want: "docker.io/library/alpine:latest"},
		{in: "bitnami/redis:7", want: "docker.io/bitnami/redis:7"},
		{in: "docker.io/alpine", want: "docker.io/library/alpine:latest"},
		{in: "index.docker.io/library/alpine:edge", want: "docker.io/library/alpine:edge"},
		{in: "registry-1.docker.io/org/app", want: "docker.io/org/app:latest"},
		{in: "registry-1.docker.io/busybox:1", want: "docker.io/library/busybox:1"},
		{in: "docker://quay.io/org/app:v1", want: "quay.io/org/app:v1"},
		{in: " Quay.IO/org/app ", want: "quay.io/org/app:latest"},
		{in: "registry.local:5000/team/app", want: "registry.local:5000/team/app:latest"},
		{in: "registry.local:5000/team/app:1.0", want: "registry.local:5000/team/app:1.0"},
		{in: "localhost/app", want: "localhost/app:latest"},
		{in: "localhost:5000/app", want: "localhost:5000/app:latest"},
		{in: "ghcr.io/org/app@" + dg, want: "ghcr.io/org/app@" + dg},
		{in: "alpine:3.20@" + dg, want: "docker.io/library/alpine:3.20@" + dg},
		{in: "registry-1.docker.io/alpine:3.20@" + dg, want: "docker.io/library/alpine:3.20@" + dg},
		{in: "quay.io/org/app:443", want: "quay.io/org/app:443"},
		{in: "quay.io:443/org/app", want: "quay.io/org/app:latest"},
		{in: "", err: "empty image name"},
		{in: "Alpine", err: "repository name must be lowercase"},
		{in: "Org/app", err: "repository name must be lowercase"},
		{in: "docker.io/Library/alpine", err: "lowercase"},
		{in: "alpine:bad/tag", err: `invalid registry host "alpine:bad"`},
		{in: "alpine:-x", err: `invalid tag "-x"`},
		{in: "alpine@sha256:xyz", err: `invalid digest "sha256:xyz"`},
		{in: "bad_host.io:x/app", err: `invalid registry host "bad_host.io:x"`},
		{in: "docker.io/", err: "invalid repository name"},
		{in: "quay.io/org//app", err: `invalid repository name "org//app"`},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseReference(tc.in)
			if tc.err != "" {
				var re *ReferenceError
				if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), `"`+tc.in+`"`) {
					t.Fatalf("ParseReference(%q) = %v, %v; want a *ReferenceError naming the image and %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("ParseReference(%q) = %v, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	t.Run("the digest decides what is fetched", func(t *testing.T) {
		t.Parallel()
		r, err := ParseReference("alpine:3.20@" + dg)
		if err != nil {
			t.Fatal(err)
		}
		ref, want := manifestRef(r)
		if ref != dg || want.String() != dg || reference.Path(r) != "library/alpine" || reference.Domain(r) != "docker.io" {
			t.Fatalf("manifestRef = %q, %q; path %q", ref, want, reference.Path(r))
		}
	})
	t.Run("the reference package's error is kept", func(t *testing.T) {
		t.Parallel()
		if _, err := ParseReference("alpine:-x"); !errors.Is(err, reference.ErrReferenceInvalidFormat) {
			t.Fatalf("err = %v, want one wrapping reference.ErrReferenceInvalidFormat", err)
		}
	})
}

// TestReadList: image lists skip blank lines and # comments.
func TestReadList(t *testing.T) {
	t.Parallel()
	got, err := ReadList(strings.NewReader("# images\nalpine # the small one\n\n  quay.io/org/app:v1\n#busybox\n"))
	if err != nil || !slices.Equal(got, []string{"alpine", "quay.io/org/app:v1"}) {
		t.Fatalf("ReadList = %q, %v", got, err)
	}
}
