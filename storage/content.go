package storage

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// Content describes a blob or manifest just committed to the cache for a
// repository: what the cache lifecycle records about it (its size for
// the bound, the repository that links it, and for a manifest the blobs
// and child manifests it references).
type Content struct {
	Digest digest.Digest
	Size   int64
	// Manifest holds a manifest's bytes; nil for blobs.
	Manifest []byte
	// Namespace and Repo name the repository it was stored for: the
	// upstream's namespace (as in the layout) and the repository path.
	Namespace, Repo string
}

// Entry returns the index entry that records c, stored and last read at
// t.
func (c Content) Entry(t time.Time) IndexEntry {
	e := IndexEntry{Digest: c.Digest, Size: c.Size, Kind: KindBlob, Added: t, LastAccess: t,
		Repos: []string{RepoKey(c.Namespace, c.Repo)}}
	if c.Manifest != nil {
		e.Kind = KindManifest
		e.Children, _ = ManifestChildren(c.Manifest)
	}
	return e
}
