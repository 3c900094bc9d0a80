package oci

import (
	// go-digest's sha256 and sha512 are available only when their hash
	// packages are linked (crypto.Hash.Available); ParseDigest accepts
	// both, so both are linked wherever digests are parsed, not left to
	// the chance of another import doing it.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"net/http"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// DockerHub is the canonical name of Docker Hub as an upstream; DockerHubAPI
// is the host its API is served from.
const (
	DockerHub    = "docker.io"
	DockerHubAPI = "registry-1.docker.io"
)

var (
	// repoRe is the repository name grammar of the distribution spec.
	repoRe = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*$`)
	// tagRe is the tag grammar of the distribution spec.
	tagRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	// hostRe accepts a DNS name or IPv4 address with an optional port, or
	// a bracketed IPv6 address with an optional port.
	hostRe = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$`)
)

// maxRepoLen is the longest repository name accepted (distribution: 255
// including the registry host).
const maxRepoLen = 255

// ValidRepository reports whether repo is a valid repository path.
func ValidRepository(repo string) bool {
	return len(repo) <= maxRepoLen && repoRe.MatchString(repo)
}

// ValidTag reports whether tag is a valid tag.
func ValidTag(tag string) bool { return tagRe.MatchString(tag) }

// ValidHost reports whether h is a syntactically valid registry host
// (with optional port).
func ValidHost(h string) bool { return hostRe.MatchString(h) }

// IsDockerHub reports whether host is one of Docker Hub's names.
func IsDockerHub(host string) bool {
	switch strings.ToLower(host) {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return true
	}
	return false
}

// CanonicalHost lower-cases host, strips the default HTTPS port and folds
// Docker Hub's aliases into DockerHub.
func CanonicalHost(host string) string {
	h := strings.ToLower(strings.TrimSuffix(host, ":443"))
	if IsDockerHub(h) {
		return DockerHub
	}
	return h
}

// LooksLikeHost reports whether a first path element names a registry host
// rather than a Docker Hub organisation: it contains '.' or ':' or is
// "localhost" (the rule of docker/distribution's reference package).
func LooksLikeHost(elem string) bool {
	return strings.ContainsAny(elem, ".:") || elem == "localhost" || strings.HasPrefix(elem, "localhost:")
}

// NamespaceFor returns the default path alias of a registry host: the host
// with ':' replaced by '_', since a reference path element cannot hold ':'.
func NamespaceFor(host string) string {
	return strings.ReplaceAll(CanonicalHost(host), ":", "_")
}

// ParseDigest parses and validates a digest, accepting sha256 and sha512
// (lower-case hex of 64 and 128 digits). Anything else, other algorithms
// included, is a 400 DIGEST_INVALID error.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", Wrap(http.StatusBadRequest, CodeDigestInvalid, err, "invalid digest %q", s)
	}
	switch d.Algorithm() {
	case digest.SHA256, digest.SHA512:
	default:
		return "", Errorf(http.StatusBadRequest, CodeDigestInvalid, "unsupported digest algorithm %q", d.Algorithm())
	}
	return d, nil
}

// Reference is a manifest reference: a tag or a digest.
type Reference struct {
	Tag    string
	Digest digest.Digest
}

// String returns the tag or digest.
func (r Reference) String() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// ParseReference parses the <reference> part of a manifest URL.
func ParseReference(s string) (Reference, error) {
	if strings.Contains(s, ":") {
		d, err := ParseDigest(s)
		if err != nil {
			return Reference{}, err
		}
		return Reference{Digest: d}, nil
	}
	if !ValidTag(s) {
		return Reference{}, Errorf(http.StatusBadRequest, CodeTagInvalid, "invalid tag %q", s)
	}
	return Reference{Tag: s}, nil
}
