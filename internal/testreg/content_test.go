package testreg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestLayers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		layer func(t *testing.T) []byte
		files map[string]int // name → size; name "" = any one random file
	}{
		{name: "random", layer: func(t *testing.T) []byte { return RandomLayer(t, 100_000) }, files: map[string]int{"": 100_000}},
		{name: "files", layer: func(t *testing.T) []byte {
			return LayerFiles(t, map[string][]byte{"etc/hello": []byte("hi\n"), "bin/x": make([]byte, 10)})
		}, files: map[string]int{"etc/hello": 3, "bin/x": 10}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			layer := tc.layer(t)
			zr, err := gzip.NewReader(bytes.NewReader(layer))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(zr)
			if DiffID(t, layer) != digest.FromBytes(raw) {
				t.Fatal("DiffID is not the digest of the uncompressed tar")
			}
			tr := tar.NewReader(bytes.NewReader(raw))
			seen := 0
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				want, ok := tc.files[h.Name]
				if !ok {
					want, ok = tc.files[""]
				}
				if !ok || h.Size != int64(want) || h.Typeflag != tar.TypeReg {
					t.Fatalf("unexpected entry %s (%d bytes)", h.Name, h.Size)
				}
				seen++
			}
			if seen != len(tc.files) {
				t.Fatalf("%d entries, want %d", seen, len(tc.files))
			}
		})
	}
	a := LayerFiles(t, map[string][]byte{"a": {1}, "b": {2}})
	if b := LayerFiles(t, map[string][]byte{"b": {2}, "a": {1}}); !bytes.Equal(a, b) {
		t.Fatal("LayerFiles is not deterministic")
	}
	if bytes.Equal(RandomLayer(t, 10), RandomLayer(t, 10)) {
		t.Fatal("RandomLayer repeats")
	}
}

func TestPushMediaTypes(t *testing.T) {
	t.Parallel()
	reg := Start(t, Options{})
	p := newPuller(t, reg, "", "")
	cases := []struct {
		name      string
		push      func() Image
		wantLayer string
	}{
		{name: "oci", push: func() Image { return reg.PushImage(t, "a", "oci", RandomLayer(t, 10)) }, wantLayer: MediaTypeOCILayerGzip},
		{name: "docker", push: func() Image {
			return reg.PushImageMediaType(t, "a", "docker", MediaTypeDockerManifest, RandomLayer(t, 10))
		}, wantLayer: MediaTypeDockerLayerGzip},
		{name: "by digest, default layer", push: func() Image { return reg.PushImage(t, "a", "") }, wantLayer: MediaTypeOCILayerGzip},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.push()
			p.pullImage(img)
			var man ocispec.Manifest
			var cfg ocispec.Image
			if err := json.Unmarshal(img.Manifest, &man); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(img.Config.Bytes, &cfg); err != nil {
				t.Fatal(err)
			}
			if man.MediaType != img.MediaType || man.Layers[0].MediaType != tc.wantLayer ||
				cfg.Architecture != "amd64" || cfg.OS != "linux" ||
				len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != DiffID(t, img.Layers[0].Bytes) {
				t.Fatalf("manifest %s\nconfig %s", img.Manifest, img.Config.Bytes)
			}
		})
	}

	t.Run("docker manifest list", func(t *testing.T) {
		idx := reg.PushIndexMediaType(t, "a", "list", MediaTypeDockerManifestList,
			Platform{OS: "linux", Architecture: "amd64"}, Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, Platform{OS: "linux", Architecture: "s390x"})
		resp, body := p.get("/v2/a/manifests/list", MediaTypeDockerManifestList)
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != idx.ManifestDigest || resp.Header.Get("Content-Type") != MediaTypeDockerManifestList {
			t.Fatalf("list: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		for _, img := range idx.Images {
			if img.MediaType != MediaTypeDockerManifest {
				t.Fatalf("child %s", img.MediaType)
			}
			p.pullImage(img)
		}
	})
}

func TestPushBigBlob(t *testing.T) {
	t.Parallel()
	reg := Start(t, Options{TLS: true})
	d, size := reg.PushBigBlob(t, "big", 64)
	if size != 64<<20 {
		t.Fatalf("size %d", size)
	}
	resp, err := reg.Client().Get(reg.URL + "/v2/big/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dg := digest.Canonical.Digester()
	n, err := io.Copy(dg.Hash(), resp.Body)
	if err != nil || n != size || dg.Digest() != d {
		t.Fatalf("pulled %d bytes %s, err %v; want %d %s", n, dg.Digest(), err, size, d)
	}
}
