package mirror

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// handleReferrers answers referrers/<digest>: the subject's referrers
// index from upstream's referrers API or, when upstream has none (404),
// built from the fallback tag <alg>-<ref>; cached like a tag (the TTL
// tier of the fallback tag's name), served stale when upstream fails,
// and filtered here by artifactType (OCI-Filters-Applied).
func (m *Mirror) handleReferrers(w http.ResponseWriter, r *http.Request) error {
	t, d, err := m.resolveDigest(r)
	if err != nil {
		return err
	}
	if r, err = m.authorize(r, t, "referrers", d.String()); err != nil {
		return err
	}
	ans, err := m.referrers(r.Context(), t, d)
	if err != nil {
		return err
	}
	body := ans.body
	if at := r.URL.Query().Get("artifactType"); at != "" {
		if body, err = filterReferrers(body, at); err != nil {
			return oci.Wrap(http.StatusInternalServerError, oci.CodeUnknown, err, "filtering the referrers index")
		}
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	if ans.warning != "" {
		w.Header().Set("Warning", ans.warning)
	}
	setCache(w, r, ans.cache)
	w.Header().Set("Content-Type", oci.MediaTypeOCIIndex)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

// referrers returns the unfiltered referrers index of subject d: the
// stored record inside the TTL tier of d's fallback tag (no upstream
// request), else after asking upstream, else the record stale when
// upstream fails. Concurrent requests share one upstream lookup.
func (m *Mirror) referrers(ctx context.Context, t target, d digest.Digest) (*manifest, error) {
	rec, err := m.store.GetReferrers(ctx, t.reg.Namespace, t.repo, d)
	var cached *manifest
	switch {
	case err == nil:
		cached = &manifest{mediaType: oci.MediaTypeOCIIndex, digest: d, body: rec.Index, cache: CacheHit}
	case !errors.Is(err, storage.ErrNotFound):
		logx.From(ctx).WithError(err).WithField(logx.FieldDigest, d).Warn("referrers record unreadable; asking upstream")
	}
	if cached != nil {
		if out := m.withoutUpstream(ctx, t, cached, rec.FetchedAt, m.referrersTTL(d)); out != nil {
			return out, nil
		}
	}
	key := "referrers|" + t.reg.Host + "|" + t.repo + "|" + d.String()
	refresh := func(fctx context.Context) (*manifest, error) {
		return m.refreshReferrers(fctx, t, d, cached, rec.FetchedAt)
	}
	if cached == nil {
		mf, err := m.manifests.Do(ctx, key, refresh)
		return mf, leftErr(ctx, err)
	}
	// Like a tag's (manifestByTag): never longer than RevalidateWait.
	return m.revalidate(ctx, key, func() *manifest { return slowStale(cached, rec.FetchedAt) }, refresh)
}

// referrersTTL is how long the referrers of d are answered without asking
// upstream: the TTL tier of its fallback tag, but no longer than the
// default tier's. A fallback tag sha256-<hex> looks like a version and
// would get the version tier (60 days by default), while referrers change
// whenever a signature or attestation is attached.
func (m *Mirror) referrersTTL(d digest.Digest) time.Duration {
	return min(m.opts.TagTTL(fallbackTag(d)), m.opts.TagTTL(""))
}

// refreshReferrers asks upstream for d's referrers and stores the answer,
// or answers cached (fetched at cachedAt) stale when upstream is
// unavailable.
func (m *Mirror) refreshReferrers(ctx context.Context, t target, d digest.Digest, cached *manifest, cachedAt time.Time) (*manifest, error) {
	log := logx.From(ctx).WithField(logx.FieldDigest, d)
	body, warning, err := m.fetchReferrers(ctx, t, d)
	if err != nil {
		if cached == nil || !oci.IsTemporary(err) {
			return nil, err
		}
		m.markDown(ctx, t.reg.Host, err)
		log.WithError(err).Warn("upstream unavailable; serving the last referrers index, which may be stale")
		out := *cached
		out.cache, out.warning = CacheStale, staleWarningFor(staleReason(err), cachedAt)
		return &out, nil
	}
	m.markUp(ctx, t.reg.Host)
	out := &manifest{mediaType: oci.MediaTypeOCIIndex, digest: d, body: body, cache: CacheMiss, warning: warning}
	if warning != "" {
		// Built from a fallback tag answered stale: not recorded as fresh.
		out.cache = CacheStale
		return out, nil
	}
	same := cached != nil && bytes.Equal(cached.body, body)
	if same {
		out.cache = CacheRevalidated
		if m.referrersTTL(d) <= 0 {
			// Nothing reads FetchedAt without a TTL tier: no write per request.
			return out, nil
		}
	}
	rec := storage.ReferrersRecord{Index: body, FetchedAt: m.opts.Now().UTC()}
	if err := m.store.PutReferrers(ctx, t.reg.Namespace, t.repo, d, rec); err != nil {
		log.WithError(err).Warn("storing the referrers index")
	}
	return out, nil
}

// fetchReferrers GETs upstream's referrers index of d (unfiltered, so one
// record serves every filter), or builds it from the fallback tag when
// upstream has no referrers API. warning is the fallback tag's (stale).
func (m *Mirror) fetchReferrers(ctx context.Context, t target, d digest.Digest) (body []byte, warning string, err error) {
	resp, err := t.reg.Client.Get(ctx, t.repo, "referrers/"+d.String(), nil)
	if err != nil {
		if oci.StatusOf(err) == http.StatusNotFound {
			// A registry with the API never answers 404 (OCI distribution
			// spec v1.1, "Listing Referrers"): the tag schema applies.
			return m.referrersFromTag(ctx, t, d)
		}
		return nil, "", err
	}
	defer resp.Body.Close()
	buf, err := io.ReadAll(io.LimitReader(resp.Body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, "", oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "reading the referrers of %s from %s", d, t.reg.Host)
	}
	if len(buf) > oci.MaxManifestSize {
		return nil, "", oci.Errorf(http.StatusBadGateway, oci.CodeUnavailable, "the referrers index of %s from %s exceeds %d bytes", d, t.reg.Host, oci.MaxManifestSize)
	}
	descs, err := parseReferrers(buf)
	if err != nil {
		return nil, "", oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "upstream %s sent an invalid referrers index for %s", t.reg.Host, d)
	}
	body, err = referrersBody(descs)
	return body, "", err
}

// referrersFromTag builds d's referrers index from its fallback tag,
// fetched, verified and cached as any tag (manifestByTag); a missing tag
// means no referrers.
func (m *Mirror) referrersFromTag(ctx context.Context, t target, d digest.Digest) (body []byte, warning string, err error) {
	tag := fallbackTag(d)
	mf, err := m.manifestByTag(ctx, t, tag)
	if err != nil {
		if oci.StatusOf(err) == http.StatusNotFound {
			body, err = referrersBody(nil)
			return body, "", err
		}
		return nil, "", err
	}
	if mf.mediaType != oci.MediaTypeOCIIndex {
		return nil, "", oci.Errorf(http.StatusBadGateway, oci.CodeManifestInvalid,
			"the referrers fallback tag %s on %s is a %s, not an image index", tag, t.reg.Host, mf.mediaType)
	}
	descs, err := parseReferrers(mf.body)
	if err != nil {
		return nil, "", oci.Wrap(http.StatusBadGateway, oci.CodeManifestInvalid, err, "the referrers fallback tag %s on %s", tag, t.reg.Host)
	}
	body, err = referrersBody(descs)
	return body, mf.warning, err
}

// fallbackTag is the referrers tag schema's tag of subject d (OCI
// distribution spec v1.1): <alg>-<ref>, the algorithm cut to 32
// characters and the encoded digest to 64, any character a tag may not
// hold replaced by '-'. d must be valid.
func fallbackTag(d digest.Digest) string {
	alg, ref := string(d.Algorithm()), d.Encoded()
	alg, ref = alg[:min(len(alg), 32)], ref[:min(len(ref), 64)]
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			return r
		}
		return '-'
	}, alg+"-"+ref)
}
