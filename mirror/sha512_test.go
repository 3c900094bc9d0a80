package mirror_test

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// sha512Image pushes to reg a sha256 config, a sha512 layer and an OCI
// manifest over them addressed by its sha512 digest.
func sha512Image(t *testing.T, reg *testreg.Registry) (layer testreg.Blob, manifest []byte, md digest.Digest) {
	t.Helper()
	cfg := reg.PushBlob(t, "app", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	layer = reg.PushBlobSHA512(t, "app", testreg.RandomLayer(t, 300_000))
	manifest = fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,`+
		`"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		testreg.MediaTypeOCIManifest, testreg.MediaTypeOCIConfig, cfg.Digest, cfg.Size,
		testreg.MediaTypeOCILayerGzip, layer.Digest, layer.Size)
	return layer, manifest, reg.PushManifestSHA512(t, "app", testreg.MediaTypeOCIManifest, manifest)
}

// TestSHA512PullThrough: a blob and a manifest that a real registry serves
// by sha512 digests are fetched, verified, stored under blobs/sha512,
// served with their sha512 Docker-Content-Digest, hits the second time,
// and found again by an index rebuilt from a walk of the storage.
func TestSHA512PullThrough(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken})
	layer, manifest, md := sha512Image(t, reg)
	e := newEnv(t, envOptions{backend: "filesystem"}, upstreamSpec{host: "registry.test", reg: reg})
	base := "/v2/registry.test/app"
	for _, c := range []struct {
		path string
		d    digest.Digest
		body []byte
	}{
		{base + "/blobs/" + layer.Digest.String(), layer.Digest, layer.Bytes},
		{base + "/manifests/" + md.String(), md, manifest},
	} {
		kind := testreg.KindBlob
		if strings.Contains(c.path, "/manifests/") {
			kind = testreg.KindManifest
		}
		for i, want := range []string{"MISS", "HIT"} {
			before := served(reg, "GET", kind)
			resp, body := e.do("GET", c.path, "Accept", accept)
			wantStatus(t, resp, body, 200, "")
			if !bytes.Equal(body, c.body) || resp.Header.Get("Docker-Content-Digest") != c.d.String() || resp.Header.Get("X-Cache") != want {
				t.Fatalf("GET %s #%d: %d bytes (equal %v), Docker-Content-Digest %q, X-Cache %q; want %s",
					c.path, i+1, len(body), bytes.Equal(body, c.body), resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("X-Cache"), want)
			}
			if n := served(reg, "GET", kind) - before; n != map[string]int{"MISS": 1, "HIT": 0}[want] {
				t.Fatalf("GET %s #%d (%s): %d upstream GETs", c.path, i+1, want, n)
			}
		}
		stored := filepath.Join(e.root, "blobs", "sha512", c.d.Encoded()[:2], c.d.Encoded(), "data")
		if b, err := os.ReadFile(stored); err != nil || !bytes.Equal(b, c.body) {
			t.Fatalf("%s not stored at %s: %v", c.d, stored, err)
		}
	}
	idx := storage.NewMemIndex()
	if _, err := e.store.RebuildIndex(t.Context(), idx, nil); err != nil {
		t.Fatal(err)
	}
	for d, kind := range map[digest.Digest]string{layer.Digest: storage.KindBlob, md: storage.KindManifest} {
		ent, ok, err := idx.Get(t.Context(), d)
		if err != nil || !ok || ent.Kind != kind || !slices.Contains(ent.Repos, "registry.test/app") {
			t.Fatalf("rebuilt index: %s = %+v, %v, %v; want a %s of registry.test/app", d, ent, ok, err, kind)
		}
		if kind == storage.KindManifest && !slices.Contains(ent.Children, layer.Digest) {
			t.Fatalf("rebuilt index: manifest children %v lack the sha512 layer", ent.Children)
		}
	}
}

// TestSHA512WrongBytesNotCommitted: bytes that do not match a sha512
// digest never reach a client as a complete body nor the cache.
func TestSHA512WrongBytesNotCommitted(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	b := reg.PushBlobSHA512(t, "app", testreg.RandomLayer(t, 1<<20))
	e := newEnv(t, envOptions{backend: "filesystem"}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	reg.SetFault(testreg.FaultWrongBytes)
	if resp, body, err := e.try("GET", path); err == nil && resp.StatusCode == 200 {
		t.Fatalf("wrong bytes answered as a complete body (%d bytes, sha512 %s)", len(body), sum512(body))
	}
	if _, err := e.store.StatBlob(t.Context(), b.Digest); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("wrong bytes committed: %v", err)
	}
	reg.SetFault(testreg.FaultNone)
	resp, body := e.do("GET", path)
	if resp.StatusCode != 200 || sum512(body) != b.Digest.String() {
		t.Fatalf("healthy retry: status %d, sha512 %s", resp.StatusCode, sum512(body))
	}
}

func sum512(b []byte) string {
	s := sha512.Sum512(b)
	return "sha512:" + hex.EncodeToString(s[:])
}

// TestInvalidDigestsAre400: malformed digests of either algorithm, and
// algorithms the mirror does not support, are 400 DIGEST_INVALID for
// blobs and manifests, without asking upstream.
func TestInvalidDigestsAre400(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	hex512 := strings.TrimPrefix(sum512(nil), "sha512:")
	for _, d := range []string{
		"sha512:xyz",
		"sha512:" + hex512[:127],
		"sha256:" + hex512[:63],
		"md5:d41d8cd98f00b204e9800998ecf8427e",
	} {
		for _, kind := range []string{"blobs", "manifests"} {
			resp, body := e.do("GET", "/v2/registry.test/app/"+kind+"/"+d, "Accept", accept)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"code":"DIGEST_INVALID"`) {
				t.Errorf("GET %s/%s: %d %s; want 400 DIGEST_INVALID", kind, d, resp.StatusCode, body)
			}
		}
	}
	if n := len(reg.Requests()); n != 0 {
		t.Fatalf("%d upstream requests for invalid digests", n)
	}
}

// TestSHA512ManifestCanonicalDigestHeader: an upstream that answers a
// manifest asked for by its sha512 digest with Docker-Content-Digest
// naming its sha256 digest (its canonical one) is checked against that
// header with sha256, and the client still gets the sha512 digest.
func TestSHA512ManifestCanonicalDigestHeader(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, CanonicalManifestDigest: true})
	_, manifest, md := sha512Image(t, reg)
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	for _, want := range []string{"MISS", "HIT"} {
		resp, body := e.do("GET", "/v2/registry.test/app/manifests/"+md.String(), "Accept", accept)
		wantStatus(t, resp, body, 200, "")
		if !bytes.Equal(body, manifest) || resp.Header.Get("Docker-Content-Digest") != md.String() || resp.Header.Get("X-Cache") != want {
			t.Fatalf("Docker-Content-Digest %q, X-Cache %q; want %s, %s", resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("X-Cache"), md, want)
		}
	}
	if n := served(reg, "GET", testreg.KindManifest); n != 1 {
		t.Fatalf("%d upstream manifest GETs, want 1", n)
	}
}
