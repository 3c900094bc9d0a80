package warm

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/distribution/reference"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// ReferenceError is an image name ParseReference refused: the name as
// given, what is wrong with it, and the reference package's error.
type ReferenceError struct {
	// Image is the name as given.
	Image string
	// Reason says which part is wrong ("invalid tag \"-x\"").
	Reason string
	// Err is github.com/distribution/reference's error (errors.Is with
	// its ErrReferenceInvalidFormat, ErrNameContainsUppercase, …).
	Err error
}

// Error implements error.
func (e *ReferenceError) Error() string { return fmt.Sprintf("image %q: %s", e.Image, e.Reason) }

// Unwrap returns the reference package's error.
func (e *ReferenceError) Unwrap() error { return e.Err }

// anchoredTag and anchoredDomain are the reference package's grammar for a
// whole tag and a whole registry host, used to say which part of a refused
// name is wrong.
var (
	anchoredTag    = regexp.MustCompile(`^(?:` + reference.TagRegexp.String() + `)$`)
	anchoredDomain = regexp.MustCompile(`^(?:` + reference.DomainRegexp.String() + `)$`)
)

// ParseReference normalises an image name the way docker does:
// "alpine" is docker.io/library/alpine:latest; a first component with '.'
// or ':', or localhost, names the registry, whose host is made canonical
// (lower case, no :443, Docker Hub's aliases folded into docker.io); a name
// with neither tag nor digest gets the tag latest; a tag given beside a
// digest is kept for display while the digest decides what is fetched. A
// docker:// prefix is accepted. Errors are *ReferenceError.
func ParseReference(s string) (reference.Named, error) {
	in := s
	s = strings.TrimPrefix(strings.TrimSpace(s), "docker://")
	if s == "" {
		return nil, &ReferenceError{Image: in, Reason: "empty image name", Err: reference.ErrNameEmpty}
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return nil, &ReferenceError{Image: in, Reason: diagnose(s), Err: err}
	}
	if d, ok := named.(reference.Digested); ok {
		// The reference package takes any registered algorithm; the proxy
		// serves sha256 and sha512 only.
		if _, err := oci.ParseDigest(d.Digest().String()); err != nil {
			return nil, &ReferenceError{Image: in, Reason: fmt.Sprintf("unsupported digest algorithm %q (want sha256 or sha512)", d.Digest().Algorithm()), Err: err}
		}
	}
	domain := reference.Domain(named)
	if !oci.LooksLikeHost(domain) {
		// The reference package takes an upper-case first component for
		// a host; docker users mean a Docker Hub organisation.
		return nil, &ReferenceError{Image: in, Reason: "repository name must be lowercase", Err: reference.ErrNameContainsUppercase}
	}
	if !oci.ValidHost(domain) {
		// The reference package takes a port of any length; the proxy
		// serves registries at a port of at most five digits.
		return nil, &ReferenceError{Image: in, Reason: fmt.Sprintf("invalid registry host %q", domain), Err: reference.ErrReferenceInvalidFormat}
	}
	if host := oci.CanonicalHost(domain); host != domain {
		if named, err = withHost(named, host); err != nil {
			return nil, &ReferenceError{Image: in, Reason: diagnose(s), Err: err}
		}
	}
	return reference.TagNameOnly(named), nil
}

// withHost is named on host: parsed again, so that a one-component name
// on Docker Hub gets library/, with its tag and digest.
func withHost(named reference.Named, host string) (reference.Named, error) {
	out, err := reference.ParseNormalizedNamed(host + "/" + reference.Path(named))
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", host, err)
	}
	if t, ok := named.(reference.Tagged); ok {
		if out, err = reference.WithTag(out, t.Tag()); err != nil {
			return nil, fmt.Errorf("tag %s: %w", t.Tag(), err)
		}
	}
	if d, ok := named.(reference.Digested); ok {
		if out, err = reference.WithDigest(out, d.Digest()); err != nil {
			return nil, fmt.Errorf("digest %s: %w", d.Digest(), err)
		}
	}
	return out, nil
}

// diagnose names the part of a refused image name that is wrong: digest,
// tag, registry host or repository path.
func diagnose(s string) string {
	name, dg, hasDigest := strings.Cut(s, "@")
	if hasDigest {
		if _, err := digest.Parse(dg); err != nil {
			return fmt.Sprintf("invalid digest %q", dg)
		}
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		if tag := name[i+1:]; !anchoredTag.MatchString(tag) {
			return fmt.Sprintf("invalid tag %q", tag)
		}
		name = name[:i]
	}
	repo := name
	if first, rest, ok := strings.Cut(name, "/"); ok && oci.LooksLikeHost(first) {
		if !anchoredDomain.MatchString(first) {
			return fmt.Sprintf("invalid registry host %q", first)
		}
		repo = rest
	}
	if strings.ToLower(repo) != repo {
		return "repository name must be lowercase"
	}
	return fmt.Sprintf("invalid repository name %q", repo)
}

// manifestRef is what an image's manifest is asked for by: its digest,
// else its tag.
func manifestRef(ref reference.Named) (string, digest.Digest) {
	if d, ok := ref.(reference.Digested); ok {
		return d.Digest().String(), d.Digest()
	}
	if t, ok := ref.(reference.Tagged); ok {
		return t.Tag(), ""
	}
	return "latest", ""
}

// ReadList reads image names, one a line; blank lines and # comments are
// skipped. The names are not parsed.
func ReadList(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading image list: %w", err)
	}
	return out, nil
}
