package mirror

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// manifestByTag answers a tag: from the tag record inside its TTL tier
// (no upstream request), else after one upstream HEAD (GET only when the
// digest moved), else stale when upstream fails, asked to wait, or takes
// longer than Options.RevalidateWait (the revalidation then finishes in
// the background).
func (m *Mirror) manifestByTag(ctx context.Context, t target, tag string) (*manifest, error) {
	rec, err := m.store.GetTag(ctx, t.reg.Namespace, t.repo, tag)
	var cached *manifest
	if err == nil {
		cached, err = m.cachedManifest(ctx, t, rec.Digest)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			logx.From(ctx).WithError(err).Warn("cached manifest unreadable; fetching it again")
		}
	}
	if cached != nil {
		if out := m.withoutUpstream(ctx, t, cached, rec.FetchedAt, m.opts.TagTTL(tag)); out != nil {
			return out, nil
		}
	}
	key := "tag|" + t.reg.Host + "|" + t.repo + "|" + tag
	refresh := func(fctx context.Context) (*manifest, error) {
		return m.refreshTag(fctx, t, tag, rec, cached)
	}
	if cached == nil {
		mf, err := m.manifests.Do(ctx, key, refresh)
		return mf, leftErr(ctx, err)
	}
	return m.revalidate(ctx, key, func() *manifest { return slowStale(cached, rec.FetchedAt) }, refresh)
}

// slowStale returns cached (confirmed at fetchedAt) answered stale while
// its revalidation goes on in the background.
func slowStale(cached *manifest, fetchedAt time.Time) *manifest {
	out := *cached
	out.cache, out.warning = CacheStale, staleWarningFor(reasonSlow, fetchedAt)
	return &out
}

// withoutUpstream answers a cached record (fetched or confirmed at
// fetchedAt) without asking upstream: as it is within its ttl, stale when
// the revalidation is postponed by the rate limit, or the upstream is
// held after it asked to wait or after a failure. nil: ask upstream.
func (m *Mirror) withoutUpstream(ctx context.Context, t target, cached *manifest, fetchedAt time.Time, ttl time.Duration) *manifest {
	if ttl > 0 && m.opts.Now().Sub(fetchedAt) < ttl {
		return cached
	}
	out := *cached
	if h, throttled := m.throttleHold(t.reg.Host); throttled {
		m.opts.Observer.Throttled(t.reg.Host)
		logx.From(ctx).WithField(logx.FieldDigest, cached.digest).Debug("upstream asked to wait; serving a cached answer that may be stale")
		out.cache, out.warning = CacheStale, staleWarningFor(reasonThrottled(h.status), fetchedAt)
		return &out
	}
	switch {
	case m.postponeRevalidation(ctx, t.reg):
		m.opts.Observer.Postponed(t.reg.Host)
		out.cache, out.warning = CacheStale, staleWarningFor(reasonRateLimit, fetchedAt)
	case m.upstreamHeld(t.reg.Host):
		logx.From(ctx).WithField(logx.FieldDigest, cached.digest).Debug("upstream held after a failure; serving a cached answer that may be stale")
		out.cache, out.warning = CacheStale, staleWarningFor(reasonUnavailable, fetchedAt)
	default:
		return nil
	}
	return &out
}

func (m *Mirror) refreshTag(ctx context.Context, t target, tag string, rec storage.TagRecord, cached *manifest) (*manifest, error) {
	log := logx.From(ctx).WithField(logx.FieldRef, tag)
	if cached != nil {
		desc, _, err := t.reg.Client.Manifest(ctx, t.repo, tag, true)
		switch {
		case err != nil && oci.IsTemporary(err):
			m.markDown(ctx, t.reg.Host, err)
			return stale(ctx, cached, rec, err), nil
		case err != nil && oci.StatusOf(err) == http.StatusNotFound:
			// The tag is gone upstream: forget it rather than serve it later.
			if derr := m.store.DeleteTag(ctx, t.reg.Namespace, t.repo, tag); derr != nil {
				log.WithError(derr).Warn("dropping tag record")
			}
			return nil, err
		case err != nil:
			return nil, err
		case desc.Digest == rec.Digest.String():
			m.markUp(ctx, t.reg.Host)
			// Only a TTL tier reads FetchedAt: without one, rewriting the
			// record on every pull would be a write per request for nothing.
			if m.opts.TagTTL(tag) > 0 {
				rec.FetchedAt = m.opts.Now().UTC()
				if err := m.store.PutTag(ctx, t.reg.Namespace, t.repo, tag, rec); err != nil {
					log.WithError(err).Warn("updating tag record")
				}
			}
			out := *cached
			out.cache = CacheRevalidated
			return &out, nil
		}
		if desc.Digest != "" {
			log.WithField(logx.FieldDigest, desc.Digest).Infof("tag moved from %s", rec.Digest)
		}
	}
	mf, err := m.fetchManifest(ctx, t, tag, "")
	if err != nil {
		if cached != nil && oci.IsTemporary(err) {
			m.markDown(ctx, t.reg.Host, err)
			return stale(ctx, cached, rec, err), nil
		}
		return nil, err
	}
	m.markUp(ctx, t.reg.Host)
	nrec := storage.TagRecord{Digest: mf.digest, MediaType: mf.mediaType, Size: int64(len(mf.body)), FetchedAt: m.opts.Now().UTC()}
	if err := m.store.PutTag(ctx, t.reg.Namespace, t.repo, tag, nrec); err != nil {
		logx.Every(log, "storing tag record", time.Minute).WithError(err).Warn("storing tag record")
	}
	return mf, nil
}

// stale returns cached, the manifest of rec, marked as a stale answer, and
// logs why (quietly for a revalidation stopped by a shutdown).
func stale(ctx context.Context, cached *manifest, rec storage.TagRecord, cause error) *manifest {
	log := logx.From(ctx).WithError(cause).WithField(logx.FieldDigest, cached.digest)
	reason := staleReason(cause)
	if stopped(ctx) {
		log.Debug("revalidation stopped; serving a cached manifest that may be stale")
	} else {
		log.Warn(reason + "; serving a cached manifest that may be stale")
	}
	out := *cached
	out.cache = CacheStale
	out.warning = staleWarningFor(reason, rec.FetchedAt)
	return &out
}
