package testreg

import (
	"bytes"
	crand "crypto/rand"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The push helpers talk to distribution through an internal plain-HTTP
// listener: no auth, no faults, not counted, up while the registry is Stopped.

// PushBlob uploads data (POST then monolithic PUT ?digest=) and returns its
// descriptor with the bytes.
func (r *Registry) PushBlob(t testing.TB, repo string, data []byte) Blob {
	t.Helper()
	d := digest.FromBytes(data)
	loc := r.startUpload(t, repo)
	r.put(t, withDigest(loc, d), bytes.NewReader(data), int64(len(data)))
	return Blob{Digest: d, Size: int64(len(data)), MediaType: "application/octet-stream", Bytes: data}
}

// PushBigBlob uploads sizeMiB MiB of random bytes as one streamed PATCH
// (hashing on the way, never holding more than a copy buffer) and returns
// the blob's digest and size.
func (r *Registry) PushBigBlob(t testing.TB, repo string, sizeMiB int) (digest.Digest, int64) {
	t.Helper()
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	size := int64(sizeMiB) << 20
	dg := digest.Canonical.Digester()
	body := io.TeeReader(io.LimitReader(rand.NewChaCha8(seed), size), dg.Hash())
	loc := r.startUpload(t, repo)
	resp := r.do(t, http.MethodPatch, loc.String(), "application/octet-stream", body, size, http.StatusAccepted)
	next, err := resp.Location()
	if err != nil {
		t.Fatalf("testreg: PATCH upload: no Location: %v", err)
	}
	r.put(t, withDigest(next, dg.Digest()), http.NoBody, 0)
	return dg.Digest(), size
}

// PushManifest PUTs a manifest under ref (a tag or its digest) and returns
// its digest.
func (r *Registry) PushManifest(t testing.TB, repo, ref, mediaType string, body []byte) digest.Digest {
	t.Helper()
	r.do(t, http.MethodPut, r.inner.URL+"/v2/"+repo+"/manifests/"+ref, mediaType,
		bytes.NewReader(body), int64(len(body)), http.StatusCreated)
	return digest.FromBytes(body)
}

// PushImage pushes an OCI image for linux/amd64 with the given layers (one
// random 1 KiB layer when none) and tags it (by digest only when tag is "").
// Layers should be tars, gzip'd or not: see RandomLayer and LayerFiles.
func (r *Registry) PushImage(t testing.TB, repo, tag string, layers ...[]byte) Image {
	t.Helper()
	return r.pushImage(t, repo, tag, MediaTypeOCIManifest, Platform{OS: "linux", Architecture: "amd64"}, layers)
}

// PushImageMediaType is PushImage with the manifest type chosen:
// MediaTypeOCIManifest or MediaTypeDockerManifest (Docker schema2).
func (r *Registry) PushImageMediaType(t testing.TB, repo, tag, mediaType string, layers ...[]byte) Image {
	t.Helper()
	return r.pushImage(t, repo, tag, mediaType, Platform{OS: "linux", Architecture: "amd64"}, layers)
}

// PushIndex pushes one single-platform OCI image per platform (each with its
// own random layer, pushed by digest) and an OCI index over them, tagged
// tag. No platforms means linux/amd64 and linux/arm64/v8.
func (r *Registry) PushIndex(t testing.TB, repo, tag string, platforms ...Platform) Index {
	t.Helper()
	return r.PushIndexMediaType(t, repo, tag, MediaTypeOCIIndex, platforms...)
}

// PushIndexMediaType is PushIndex with the index type chosen:
// MediaTypeOCIIndex (OCI children) or MediaTypeDockerManifestList (Docker
// schema2 children).
func (r *Registry) PushIndexMediaType(t testing.TB, repo, tag, mediaType string, platforms ...Platform) Index {
	t.Helper()
	child := MediaTypeOCIManifest
	switch mediaType {
	case MediaTypeOCIIndex:
	case MediaTypeDockerManifestList:
		child = MediaTypeDockerManifest
	default:
		t.Fatalf("testreg: PushIndexMediaType: unsupported media type %q", mediaType)
	}
	if len(platforms) == 0 {
		platforms = []Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}}
	}
	idx := Index{Repo: repo, Tag: tag, MediaType: mediaType}
	doc := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mediaType}
	for _, p := range platforms {
		img := r.pushImage(t, repo, "", child, p, [][]byte{RandomLayer(t, 1024)})
		idx.Images = append(idx.Images, img)
		doc.Manifests = append(doc.Manifests, ocispec.Descriptor{
			MediaType: child, Digest: img.ManifestDigest, Size: int64(len(img.Manifest)),
			Platform: &ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant},
		})
	}
	idx.Manifest = mustJSON(t, doc)
	idx.ManifestDigest = digest.FromBytes(idx.Manifest)
	r.PushManifest(t, repo, refOrDigest(tag, idx.ManifestDigest), mediaType, idx.Manifest)
	return idx
}

// pushImage pushes layers, a config for p and a manifest of mediaType.
func (r *Registry) pushImage(t testing.TB, repo, tag, mediaType string, p Platform, layers [][]byte) Image {
	t.Helper()
	configType, gzType, tarType := MediaTypeOCIConfig, MediaTypeOCILayerGzip, MediaTypeOCILayer
	switch mediaType {
	case MediaTypeOCIManifest:
	case MediaTypeDockerManifest:
		configType, gzType, tarType = MediaTypeDockerConfig, MediaTypeDockerLayerGzip, "application/vnd.docker.image.rootfs.diff.tar"
	default:
		t.Fatalf("testreg: push image: unsupported media type %q", mediaType)
	}
	if len(layers) == 0 {
		layers = [][]byte{RandomLayer(t, 1024)}
	}
	created := fixedTime()
	img := Image{Repo: repo, Tag: tag, MediaType: mediaType, Platform: p}
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant},
		Config:   ocispec.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	man := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mediaType}
	for _, l := range layers {
		b := r.PushBlob(t, repo, l)
		b.MediaType = tarType
		if isGzip(l) {
			b.MediaType = gzType
		}
		img.Layers = append(img.Layers, b)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, DiffID(t, l))
		cfg.History = append(cfg.History, ocispec.History{Created: &created, CreatedBy: "testreg"})
		man.Layers = append(man.Layers, ocispec.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size})
	}
	img.Config = r.PushBlob(t, repo, mustJSON(t, cfg))
	img.Config.MediaType = configType
	man.Config = ocispec.Descriptor{MediaType: configType, Digest: img.Config.Digest, Size: img.Config.Size}
	img.Manifest = mustJSON(t, man)
	img.ManifestDigest = digest.FromBytes(img.Manifest)
	r.PushManifest(t, repo, refOrDigest(tag, img.ManifestDigest), mediaType, img.Manifest)
	return img
}

// startUpload POSTs /v2/<repo>/blobs/uploads/ and returns the upload URL.
func (r *Registry) startUpload(t testing.TB, repo string) *url.URL {
	t.Helper()
	resp := r.do(t, http.MethodPost, r.inner.URL+"/v2/"+repo+"/blobs/uploads/", "", http.NoBody, 0, http.StatusAccepted)
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("testreg: start upload to %s: no Location: %v", repo, err)
	}
	return loc
}

// put finishes an upload with a PUT to loc.
func (r *Registry) put(t testing.TB, loc *url.URL, body io.Reader, size int64) {
	t.Helper()
	r.do(t, http.MethodPut, loc.String(), "application/octet-stream", body, size, http.StatusCreated)
}

// do sends one request to the inner listener, fails the test unless the
// status is want, and returns the response with its body drained.
func (r *Registry) do(t testing.TB, method, u, contentType string, body io.Reader, size int64, want int) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatalf("testreg: %s %s: %v", method, u, err)
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := r.inner.Client().Do(req)
	if err != nil {
		t.Fatalf("testreg: %s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != want {
		t.Fatalf("testreg: %s %s: status %d, want %d: %s", method, u, resp.StatusCode, want, msg)
	}
	return resp
}

func withDigest(loc *url.URL, d digest.Digest) *url.URL {
	u := *loc
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	return &u
}

func refOrDigest(tag string, d digest.Digest) string {
	if tag != "" {
		return tag
	}
	return d.String()
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("testreg: marshal: %v", err)
	}
	return b
}
