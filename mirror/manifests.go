package mirror

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
)

// manifest is a manifest ready to be sent to a client.
type manifest struct {
	mediaType string
	digest    digest.Digest
	body      []byte
	cache     string
	// warning is sent as a Warning header (stale answers).
	warning string
}

func (m *Mirror) handleManifest(w http.ResponseWriter, r *http.Request) error {
	t, err := m.resolve(r)
	if err != nil {
		return err
	}
	ref, err := oci.ParseReference(mux.Vars(r)["reference"])
	if err != nil {
		if oci.CodeOf(err) == oci.CodeTagInvalid {
			return oci.Wrap(http.StatusNotFound, oci.CodeManifestUnknown, err, "manifest unknown: invalid reference %q", mux.Vars(r)["reference"])
		}
		return err
	}
	setRoute(r, t, ref.String())
	kind := kindManifest
	if ref.Digest == "" {
		kind = kindTag
	}
	w, answered := m.observe(w, t.reg.Host, kind)
	defer answered()
	if r, err = m.authorize(r, t, "manifest", ref.String()); err != nil {
		return err
	}
	var mf *manifest
	if ref.Digest != "" {
		mf, err = m.manifestByDigest(r.Context(), t, ref.Digest)
	} else {
		mf, err = m.manifestByTag(r.Context(), t, ref.Tag)
	}
	if err != nil {
		return err
	}
	if !oci.Accepts(r.Header.Values("Accept"), mf.mediaType) {
		logx.From(r.Context()).WithField(logx.FieldDigest, mf.digest).
			Infof("client's Accept excludes the stored media type %s", mf.mediaType)
		return oci.Errorf(http.StatusNotFound, oci.CodeManifestUnknown,
			"manifest is of type %s, which the request's Accept header excludes", mf.mediaType)
	}
	h := w.Header()
	h.Set("Content-Type", mf.mediaType)
	h.Set("Content-Length", strconv.Itoa(len(mf.body)))
	h.Set("Docker-Content-Digest", mf.digest.String())
	h.Set("Etag", `"`+mf.digest.String()+`"`)
	if mf.warning != "" {
		h.Set("Warning", mf.warning)
	}
	setCache(w, r, mf.cache)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(mf.body)
	}
	return nil
}

// cachedManifest reads a stored manifest that repo is linked to.
func (m *Mirror) cachedManifest(ctx context.Context, t target, d digest.Digest) (*manifest, error) {
	li, err := m.store.Linked(ctx, t.reg.Namespace, t.repo, d)
	if err != nil {
		return nil, err
	}
	body, err := m.store.ReadSmallBlob(ctx, d, oci.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	mt := li.MediaType
	if mt == "" {
		mt = oci.ManifestMediaType(body)
	}
	m.opts.Cache.Hit(d)
	return &manifest{mediaType: mt, digest: d, body: body, cache: CacheHit}, nil
}

// manifestLookupKey names the shared lookup of manifest d in t's
// repository (manifestByDigest; awaited by a delete).
func manifestLookupKey(t target, d digest.Digest) string {
	return "manifest|" + t.reg.Host + "|" + t.repo + "|" + d.String()
}

func (m *Mirror) manifestByDigest(ctx context.Context, t target, d digest.Digest) (*manifest, error) {
	mf, err := m.cachedManifest(ctx, t, d)
	if err == nil {
		return mf, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		logx.From(ctx).WithError(err).WithField(logx.FieldDigest, d).Warn("cached manifest unreadable; fetching it again")
	}
	mf, err = m.manifests.Do(ctx, manifestLookupKey(t, d), func(fctx context.Context) (*manifest, error) {
		return m.fetchManifest(fctx, t, d.String(), d)
	})
	return mf, leftErr(ctx, err)
}

// fetchManifest GETs a manifest by tag or digest from upstream, verifies
// it (against want when given, and against upstream's
// Docker-Content-Digest), stores it and links it to the repository.
func (m *Mirror) fetchManifest(ctx context.Context, t target, ref string, want digest.Digest) (*manifest, error) {
	desc, body, err := t.reg.Client.Manifest(ctx, t.repo, ref, false)
	if err != nil {
		return nil, err
	}
	body = m.fetched(t.reg.Host, body)
	defer body.Close()
	buf, err := io.ReadAll(io.LimitReader(body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "reading manifest %s from %s", ref, t.reg.Host)
	}
	if len(buf) > oci.MaxManifestSize {
		return nil, oci.Errorf(http.StatusBadGateway, oci.CodeManifestInvalid, "manifest %s from %s exceeds %d bytes", ref, t.reg.Host, oci.MaxManifestSize)
	}
	if desc.Size >= 0 && int64(len(buf)) != desc.Size {
		return nil, oci.Errorf(http.StatusBadGateway, oci.CodeManifestInvalid, "manifest %s from %s: got %d bytes, Content-Length said %d", ref, t.reg.Host, len(buf), desc.Size)
	}
	alg := digest.SHA256
	if want != "" {
		alg = want.Algorithm()
	} else if ud, err := digest.Parse(desc.Digest); err == nil && ud.Algorithm().Available() {
		alg = ud.Algorithm()
	}
	got := alg.FromBytes(buf)
	if want != "" && got != want {
		m.opts.Observer.DigestMismatch(t.reg.Host)
		return nil, oci.Errorf(http.StatusBadGateway, oci.CodeManifestInvalid, "manifest from %s does not match its digest %s (got %s); not cached", t.reg.Host, want, got)
	}
	if desc.Digest != "" && !headerDigestMatches(desc.Digest, got, buf) {
		m.opts.Observer.DigestMismatch(t.reg.Host)
		return nil, oci.Errorf(http.StatusBadGateway, oci.CodeManifestInvalid, "manifest %s from %s does not match Docker-Content-Digest %s (got %s); not cached", ref, t.reg.Host, desc.Digest, got)
	}
	mt := manifestType(desc.MediaType, buf)
	if mt == "" {
		return nil, oci.Errorf(http.StatusBadGateway, oci.CodeManifestInvalid, "upstream %s sent %s for manifest %s, which is not a manifest", t.reg.Host, desc.MediaType, ref)
	}
	return m.storeManifest(ctx, t, &manifest{mediaType: mt, digest: got, body: buf, cache: CacheMiss}), nil
}

// headerDigestMatches reports whether upstream's Docker-Content-Digest
// header names body, whose digest is got: a header of another algorithm
// (sha256 for a manifest asked for by its sha512 digest, as registries that
// keep sha256 as their canonical digest answer) is checked with its own.
func headerDigestMatches(header string, got digest.Digest, body []byte) bool {
	if header == got.String() {
		return true
	}
	hd, err := digest.Parse(header)
	if err != nil || hd.Algorithm() == got.Algorithm() || !hd.Algorithm().Available() {
		return false
	}
	return hd.Algorithm().FromBytes(body) == hd
}

// storeManifest stores a verified manifest, links it to the repository and
// records it in the cache. When the storage fails, the client still gets
// the verified manifest (a PASS) and the cache keeps nothing.
func (m *Mirror) storeManifest(ctx context.Context, t target, mf *manifest) *manifest {
	log := logx.From(ctx).WithField(logx.FieldDigest, mf.digest)
	size := int64(len(mf.body))
	if err := m.opts.Cache.Reserve(ctx, size); err != nil {
		log.WithError(err).Warn("making room in the cache")
	}
	if err := m.store.PutSmallBlob(ctx, mf.digest, mf.body); err != nil {
		m.diskError(ctx, err)
		mf.cache = CachePass
		return mf
	}
	if err := m.store.Link(ctx, t.reg.Namespace, t.repo, mf.digest, storageLink(mf.mediaType, size, m.opts.Now())); err != nil {
		// Unlinked, the stored copy is refetched next time.
		m.diskError(ctx, err)
		mf.cache = CachePass
		return mf
	}
	if err := m.opts.Cache.Committed(ctx, storage.Content{Digest: mf.digest, Size: size, Manifest: mf.body, Namespace: t.reg.Namespace, Repo: t.repo}); err != nil {
		log.WithError(err).Warn("storing a manifest")
	}
	return mf
}

// manifestType takes upstream's Content-Type unless it is generic, in which
// case the body decides. A type that is not a plain type/subtype (it is
// served as Content-Type) makes the answer no manifest ("").
func manifestType(contentType string, body []byte) string {
	mt, _, err := mime.ParseMediaType(contentType)
	switch {
	case err != nil, mt == "", mt == "application/json", mt == "text/plain", mt == oci.MediaTypeOctetStream:
		return oci.ManifestMediaType(body)
	}
	if !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) || !oci.ValidMediaType(mt) {
		return ""
	}
	return mt
}

func storageLink(mediaType string, size int64, now time.Time) storage.LinkInfo {
	return storage.LinkInfo{MediaType: mediaType, Size: size, LinkedAt: now.UTC()}
}
