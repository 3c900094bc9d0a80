package warm

import (
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestParsePlatform: --platform values are normalised like containerd's
// matcher, so that what users type matches what indexes list.
func TestParsePlatform(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want, err string }{
		{in: "linux/amd64", want: "linux/amd64"},
		{in: "Linux/x86_64", want: "linux/amd64"},
		{in: "linux/amd64/v1", want: "linux/amd64"},
		{in: "linux/arm64", want: "linux/arm64/v8"},
		{in: "linux/aarch64", want: "linux/arm64/v8"},
		{in: "linux/arm", want: "linux/arm/v7"},
		{in: "linux/arm/6", want: "linux/arm/v6"},
		{in: "linux/arm/v6", want: "linux/arm/v6"},
		{in: "linux/armhf", want: "linux/arm/v7"},
		{in: "linux/armel", want: "linux/arm/v6"},
		{in: "linux/i686", want: "linux/386"},
		{in: "linux/386", want: "linux/386"},
		{in: "windows/amd64", want: "windows/amd64"},
		{in: "linux", err: "os/arch"},
		{in: "linux/", err: "os/arch"},
		{in: "linux/arm/", err: "empty variant"},
		{in: "a/b/c/d", err: "os/arch"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePlatform(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParsePlatform(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || formatPlatform(got) != tc.want {
				t.Fatalf("ParsePlatform(%q) = %q, %v; want %q", tc.in, formatPlatform(got), err, tc.want)
			}
		})
	}
}

// TestSelectChildren: the first index entry of each wanted platform is
// warmed, each once; "all" takes every entry; missing platforms are named.
func TestSelectChildren(t *testing.T) {
	t.Parallel()
	names := []string{"amd64", "arm64", "armv7", "armv6", "att", "noplat"}
	child := func(name, os, arch, variant string) v1.Descriptor {
		c := v1.Descriptor{Digest: digest.FromString(name)}
		if os != "" {
			c.Platform = &v1.Platform{OS: os, Architecture: arch, Variant: variant}
		}
		return c
	}
	index := []v1.Descriptor{
		child("amd64", "linux", "amd64", ""),
		child("arm64", "linux", "arm64", "v8"),
		child("armv7", "linux", "arm", "v7"),
		child("armv6", "linux", "arm", "v6"),
		child("att", "unknown", "unknown", ""),
		child("noplat", "", "", ""),
	}
	p := func(s string) v1.Platform {
		pl, err := ParsePlatform(s)
		if err != nil {
			t.Fatal(err)
		}
		return pl
	}
	cases := []struct {
		name    string
		wants   []v1.Platform
		all     bool
		picked  []string
		missing []string
	}{
		{"default amd64", []v1.Platform{p("linux/amd64")}, false, []string{"amd64"}, nil},
		{"arm64 without variant matches v8", []v1.Platform{p("linux/arm64")}, false, []string{"arm64"}, nil},
		{"arm defaults to v7", []v1.Platform{p("linux/arm")}, false, []string{"armv7"}, nil},
		{"arm v6 exactly", []v1.Platform{p("linux/arm/v6")}, false, []string{"armv6"}, nil},
		{"two platforms in order", []v1.Platform{p("linux/arm64"), p("linux/amd64")}, false, []string{"arm64", "amd64"}, nil},
		{"the same platform twice once", []v1.Platform{p("linux/amd64"), p("linux/x86_64")}, false, []string{"amd64"}, nil},
		{"missing platform", []v1.Platform{p("linux/s390x"), p("linux/amd64")}, false, []string{"amd64"}, []string{"linux/s390x"}},
		{"all takes every entry", nil, true, names, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			picked, missing := selectChildren(index, tc.wants, tc.all)
			var got []string
			for _, c := range picked {
				for _, n := range names {
					if c.Digest == digest.FromString(n) {
						got = append(got, n)
					}
				}
			}
			var miss []string
			for _, m := range missing {
				miss = append(miss, formatPlatform(m))
			}
			if !slices.Equal(got, tc.picked) || !slices.Equal(miss, tc.missing) {
				t.Fatalf("picked %v missing %v; want %v and %v", got, miss, tc.picked, tc.missing)
			}
		})
	}
	t.Run("the error lists the index's platforms", func(t *testing.T) {
		t.Parallel()
		err := &PlatformError{Missing: []v1.Platform{p("linux/s390x")}, Available: platformNames(index)}
		if want := "no manifest for linux/s390x in the index (it has linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6)"; err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	})
}
