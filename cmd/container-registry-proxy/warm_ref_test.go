package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestParseImage(t *testing.T) {
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
		{in: "docker://quay.io/org/app:v1", want: "quay.io/org/app:v1"},
		{in: "Quay.IO/org/app", want: "quay.io/org/app:latest"},
		{in: "registry.local:5000/team/app", want: "registry.local:5000/team/app:latest"},
		{in: "registry.local:5000/team/app:1.0", want: "registry.local:5000/team/app:1.0"},
		{in: "localhost/app", want: "localhost/app:latest"},
		{in: "localhost:5000/app", want: "localhost:5000/app:latest"},
		{in: "ghcr.io/org/app@" + dg, want: "ghcr.io/org/app@" + dg},
		{in: "alpine:3.20@" + dg, want: "docker.io/library/alpine:3.20@" + dg},
		{in: "quay.io/org/app:443", want: "quay.io/org/app:443"},
		{in: "quay.io:443/org/app", want: "quay.io/org/app:latest"},
		{in: "", err: "empty"},
		{in: "Alpine", err: "lowercase"},
		{in: "alpine:bad/tag", err: "invalid registry host"},
		{in: "alpine:-x", err: "invalid tag"},
		{in: "alpine@sha256:xyz", err: "invalid digest"},
		{in: "bad_host.io:x/app", err: "invalid registry host"},
		{in: "docker.io/", err: "invalid repository"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseImage(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseImage(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("parseImage(%q) = %q, %v; want %q", tc.in, got.String(), err, tc.want)
			}
		})
	}
	t.Run("digest wins over tag", func(t *testing.T) {
		r, err := parseImage("alpine:3.20@" + dg)
		if err != nil || r.reference() != dg || r.Tag != "3.20" || r.Digest != digest.Digest(dg) {
			t.Fatalf("%+v %v", r, err)
		}
	})
}

func TestParsePlatform(t *testing.T) {
	cases := []struct{ in, want, err string }{
		{in: "linux/amd64", want: "linux/amd64"},
		{in: "Linux/x86_64", want: "linux/amd64"},
		{in: "linux/amd64/v1", want: "linux/amd64"},
		{in: "linux/arm64", want: "linux/arm64/v8"},
		{in: "linux/aarch64", want: "linux/arm64/v8"},
		{in: "linux/arm", want: "linux/arm/v7"},
		{in: "linux/arm/v6", want: "linux/arm/v6"},
		{in: "linux/armhf", want: "linux/arm/v7"},
		{in: "linux/386", want: "linux/386"},
		{in: "windows/amd64", want: "windows/amd64"},
		{in: "linux", err: "os/arch"},
		{in: "linux/", err: "os/arch"},
		{in: "linux/arm/", err: "empty variant"},
		{in: "a/b/c/d", err: "os/arch"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parsePlatform(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parsePlatform(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("parsePlatform(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestSelectChildren(t *testing.T) {
	child := func(d, os, arch, variant string) childDescriptor {
		c := childDescriptor{Digest: digest.FromString(d)}
		if os != "" {
			c.Platform = &struct {
				OS           string `json:"os"`
				Architecture string `json:"architecture"`
				Variant      string `json:"variant"`
			}{os, arch, variant}
		}
		return c
	}
	index := []childDescriptor{
		child("amd64", "linux", "amd64", ""),
		child("arm64", "linux", "arm64", "v8"),
		child("armv7", "linux", "arm", "v7"),
		child("armv6", "linux", "arm", "v6"),
		child("att", "unknown", "unknown", ""),
		child("noplat", "", "", ""),
	}
	p := func(s string) platform {
		pl, err := parsePlatform(s)
		if err != nil {
			t.Fatal(err)
		}
		return pl
	}
	cases := []struct {
		name    string
		wants   []platform
		all     bool
		picked  []string
		missing []string
	}{
		{"default amd64", []platform{p("linux/amd64")}, false, []string{"amd64"}, nil},
		{"arm64 without variant matches v8", []platform{p("linux/arm64")}, false, []string{"arm64"}, nil},
		{"arm defaults to v7", []platform{p("linux/arm")}, false, []string{"armv7"}, nil},
		{"arm v6 exactly", []platform{p("linux/arm/v6")}, false, []string{"armv6"}, nil},
		{"two platforms in order", []platform{p("linux/arm64"), p("linux/amd64")}, false, []string{"arm64", "amd64"}, nil},
		{"the same platform twice once", []platform{p("linux/amd64"), p("linux/x86_64")}, false, []string{"amd64"}, nil},
		{"missing platform", []platform{p("linux/s390x"), p("linux/amd64")}, false, []string{"amd64"}, []string{"linux/s390x"}},
		{"all takes every entry", nil, true, []string{"amd64", "arm64", "armv7", "armv6", "att", "noplat"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			picked, missing := selectChildren(index, tc.wants, tc.all)
			var got []string
			for _, c := range picked {
				for _, n := range []string{"amd64", "arm64", "armv7", "armv6", "att", "noplat"} {
					if c.Digest == digest.FromString(n) {
						got = append(got, n)
					}
				}
			}
			var miss []string
			for _, m := range missing {
				miss = append(miss, m.String())
			}
			if !slices.Equal(got, tc.picked) || !slices.Equal(miss, tc.missing) {
				t.Fatalf("picked %v missing %v; want %v and %v", got, miss, tc.picked, tc.missing)
			}
		})
	}
	if got := platformNames(index); got != "linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6" {
		t.Errorf("platformNames = %q", got)
	}
}
