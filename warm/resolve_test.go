package warm

import (
	"errors"
	"fmt"
	"testing"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// TestImageBlobs: the blobs to read are the config and the layers of
// OCI and Docker schema 2 manifests, the fsLayers of schema 1 (size
// unknown), never foreign layers (registries do not serve them); a
// manifest with an invalid digest is refused.
func TestImageBlobs(t *testing.T) {
	t.Parallel()
	cfg, l1, l2 := digest.FromString("config"), digest.FromString("layer1"), digest.FromString("layer2")
	cases := []struct {
		name, mediaType, body string
		want                  []digest.Digest
		sizes                 []int64
	}{
		{"oci", oci.MediaTypeOCIManifest,
			fmt.Sprintf(`{"schemaVersion":2,"config":{"digest":%q,"size":10},"layers":[{"digest":%q,"size":20},{"digest":%q,"size":30}]}`, cfg, l1, l2),
			[]digest.Digest{cfg, l1, l2}, []int64{10, 20, 30}},
		{"docker schema 2 with a foreign layer", oci.MediaTypeDockerManifest,
			fmt.Sprintf(`{"schemaVersion":2,"config":{"digest":%q,"size":10},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":%q,"size":20,"urls":["https://example.com/l1"]},{"digest":%q,"size":30}]}`, cfg, l1, l2),
			[]digest.Digest{cfg, l2}, []int64{10, 30}},
		{"docker schema 1", oci.MediaTypeDockerV1Signed,
			fmt.Sprintf(`{"schemaVersion":1,"fsLayers":[{"blobSum":%q},{"blobSum":%q}],"signatures":[{}]}`, l1, l2),
			[]digest.Digest{l1, l2}, []int64{-1, -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := imageBlobs([]byte(tc.body), tc.mediaType)
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("imageBlobs = %v, %v; want %v", got, err, tc.want)
			}
			for i, b := range got {
				if b.Digest != tc.want[i] || b.Size != tc.sizes[i] {
					t.Errorf("blob %d = %s (%d bytes), want %s (%d)", i, b.Digest, b.Size, tc.want[i], tc.sizes[i])
				}
			}
		})
	}
	for name, body := range map[string]string{
		"bad digest": `{"schemaVersion":2,"config":{"digest":"sha256:nothex","size":1}}`,
		"not json":   `<html>`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := imageBlobs([]byte(body), oci.MediaTypeOCIManifest); !errors.Is(err, ErrInvalidManifest) {
				t.Fatalf("err = %v, want ErrInvalidManifest", err)
			}
		})
	}
}
