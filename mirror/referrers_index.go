package mirror

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// referrerDescriptor is what the mirror reads of one referrer's
// descriptor; the descriptor itself (annotations and all) is passed on as
// upstream wrote it.
type referrerDescriptor struct {
	MediaType    string `json:"mediaType"`
	Digest       string `json:"digest"`
	Size         int64  `json:"size"`
	ArtifactType string `json:"artifactType"`
}

// parseReferrers reads an image index of referrers (a referrers API
// answer or a fallback tag's content) and returns its descriptors. The
// index must be a JSON object whose mediaType, when set, is an OCI image
// index; descriptors without a media type, a valid digest or a size ≥ 0
// are dropped, since a client can do nothing with them.
func parseReferrers(body []byte) ([]json.RawMessage, error) {
	if b := bytes.TrimSpace(body); len(b) == 0 || b[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var idx struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, err
	}
	if idx.MediaType != "" && idx.MediaType != oci.MediaTypeOCIIndex {
		return nil, fmt.Errorf("media type %q is not an image index", idx.MediaType)
	}
	out := make([]json.RawMessage, 0, len(idx.Manifests))
	for _, raw := range idx.Manifests {
		var d referrerDescriptor
		if json.Unmarshal(raw, &d) != nil || d.MediaType == "" || d.Size < 0 {
			continue
		}
		if _, err := digest.Parse(d.Digest); err != nil {
			continue
		}
		out = append(out, raw)
	}
	return out, nil
}

// referrersBody is the referrers answer listing descs.
func referrersBody(descs []json.RawMessage) ([]byte, error) {
	if descs == nil {
		descs = []json.RawMessage{}
	}
	return json.Marshal(struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Manifests     []json.RawMessage `json:"manifests"`
	}{2, oci.MediaTypeOCIIndex, descs})
}

// filterReferrers returns the referrers index body (as referrersBody
// made it) keeping the descriptors of artifactType only.
func filterReferrers(body []byte, artifactType string) ([]byte, error) {
	descs, err := parseReferrers(body)
	if err != nil {
		return nil, err
	}
	kept := make([]json.RawMessage, 0, len(descs))
	for _, raw := range descs {
		var d referrerDescriptor
		if json.Unmarshal(raw, &d) == nil && d.ArtifactType == artifactType {
			kept = append(kept, raw)
		}
	}
	return referrersBody(kept)
}
