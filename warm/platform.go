package warm

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// ParsePlatform parses os/arch[/variant] and normalises it (see
// normalize): "linux/aarch64" is linux/arm64/v8.
func ParsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(strings.ToLower(strings.TrimSpace(s)), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return v1.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8", s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		if parts[2] == "" {
			return v1.Platform{}, fmt.Errorf("platform %q: empty variant", s)
		}
		p.Variant = parts[2]
	}
	return normalize(p), nil
}

// normalize folds architecture aliases and default variants the way
// containerd's platform matcher does, so that linux/arm64 matches an index
// entry for linux/arm64/v8. Only OS, architecture and variant are kept.
func normalize(p v1.Platform) v1.Platform {
	p = v1.Platform{OS: strings.ToLower(p.OS), Architecture: strings.ToLower(p.Architecture), Variant: strings.ToLower(p.Variant)}
	switch p.Architecture {
	case "x86_64", "x86-64":
		p.Architecture = "amd64"
		fallthrough
	case "amd64":
		if p.Variant == "v1" {
			p.Variant = ""
		}
	case "aarch64", "arm64":
		p.Architecture = "arm64"
		if p.Variant == "8" || p.Variant == "" {
			p.Variant = "v8"
		}
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	case "arm":
		switch p.Variant {
		case "", "7":
			p.Variant = "v7"
		case "5", "6", "8":
			p.Variant = "v" + p.Variant
		}
	case "i386", "i686":
		p.Architecture = "386"
	}
	return p
}

// formatPlatform is os/arch[/variant].
func formatPlatform(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// samePlatform reports whether an index entry's platform is the wanted one.
func samePlatform(want, have v1.Platform) bool {
	w, h := normalize(want), normalize(have)
	return w.OS == h.OS && w.Architecture == h.Architecture && w.Variant == h.Variant
}

// selectChildren picks the index entries to warm: every entry when all,
// else the first entry matching each wanted platform (each entry once).
// missing lists the wanted platforms the index does not have.
func selectChildren(children []v1.Descriptor, wants []v1.Platform, all bool) (picked []v1.Descriptor, missing []v1.Platform) {
	if all {
		return children, nil
	}
	seen := map[digest.Digest]bool{}
	for _, w := range wants {
		found := false
		for _, c := range children {
			if c.Platform != nil && samePlatform(w, *c.Platform) {
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

// platformNames lists the platforms of an index's entries (attestations,
// os "unknown", left out), for errors.
func platformNames(children []v1.Descriptor) []string {
	var names []string
	for _, c := range children {
		if c.Platform != nil && c.Platform.OS != "unknown" {
			names = append(names, formatPlatform(*c.Platform))
		}
	}
	return names
}

// joinPlatforms is "linux/amd64, linux/s390x".
func joinPlatforms(ps []v1.Platform) string {
	s := make([]string, 0, len(ps))
	for _, p := range ps {
		s = append(s, formatPlatform(p))
	}
	return strings.Join(s, ", ")
}
