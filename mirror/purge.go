package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// A write that the shim passed through to a registry can make what the
// cache holds wrong: a tag pushed anew, a manifest or a blob deleted. The
// shim tells the mirror (shim.Purger) once the registry accepted the write,
// before the client has its answer, so that the client's next read does
// not see the old state:
//
//   - ForgetTag drops the tag record: the next pull of the tag asks
//     upstream.
//   - ForgetManifest unlinks the manifest from the repository, drops the
//     repository's tag records that point to it, and removes its content
//     when no other repository links it (Cache.Unlinked).
//   - ForgetBlob unlinks the blob from the repository and removes its
//     content when no other repository links it.
//
// Nothing negative is ever cached for a digest: a digest the cache does
// not hold for a repository is asked for upstream every time.
//
// A fill of the deleted blob for the same repository that is in flight
// when the delete arrives was started before upstream deleted it: its
// clients get the bytes, but it is taken out of the map of fills (later
// requests start afresh and learn from upstream that it is gone) and it
// commits nothing (purging orders the two). A by-digest manifest lookup
// in flight is waited for before the link is removed. A tag lookup that
// resolved to the manifest just before the delete may still store it: a
// window of one upstream round trip, closed by the next delete or
// eviction.

// errPurged ends a verified fill whose blob was deleted upstream through
// the shim while it ran: its clients got every byte, nothing is
// committed.
var errPurged = errors.New("blob not kept: deleted upstream while it was being fetched")

// ForgetTag drops the cached record of a tag (after a push through the
// shim changed or deleted it), so the next pull asks upstream. host is a
// registry host or alias, ref a tag (digests are immutable and ignored).
func (m *Mirror) ForgetTag(ctx context.Context, host, repo, ref string) error {
	if !oci.ValidTag(ref) {
		return nil
	}
	t, err := m.purgeTarget(host, repo)
	if err != nil {
		return err
	}
	if err := m.store.DeleteTag(ctx, t.reg.Namespace, t.repo, ref); err != nil {
		return fmt.Errorf("forget tag %s/%s:%s: %w", t.reg.Host, t.repo, ref, err)
	}
	if alg, prefix, ok := fallbackSubject(ref); ok {
		// A referrer attached on a registry without the referrers API.
		if _, err := m.store.DeleteReferrers(ctx, t.reg.Namespace, t.repo, alg, prefix); err != nil {
			return fmt.Errorf("forget the referrers of %s/%s:%s: %w", t.reg.Host, t.repo, ref, err)
		}
	}
	logx.From(ctx).WithFields(map[string]any{logx.FieldUpstream: t.reg.Host, logx.FieldRepo: t.repo, logx.FieldRef: ref}).
		Info("tag changed by a push; cached record dropped")
	return nil
}

// ForgetManifest forgets manifest d of host/repo after upstream accepted
// its deletion: the repository's link and every tag record of the
// repository that points to d go, and the content too when no other
// repository links it (unless in use).
func (m *Mirror) ForgetManifest(ctx context.Context, host, repo string, d digest.Digest) error {
	t, err := m.purgeTarget(host, repo)
	if err != nil {
		return err
	}
	m.awaitManifestLookup(ctx, t, d)
	if subject, ok := m.subjectOf(ctx, d); ok {
		// The deleted manifest was a referrer: its subject's list changed.
		if err := m.forgetReferrers(ctx, t, subject); err != nil {
			return fmt.Errorf("forget manifest %s/%s@%s: %w", t.reg.Host, t.repo, d, err)
		}
	}
	if err := m.store.Unlink(ctx, t.reg.Namespace, t.repo, d); err != nil {
		return fmt.Errorf("forget manifest %s/%s@%s: %w", t.reg.Host, t.repo, d, err)
	}
	tags, err := m.dropTagsOf(ctx, t, d)
	if err != nil {
		return fmt.Errorf("forget manifest %s/%s@%s: %w", t.reg.Host, t.repo, d, err)
	}
	if err := m.opts.Cache.Unlinked(ctx, d, t.reg.Namespace, t.repo); err != nil {
		return fmt.Errorf("forget manifest %s/%s@%s: %w", t.reg.Host, t.repo, d, err)
	}
	logx.From(ctx).WithFields(map[string]any{logx.FieldUpstream: t.reg.Host, logx.FieldRepo: t.repo, logx.FieldDigest: d, "tags": tags}).
		Info("manifest deleted through the proxy; dropped from the repository's cache")
	return nil
}

// ForgetBlob forgets blob d of host/repo after upstream accepted its
// deletion: the repository's link goes, a fill of d for the repository
// in flight commits nothing, and the content goes when no other
// repository links it (unless in use).
func (m *Mirror) ForgetBlob(ctx context.Context, host, repo string, d digest.Digest) error {
	t, err := m.purgeTarget(host, repo)
	if err != nil {
		return err
	}
	m.purgeFill(t, d)
	if err := m.store.Unlink(ctx, t.reg.Namespace, t.repo, d); err != nil {
		return fmt.Errorf("forget blob %s/%s@%s: %w", t.reg.Host, t.repo, d, err)
	}
	if err := m.opts.Cache.Unlinked(ctx, d, t.reg.Namespace, t.repo); err != nil {
		return fmt.Errorf("forget blob %s/%s@%s: %w", t.reg.Host, t.repo, d, err)
	}
	logx.From(ctx).WithFields(map[string]any{logx.FieldUpstream: t.reg.Host, logx.FieldRepo: t.repo, logx.FieldDigest: d}).
		Info("blob deleted through the proxy; dropped from the repository's cache")
	return nil
}

// ForgetReferrers drops the cached referrers list of subject in
// host/repo after a push attached a referrer to it (the registry named
// the subject in OCI-Subject).
func (m *Mirror) ForgetReferrers(ctx context.Context, host, repo string, subject digest.Digest) error {
	t, err := m.purgeTarget(host, repo)
	if err != nil {
		return err
	}
	return m.forgetReferrers(ctx, t, subject)
}

func (m *Mirror) forgetReferrers(ctx context.Context, t target, subject digest.Digest) error {
	if err := subject.Validate(); err != nil {
		return fmt.Errorf("forget referrers: %w", err)
	}
	if _, err := m.store.DeleteReferrers(ctx, t.reg.Namespace, t.repo, subject.Algorithm(), subject.Encoded()); err != nil {
		return fmt.Errorf("forget the referrers of %s/%s@%s: %w", t.reg.Host, t.repo, subject, err)
	}
	return nil
}

// subjectOf returns the subject of manifest d when it is cached and has
// one (it is a referrer).
func (m *Mirror) subjectOf(ctx context.Context, d digest.Digest) (digest.Digest, bool) {
	body, err := m.store.ReadSmallBlob(ctx, d, oci.MaxManifestSize)
	if err != nil {
		return "", false
	}
	var mf struct {
		Subject *struct {
			Digest digest.Digest `json:"digest"`
		} `json:"subject"`
	}
	if json.Unmarshal(body, &mf) != nil || mf.Subject == nil || mf.Subject.Digest.Validate() != nil {
		return "", false
	}
	return mf.Subject.Digest, true
}

// fallbackSubject reads a referrers fallback tag (<alg>-<hex>, the hex
// cut at 64 characters): the algorithm and the start of its subject's
// encoded digest.
func fallbackSubject(tag string) (digest.Algorithm, string, bool) {
	alg, hex, ok := strings.Cut(tag, "-")
	a := digest.Algorithm(alg)
	if !ok || !a.Available() || len(hex) != min(64, a.Size()*2) || strings.Trim(hex, "0123456789abcdef") != "" {
		return "", "", false
	}
	return a, hex, true
}

// purgeTarget resolves the registry host (or alias) and repository a
// write went to.
func (m *Mirror) purgeTarget(host, repo string) (target, error) {
	route, err := oci.Resolve(repo, host, m.lookup)
	if err != nil {
		return target{}, err
	}
	return target{reg: m.byName[route.Upstream], repo: route.Repo, name: repo}, nil
}

// dropTagsOf deletes the tag records of t's repository that point to d
// and returns the tags they named.
func (m *Mirror) dropTagsOf(ctx context.Context, t target, d digest.Digest) ([]string, error) {
	tags, err := m.store.Tags(ctx, t.reg.Namespace, t.repo)
	if err != nil {
		return nil, err
	}
	var dropped []string
	var errs []error
	for _, tag := range tags {
		rec, err := m.store.GetTag(ctx, t.reg.Namespace, t.repo, tag)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		case rec.Digest != d:
			continue
		}
		if err := m.store.DeleteTag(ctx, t.reg.Namespace, t.repo, tag); err != nil {
			errs = append(errs, err)
			continue
		}
		dropped = append(dropped, tag)
	}
	return dropped, errors.Join(errs...)
}

// awaitManifestLookup waits for a by-digest lookup of d for t's repository
// that is in flight (manifestByDigest's key): one that started before the
// delete and stores the manifest after the link was removed would bring
// it back. A request that arrives meanwhile shares the answer: unknown.
func (m *Mirror) awaitManifestLookup(ctx context.Context, t target, d digest.Digest) {
	//nolint:errcheck // the lookup's own outcome does not matter: the link is removed after it either way
	m.manifests.Do(ctx, manifestLookupKey(t, d), func(context.Context) (*manifest, error) {
		return nil, oci.Errorf(http.StatusNotFound, oci.CodeManifestUnknown, "manifest %s is being deleted", d)
	})
}

// purgeFill takes the fill of d for t's repository that is in flight, if
// any, out of the map of fills (a later request starts afresh) and marks
// it purged: it commits nothing. A commit in progress is waited for, so
// that the link it makes is removed afterwards.
func (m *Mirror) purgeFill(t target, d digest.Digest) {
	m.purging.Lock()
	defer m.purging.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	k := fillKey{ns: t.reg.Namespace, d: d}
	f := m.fills[k]
	if f == nil || f.repo != t.repo {
		return
	}
	delete(m.fills, k)
	f.purged = true
}

// commitUnlessPurged commits a verified fill unless its blob was deleted
// through the shim while it ran (purgeFill); then the upload is removed
// and the fill ends with errPurged.
func (m *Mirror) commitUnlessPurged(ctx context.Context, t target, f *fill, up *storage.Upload, size int64) error {
	m.purging.RLock()
	defer m.purging.RUnlock()
	if f.purged {
		m.cancelUpload(ctx, up)
		logx.From(ctx).WithField(logx.FieldDigest, f.digest).Info("blob fill: deleted upstream meanwhile; nothing committed")
		return errPurged
	}
	return m.commit(ctx, t, f, up, size)
}
