package oci

import (
	"encoding/json"
	"regexp"
	"strings"
)

// Manifest media types the proxy understands.
const (
	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerV1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	MediaTypeDockerV1       = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeOctetStream    = "application/octet-stream"
)

// ManifestAccept is the Accept header sent upstream for manifests: every
// type a client may ask for, so the cached object serves every client.
var ManifestAccept = strings.Join([]string{
	MediaTypeOCIIndex,
	MediaTypeOCIManifest,
	MediaTypeDockerList,
	MediaTypeDockerManifest,
	MediaTypeDockerV1Signed,
	MediaTypeDockerV1,
}, ", ")

// MaxManifestSize bounds every manifest body read from upstream (4 MiB,
// the limit registries enforce on push).
const MaxManifestSize = 4 << 20

// MaxSmallBody bounds token and error bodies read from upstream.
const MaxSmallBody = 64 << 10

// Descriptor names a piece of content: its media type, digest and size.
type Descriptor struct {
	MediaType string `json:"mediaType,omitempty"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// ManifestMediaType returns the media type a manifest declares in its
// mediaType field, or infers it from its shape when absent (an OCI manifest
// may omit it). It returns "" when body is not a manifest.
func ManifestMediaType(body []byte) string {
	var m struct {
		MediaType     string            `json:"mediaType"`
		SchemaVersion int               `json:"schemaVersion"`
		Manifests     json.RawMessage   `json:"manifests"`
		Config        json.RawMessage   `json:"config"`
		Layers        json.RawMessage   `json:"layers"`
		FSLayers      json.RawMessage   `json:"fsLayers"`
		Signatures    []json.RawMessage `json:"signatures"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return ""
	}
	switch {
	case m.MediaType != "" && !ValidMediaType(m.MediaType):
		return "" // it is served as Content-Type: never what upstream wrote there
	case m.MediaType != "":
		return m.MediaType
	case m.SchemaVersion == 1 && m.FSLayers != nil:
		if len(m.Signatures) > 0 {
			return MediaTypeDockerV1Signed
		}
		return MediaTypeDockerV1
	case m.Manifests != nil:
		return MediaTypeOCIIndex
	case m.Config != nil:
		return MediaTypeOCIManifest
	}
	return ""
}

// mediaTypeRe is a media type without parameters: type/subtype of RFC
// 6838's restricted names (a letter or digit, then up to 126 of letters,
// digits and !#$&-^_.+).
var mediaTypeRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`)

// ValidMediaType reports whether mt is a media type without parameters.
func ValidMediaType(mt string) bool { return mediaTypeRe.MatchString(mt) }

// IsIndex reports whether mediaType is a multi-platform index or list.
func IsIndex(mediaType string) bool {
	return mediaType == MediaTypeOCIIndex || mediaType == MediaTypeDockerList
}

// Accepts reports whether a client's Accept header values admit mediaType.
// No Accept header (or */*) admits everything. Docker schema 2 clients that
// only list Docker types are still given OCI types they did not name only
// when they accept */*.
func Accepts(accept []string, mediaType string) bool {
	if len(accept) == 0 {
		return true
	}
	seen := false
	for _, h := range accept {
		for part := range strings.SplitSeq(h, ",") {
			t := strings.TrimSpace(part)
			if i := strings.IndexByte(t, ';'); i >= 0 {
				t = strings.TrimSpace(t[:i])
			}
			if t == "" {
				continue
			}
			seen = true
			if t == "*/*" || strings.EqualFold(t, mediaType) {
				return true
			}
			// application/json is what schema1 manifests are served as by
			// old registries; accept a schema1 object for it.
			if t == "application/json" && (mediaType == MediaTypeDockerV1 || mediaType == MediaTypeDockerV1Signed) {
				return true
			}
		}
	}
	return !seen
}
