package mirror

import (
	"context"
	"errors"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// errProve says a stored blob may be linked to the requested repository
// only by a fill through the requested upstream that verifies: the
// request is served as if the blob were not stored.
var errProve = errors.New("the blob's link needs a verified fill through this upstream")

// needsProof reports whether linking t's repository to the stored blob d
// takes more than upstream's word (a HEAD): whether a registry other
// than t's, one whose cached content is not public (Access.Restricted),
// links d, or — when the cache cannot tell which repositories link d —
// whether any such registry is configured. A lying or compromised
// upstream could otherwise unlock a private layer cached from another
// registry by answering a HEAD for its digest. Within one registry the
// HEAD stands: that registry's own access control answers for its
// repositories (docs/security.md, "Who can read what").
func (m *Mirror) needsProof(ctx context.Context, t target, d digest.Digest) bool {
	repos, known, err := m.opts.Cache.Repos(ctx, d)
	if err != nil {
		// The index's own failures are reported where they happen (a
		// shared index says once that Redis does not answer).
		logx.From(ctx).WithError(err).WithField(logx.FieldDigest, d).Debug("cache index unreadable: which repositories link the blob is unknown")
	}
	if err != nil || !known {
		return m.othersRestricted(t.reg)
	}
	for _, key := range repos {
		ns, _ := storage.SplitRepoKey(key)
		if ns == t.reg.Namespace {
			continue
		}
		reg := m.byName[ns]
		if reg == nil || reg.Namespace != ns || m.opts.Access.Restricted(reg.Host) {
			// A namespace no longer configured: its content's access is
			// unknown.
			return true
		}
	}
	return false
}

// othersRestricted reports whether a registry other than reg serves its
// cached content to fewer than everyone.
func (m *Mirror) othersRestricted(reg *Registry) bool {
	for _, r := range m.registers {
		if r.Host != reg.Host && m.opts.Access.Restricted(r.Host) {
			return true
		}
	}
	return false
}
