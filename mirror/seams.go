package mirror

import (
	"context"
	"io"
	"net/http"

	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// Cache is the cache lifecycle the mirror reports to: the size bound,
// the index of what is stored, access times and what is in use
// (docs/architecture.md, "Seams"). cache.Lifecycle implements it for one
// process over any index; the mirror never evicts or indexes anything
// itself. Methods named for what happens, so that a lifecycle shared by
// several replicas implements the same contract.
type Cache interface {
	// Admit reports whether content of size bytes may be stored at all; a
	// blob that may not is streamed to its clients and not kept.
	Admit(size int64) bool
	// Reserve makes room for size bytes about to be committed. It is
	// called by fills, after the bytes were verified: never on a hit.
	Reserve(ctx context.Context, size int64) error
	// Committed records content just committed for a repository.
	Committed(ctx context.Context, c storage.Content) error
	// Linked records that a repository was found to contain d, which was
	// already cached.
	Linked(ctx context.Context, d digest.Digest, namespace, repo string) error
	// Unlinked records that a repository no longer contains d (deleted
	// upstream through the shim; the mirror removed the link first).
	// Content that no other repository links is removed, unless it is in
	// use (pinned).
	Unlinked(ctx context.Context, d digest.Digest, namespace, repo string) error
	// Hit records a read of cached content. It must not block.
	Hit(d digest.Digest)
	// Pin marks d as in use (being filled or served) until unpin is
	// called: it must not be evicted meanwhile.
	Pin(d digest.Digest) (unpin func())
	// Repos returns the repositories known to link the cached content d,
	// as storage.RepoKey values; known is false when the cache cannot
	// tell (no index, or one being rebuilt). They decide whether another
	// registry's word suffices to link d (docs/security.md, "Who can read
	// what").
	Repos(ctx context.Context, d digest.Digest) (repos []string, known bool, err error)
	// LowOnDisk reports whether the disk holding the cache has less free
	// space than the cache must leave (its floor): a fill spooling there
	// stops spooling, relays the rest of its blob and keeps nothing. It
	// is asked every few MiB a fill spools, so it must be cheap.
	LowOnDisk() bool
}

// Access decides who may read what (auth.Guard implements it with the
// access policy in force).
type Access interface {
	// Authorize decides whether the client of r may read repo of the
	// registry host (kind "manifest", "blob", "tags" or "referrers"; ref
	// a tag or digest). It returns the context for upstream requests made
	// for this client, the client's identity for logs, and nil or an OCI
	// error (401 with a challenge, 403).
	Authorize(r *http.Request, host, repo, kind, ref string) (context.Context, string, error)
	// AuthorizeBase decides the registry base endpoint (/v2/) for r.
	AuthorizeBase(r *http.Request) error
	// Restricted reports whether what is cached from the registry host
	// is not served to anyone who reaches the proxy (an access mode other
	// than public): a blob such a registry links is linked to another
	// registry's repository only after a fill through that registry
	// verified it.
	Restricted(host string) bool
}

// Fetcher decides where a fill gets a blob's bytes when several processes
// share one cache (docs/architecture.md, "Seams"). The mirror asks it once
// per fill, on the fill's own context; the default fetches from upstream.
// A cluster implementation fetches from upstream only when this process
// owns the digest (holding a lease until the body is closed) and
// otherwise streams the owner's fill, resuming elsewhere if the owner
// dies: content-addressed bytes are the same wherever they come from.
// Whatever it returns, the mirror verifies the bytes against the digest
// before anything is committed or a client gets the last byte.
type Fetcher interface {
	// Fetch returns the blob's body and its size (-1 when unknown).
	Fetch(ctx context.Context, f FillRequest) (body io.ReadCloser, size int64, err error)
}

// Settler is implemented by a Fetcher's body whose bytes came from
// another process that stores them too (a replica's fill): Settle returns
// once that process stored the blob or gave up (or ctx ended), and the
// fill then commits only what is not stored yet.
type Settler interface {
	Settle(ctx context.Context)
}

// FillRequest is what a Fetcher is asked for: one blob of one upstream
// repository, and the way to fetch it from that upstream.
type FillRequest struct {
	Digest digest.Digest
	// Upstream is the registry's canonical host, Repo the repository.
	Upstream, Repo string
	// ForPeer says another replica asked this one for the blob (it chose
	// this replica as the owner): the bytes must not be sought from a
	// third one but from upstream, under the digest's lease.
	ForPeer bool
	// FromUpstream opens the blob at the upstream registry from byte off
	// on (a Range request when off > 0); size is the whole blob's.
	FromUpstream func(ctx context.Context, off int64) (io.ReadCloser, int64, error)
	// Source tells the mirror where the bytes come from now ("upstream"
	// or a peer's URL), for the status page and so that a fill streamed
	// from a peer is never offered to peers in turn (no loops). Called
	// before each source is asked, again on failover.
	Source func(source string)
}

// SourceUpstream is FillRequest.Source's value for bytes from upstream.
const SourceUpstream = "upstream"

// fromUpstream is the Fetcher of a Mirror given none: every fill fetches
// from upstream itself (within one process the mirror already fetches
// each digest once).
type fromUpstream struct{}

func (fromUpstream) Fetch(ctx context.Context, f FillRequest) (io.ReadCloser, int64, error) {
	f.Source(SourceUpstream)
	return f.FromUpstream(ctx, 0)
}

// unbounded is the Cache of a Mirror given none: everything is kept and
// nothing is recorded (tests, tools).
type unbounded struct{}

func (unbounded) Admit(int64) bool                                              { return true }
func (unbounded) Reserve(context.Context, int64) error                          { return nil }
func (unbounded) Committed(context.Context, storage.Content) error              { return nil }
func (unbounded) Linked(context.Context, digest.Digest, string, string) error   { return nil }
func (unbounded) Unlinked(context.Context, digest.Digest, string, string) error { return nil }
func (unbounded) Hit(digest.Digest)                                             {}
func (unbounded) Pin(digest.Digest) func()                                      { return func() {} }
func (unbounded) LowOnDisk() bool                                               { return false }
func (unbounded) Repos(context.Context, digest.Digest) ([]string, bool, error) {
	return nil, false, nil
}

// open is the Access of a Mirror given none: everyone may read, and
// nobody is identified.
type open struct{}

func (open) Authorize(r *http.Request, _, _, _, _ string) (context.Context, string, error) {
	return r.Context(), "", nil
}
func (open) AuthorizeBase(*http.Request) error { return nil }
func (open) Restricted(string) bool            { return false }
