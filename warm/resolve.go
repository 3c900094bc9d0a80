package warm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/distribution/reference"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// plan is what an image consists of: the platforms chosen and the blobs
// they need (each once).
type plan struct {
	platforms []string
	blobs     []v1.Descriptor
	missing   []v1.Platform
	// config names a single-platform image's config, whose platform is
	// read while it streams ("" for indexes and schema 1).
	config digest.Digest
}

// manifest is an image manifest. OCI and Docker schema 2 manifests have
// the same shape, v1.Manifest. Docker schema 1 lists its layers as
// fsLayers, which no library type describes any more (distribution v3
// dropped schema 1), hence the one extra field.
type manifest struct {
	v1.Manifest
	FSLayers []struct {
		BlobSum digest.Digest `json:"blobSum"`
	} `json:"fsLayers"`
}

// fetchManifest fetches a manifest and verifies it against want (a digest
// reference) or the Docker-Content-Digest the proxy sent. It returns the
// body and its media type.
func (w *Warmer) fetchManifest(ctx context.Context, repo, ref string, want digest.Digest) ([]byte, string, error) {
	what := "manifest " + ref
	desc, rc, err := w.reg.Manifest(ctx, repo, ref, false)
	if err != nil {
		return nil, "", &FetchError{What: what, Proxy: w.proxy, Err: err}
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, oci.MaxManifestSize+1))
	if err != nil {
		return nil, "", &FetchError{What: what, Proxy: w.proxy, Err: err}
	}
	if len(body) > oci.MaxManifestSize {
		return nil, "", fmt.Errorf("%s: %w: larger than %d bytes", what, ErrManifestTooLarge, oci.MaxManifestSize)
	}
	if want == "" {
		if d, err := digest.Parse(desc.Digest); err == nil {
			want = d
		}
	}
	if want != "" && want.Algorithm().Available() && want.Algorithm().FromBytes(body) != want {
		return nil, "", fmt.Errorf("%s: %w %s", what, ErrDigestMismatch, want)
	}
	mt := desc.MediaType
	if mt == "" || mt == "application/json" || mt == oci.MediaTypeOctetStream {
		mt = oci.ManifestMediaType(body)
	}
	return body, mt, nil
}

// imageBlobs returns the config and layers of an image manifest, leaving
// out foreign (non-distributable) layers, which registries do not serve.
// Schema 1 blobs have size -1 (unknown).
func imageBlobs(body []byte, mediaType string) ([]v1.Descriptor, error) {
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("manifest (%s): %w: %w", mediaType, ErrInvalidManifest, err)
	}
	var out []v1.Descriptor
	if m.Config.Digest != "" {
		out = append(out, m.Config)
	}
	for _, l := range m.Layers {
		if len(l.URLs) > 0 && (strings.Contains(l.MediaType, "foreign") || strings.Contains(l.MediaType, "nondistributable")) {
			continue
		}
		out = append(out, l)
	}
	for _, l := range m.FSLayers {
		out = append(out, v1.Descriptor{Digest: l.BlobSum, Size: -1})
	}
	for _, b := range out {
		if err := b.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("manifest (%s): %w: blob %q: %w", mediaType, ErrInvalidManifest, b.Digest, err)
		}
	}
	return out, nil
}

// resolve fetches the image's manifests and chooses what to warm.
func (w *Warmer) resolve(ctx context.Context, repo string, ref reference.Named) (plan, error) {
	var p plan
	tagOrDigest, want := manifestRef(ref)
	body, mt, err := w.fetchManifest(ctx, repo, tagOrDigest, want)
	if err != nil {
		return p, err
	}
	if oci.IsIndex(mt) {
		return w.resolveIndex(ctx, repo, tagOrDigest, body)
	}
	bs, err := imageBlobs(body, mt)
	if err != nil {
		return p, err
	}
	if mt != oci.MediaTypeDockerV1 && mt != oci.MediaTypeDockerV1Signed && len(bs) > 0 {
		p.config = bs[0].Digest
	}
	p.add(bs)
	return p, nil
}

// resolveIndex picks the wanted entries of an index and fetches their
// manifests.
func (w *Warmer) resolveIndex(ctx context.Context, repo, tagOrDigest string, body []byte) (plan, error) {
	var p plan
	var idx v1.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return p, fmt.Errorf("index %s: %w: %w", tagOrDigest, ErrInvalidManifest, err)
	}
	picked, missing := selectChildren(idx.Manifests, w.opts.Platforms, w.opts.AllPlatforms)
	p.missing = missing
	if len(picked) == 0 {
		return p, &PlatformError{Missing: missing, Available: platformNames(idx.Manifests)}
	}
	for _, c := range picked {
		if err := c.Digest.Validate(); err != nil {
			return p, fmt.Errorf("index %s: %w: entry %q: %w", tagOrDigest, ErrInvalidManifest, c.Digest, err)
		}
		cb, cmt, err := w.fetchManifest(ctx, repo, c.Digest.String(), c.Digest)
		if err != nil {
			return p, err
		}
		if oci.IsIndex(cmt) {
			continue // nested indexes are not pulled by clients either
		}
		bs, err := imageBlobs(cb, cmt)
		if err != nil {
			return p, err
		}
		name := "unknown"
		if c.Platform != nil {
			name = formatPlatform(*c.Platform)
		}
		p.platforms = append(p.platforms, name)
		p.add(bs)
	}
	return p, nil
}

// add adds blobs to the plan, each digest once.
func (p *plan) add(bs []v1.Descriptor) {
	for _, b := range bs {
		if !slices.ContainsFunc(p.blobs, func(have v1.Descriptor) bool { return have.Digest == b.Digest }) {
			p.blobs = append(p.blobs, b)
		}
	}
}
