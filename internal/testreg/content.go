package testreg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"io"
	"sort"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Media types the push helpers understand.
const (
	MediaTypeOCIManifest        = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex           = "application/vnd.oci.image.index.v1+json"
	MediaTypeOCIConfig          = "application/vnd.oci.image.config.v1+json"
	MediaTypeOCILayerGzip       = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeOCILayer           = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Blob is pushed content: its descriptor and, for small blobs, its bytes.
type Blob struct {
	Digest    digest.Digest
	Size      int64
	MediaType string
	Bytes     []byte
}

// Platform is an image's os/architecture(/variant).
type Platform struct {
	OS           string
	Architecture string
	Variant      string
}

// Image is a pushed single-platform image.
type Image struct {
	Repo           string
	Tag            string // "" when pushed by digest only
	Manifest       []byte
	ManifestDigest digest.Digest
	MediaType      string
	Config         Blob
	Layers         []Blob
	Platform       Platform
}

// Index is a pushed multi-platform index (OCI index or Docker list).
type Index struct {
	Repo           string
	Tag            string
	Manifest       []byte
	ManifestDigest digest.Digest
	MediaType      string
	Images         []Image
}

// fixedTime keeps layers and configs deterministic.
func fixedTime() time.Time { return time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) }

// LayerFiles returns a gzip-compressed tar layer holding the given regular
// files (mode 0644, fixed times), in name order: the same files always give
// the same digest. Clients such as podman and containerd can unpack it.
func LayerFiles(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, n := range names {
		hdr := &tar.Header{
			Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg,
			ModTime: fixedTime(), Format: tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("testreg: tar header %s: %v", n, err)
		}
		if _, err := tw.Write(files[n]); err != nil {
			t.Fatalf("testreg: tar write %s: %v", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("testreg: tar close: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("testreg: gzip close: %v", err)
	}
	return buf.Bytes()
}

// RandomLayer returns a gzip'd tar layer with one file of size random
// (incompressible) bytes under a random name, so every call gives a
// distinct layer. The whole layer is held in memory: keep size modest.
func RandomLayer(t testing.TB, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	name := make([]byte, 8)
	_, _ = rand.Read(name)
	return LayerFiles(t, map[string][]byte{"random-" + hex.EncodeToString(name) + ".bin": data})
}

// DiffID returns the digest of a layer's uncompressed tar (the config's
// rootfs.diff_ids entry): the digest of the gunzipped bytes for a gzip
// layer, the layer's own digest otherwise.
func DiffID(t testing.TB, layer []byte) digest.Digest {
	t.Helper()
	if !isGzip(layer) {
		return digest.FromBytes(layer)
	}
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatalf("testreg: gunzip layer: %v", err)
	}
	dg := digest.Canonical.Digester()
	if _, err := io.Copy(dg.Hash(), zr); err != nil {
		t.Fatalf("testreg: gunzip layer: %v", err)
	}
	return dg.Digest()
}

func isGzip(b []byte) bool { return len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b }
