package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// imageRef is an image name normalised like docker does: "alpine" is
// docker.io/library/alpine:latest.
type imageRef struct {
	// Host is the canonical registry host ("docker.io", "quay.io",
	// "registry.local:5000").
	Host string
	// Repo is the repository path ("library/alpine").
	Repo string
	// Tag is the tag; "latest" when neither a tag nor a digest was given.
	Tag string
	// Digest pins the manifest; it wins over Tag when both are given.
	Digest digest.Digest
}

// String is the full normalised name: host/repo[:tag][@digest].
func (r imageRef) String() string {
	s := r.Host + "/" + r.Repo
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// reference is what the manifest is asked for by: the digest or the tag.
func (r imageRef) reference() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// parseImage normalises an image name: an optional registry host (a first
// component with '.' or ':', or localhost), Docker Hub otherwise, with
// library/ for one-component names; an optional :tag (default latest
// unless a digest is given) and @digest. A docker:// prefix is accepted.
func parseImage(s string) (imageRef, error) {
	orig := s
	s = strings.TrimPrefix(strings.TrimSpace(s), "docker://")
	if s == "" {
		return imageRef{}, errors.New("empty image name")
	}
	var r imageRef
	if name, dg, ok := strings.Cut(s, "@"); ok {
		d, err := oci.ParseDigest(dg)
		if err != nil {
			return imageRef{}, fmt.Errorf("image %q: invalid digest %q", orig, dg)
		}
		r.Digest, s = d, name
	}
	if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, '/') {
		r.Tag, s = s[i+1:], s[:i]
		if !oci.ValidTag(r.Tag) {
			return imageRef{}, fmt.Errorf("image %q: invalid tag %q", orig, r.Tag)
		}
	}
	first, rest, ok := strings.Cut(s, "/")
	if ok && oci.LooksLikeHost(first) {
		if !oci.ValidHost(first) {
			return imageRef{}, fmt.Errorf("image %q: invalid registry host %q", orig, first)
		}
		r.Host, r.Repo = oci.CanonicalHost(first), rest
	} else {
		r.Host, r.Repo = oci.DockerHub, s
	}
	if r.Host == oci.DockerHub && !strings.Contains(r.Repo, "/") {
		r.Repo = "library/" + r.Repo
	}
	if !oci.ValidRepository(r.Repo) {
		if strings.ToLower(r.Repo) != r.Repo {
			return imageRef{}, fmt.Errorf("image %q: repository name must be lowercase", orig)
		}
		return imageRef{}, fmt.Errorf("image %q: invalid repository name %q", orig, r.Repo)
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

// platform is os/architecture[/variant].
type platform struct {
	OS, Arch, Variant string
}

func (p platform) String() string {
	s := p.OS + "/" + p.Arch
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// parsePlatform parses os/arch[/variant], folding common aliases
// (x86_64 → amd64, aarch64 → arm64).
func parsePlatform(s string) (platform, error) {
	parts := strings.Split(strings.ToLower(strings.TrimSpace(s)), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return platform{}, fmt.Errorf("platform %q: want os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8", s)
	}
	p := platform{OS: parts[0], Arch: parts[1]}
	if len(parts) == 3 {
		if parts[2] == "" {
			return platform{}, fmt.Errorf("platform %q: empty variant", s)
		}
		p.Variant = parts[2]
	}
	return p.normal(), nil
}

// normal folds architecture aliases and default variants the way
// containerd's platform matcher does, so that linux/arm64 matches an index
// entry for linux/arm64/v8.
func (p platform) normal() platform {
	p.OS, p.Arch, p.Variant = strings.ToLower(p.OS), strings.ToLower(p.Arch), strings.ToLower(p.Variant)
	switch p.Arch {
	case "x86_64", "x86-64":
		p.Arch = "amd64"
		fallthrough
	case "amd64":
		if p.Variant == "v1" {
			p.Variant = ""
		}
	case "aarch64", "arm64":
		p.Arch = "arm64"
		if p.Variant == "8" || p.Variant == "" {
			p.Variant = "v8"
		}
	case "armhf":
		p.Arch, p.Variant = "arm", "v7"
	case "armel":
		p.Arch, p.Variant = "arm", "v6"
	case "arm":
		switch p.Variant {
		case "", "7":
			p.Variant = "v7"
		case "5", "6", "8":
			p.Variant = "v" + p.Variant
		}
	case "i386", "i686":
		p.Arch = "386"
	}
	return p
}

// platformMatches reports whether an index entry's platform is want.
func platformMatches(want, have platform) bool {
	return want.normal() == have.normal()
}

// childDescriptor is one entry of an index.
type childDescriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	} `json:"platform"`
}

func (c childDescriptor) platform() (platform, bool) {
	if c.Platform == nil {
		return platform{}, false
	}
	return platform{OS: c.Platform.OS, Arch: c.Platform.Architecture, Variant: c.Platform.Variant}, true
}

// selectChildren picks the index entries to warm: every entry when all,
// else the first entry matching each wanted platform. missing lists the
// wanted platforms the index does not have.
func selectChildren(children []childDescriptor, wants []platform, all bool) (picked []childDescriptor, missing []platform) {
	if all {
		return children, nil
	}
	seen := map[digest.Digest]bool{}
	for _, w := range wants {
		found := false
		for _, c := range children {
			if p, ok := c.platform(); ok && platformMatches(w, p) {
				found = true
				if !seen[c.Digest] {
					seen[c.Digest] = true
					picked = append(picked, c)
				}
				break
			}
		}
		if !found {
			missing = append(missing, w)
		}
	}
	return picked, missing
}

// platformNames lists the platforms of an index's entries, for errors.
func platformNames(children []childDescriptor) string {
	var names []string
	for _, c := range children {
		if p, ok := c.platform(); ok && p.OS != "unknown" {
			names = append(names, p.String())
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
