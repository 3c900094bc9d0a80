package testreg

import (
	"bytes"
	_ "crypto/sha512" // digest.SHA512 is available only when linked
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Content addressed by sha512 digests. distribution keeps sha256 as its
// canonical digest but serves content under other digests through links:
//
//   - a blob pushed with ?digest=sha512:… is verified against that digest,
//     stored under its sha256 digest and linked in the repository under
//     both, so GET /v2/<repo>/blobs/sha512:… serves it (with
//     Docker-Content-Digest naming the sha256 digest);
//   - a manifest PUT by a sha512 digest is refused (distribution compares
//     the reference with its sha256 digest), but GET by digest reads the
//     repository's revision link of that digest, and then answers with
//     Docker-Content-Digest set to the digest asked for. PushManifestSHA512
//     pushes by the sha256 digest and adds the sha512 revision link
//     distribution would have made, the way linkBlob does for blobs.

// PushBlobSHA512 uploads data with its sha512 digest (POST then monolithic
// PUT ?digest=sha512:…) and returns its descriptor with the bytes.
func (r *Registry) PushBlobSHA512(t testing.TB, repo string, data []byte) Blob {
	t.Helper()
	d := digest.SHA512.FromBytes(data)
	loc := r.startUpload(t, repo)
	r.put(t, withDigest(loc, d), bytes.NewReader(data), int64(len(data)))
	return Blob{Digest: d, Size: int64(len(data)), MediaType: "application/octet-stream", Bytes: data}
}

// PushManifestSHA512 pushes a manifest by its sha256 digest, makes it
// available by its sha512 digest too, and returns the sha512 digest.
func (r *Registry) PushManifestSHA512(t testing.TB, repo, mediaType string, body []byte) digest.Digest {
	t.Helper()
	canonical := r.PushManifest(t, repo, digest.FromBytes(body).String(), mediaType, body)
	d := digest.SHA512.FromBytes(body)
	link := filepath.Join(r.root, "docker", "registry", "v2", "repositories", filepath.FromSlash(repo),
		"_manifests", "revisions", string(d.Algorithm()), d.Encoded(), "link")
	if err := os.MkdirAll(filepath.Dir(link), 0o750); err != nil {
		t.Fatalf("testreg: sha512 revision link: %v", err)
	}
	if err := os.WriteFile(link, []byte(canonical.String()), 0o600); err != nil {
		t.Fatalf("testreg: sha512 revision link: %v", err)
	}
	return d
}

// serveCanonicalDigest serves a manifest GET through app and, when it was
// asked for by a digest other than sha256, names the body's sha256 digest
// in Docker-Content-Digest (Options.CanonicalManifestDigest).
func serveCanonicalDigest(w http.ResponseWriter, req *http.Request, app http.Handler) {
	rec := httptest.NewRecorder()
	app.ServeHTTP(rec, req)
	ref := req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]
	if rec.Code == http.StatusOK && strings.Contains(ref, ":") && !strings.HasPrefix(ref, "sha256:") {
		rec.Header().Set("Docker-Content-Digest", digest.FromBytes(rec.Body.Bytes()).String())
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}
