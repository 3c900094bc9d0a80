package storage

import (
	"path"

	"github.com/opencontainers/go-digest"
)

// The layout of the cache on the storage driver. Driver paths may only hold
// [A-Za-z0-9._-] and '/', never ':', so digests are split into algorithm
// and hex, and upstreams are named by their namespace (host with ':'
// replaced by '_').
//
//	<root>/
//	├── blobs/
//	│   └── sha256/                     or sha512/: digests of either algorithm
//	│       └── ab/
//	│           └── abcdef…/
//	│               └── data            one verified copy of every blob and
//	│                                   manifest, shared by all upstreams
//	├── repositories/
//	│   └── <upstream namespace>/       e.g. docker.io, quay.io, registry.local_5000
//	│       └── <repo…>/                e.g. library/alpine
//	│           ├── _links/
//	│           │   └── sha256/
//	│           │       └── abcdef…     JSON LinkInfo: this repository contains
//	│           │                       the blob (media type and size)
//	│           ├── _tags/
//	│           │   └── <tag>           JSON TagRecord: tag → digest, fetched at
//	│           ├── _referrers/
//	│           │   └── sha256/
//	│           │       └── abcdef…     JSON ReferrersRecord: the last referrers
//	│           │                       index of that subject, fetched at
//	│           └── _taglist            JSON: the blob holding the last
//	│                                   tags/list answer ({"name","tags"}:
//	│                                   indexed and evicted like any
//	│                                   content) and when it was fetched
//	└── _uploads/
//	    └── <id>/
//	        └── data                    fills in progress; never served,
//	                                    moved into blobs/ after verification,
//	                                    stale ones removed at start
//
// Repository path components always start with [a-z0-9], so they never
// collide with the '_'-prefixed directories.
const (
	blobsRoot   = "/blobs"
	reposRoot   = "/repositories"
	uploadsRoot = "/_uploads"
)

// BlobPath returns the driver path of a blob's data.
func BlobPath(d digest.Digest) string {
	hex := d.Encoded()
	return path.Join(blobsRoot, string(d.Algorithm()), hex[:2], hex, "data")
}

func repoPath(ns, repo string) string {
	return path.Join(reposRoot, ns, repo)
}

func linkPath(ns, repo string, d digest.Digest) string {
	return path.Join(repoPath(ns, repo), "_links", string(d.Algorithm()), d.Encoded())
}

func tagsDir(ns, repo string) string {
	return path.Join(repoPath(ns, repo), "_tags")
}

func tagPath(ns, repo, tag string) string {
	return path.Join(tagsDir(ns, repo), tag)
}

// tagListName is the file name of a repository's tag list record.
const tagListName = "_taglist"

func tagListPath(ns, repo string) string {
	return path.Join(repoPath(ns, repo), tagListName)
}

func uploadDir(id string) string {
	return path.Join(uploadsRoot, id)
}

func uploadPath(id string) string {
	return path.Join(uploadDir(id), "data")
}
