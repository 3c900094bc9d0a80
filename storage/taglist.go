package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// TagList is the last tags/list answer of a repository.
type TagList struct {
	// Tags are the repository's tags.
	Tags []string
	// FetchedAt is when upstream sent them.
	FetchedAt time.Time
	// Digest names the blob holding the list; "" for a record written by
	// an older version, which held the tags itself.
	Digest digest.Digest
}

// tagListRecord is a repository's _taglist record: which blob holds its
// last tag list, and when upstream sent it.
type tagListRecord struct {
	Digest    digest.Digest `json:"digest,omitempty"`
	Size      int64         `json:"size,omitempty"`
	FetchedAt time.Time     `json:"fetchedAt"`
	// Tags is the list itself, in the records of older versions.
	Tags []string `json:"tags,omitempty"`
}

// tagListBody is a stored tag list. It names its repository, so that two
// repositories with the same tags never share one blob: each list is
// counted, and evicted, as its own content.
type tagListBody struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// EncodeTagList returns the stored form of the tag list of repo of
// upstream namespace ns (a JSON document naming the repository) and its
// sha256 digest, for PutTagList.
func EncodeTagList(ns, repo string, tags []string) ([]byte, digest.Digest, error) {
	if tags == nil {
		tags = []string{}
	}
	body, err := json.Marshal(tagListBody{Name: RepoKey(ns, repo), Tags: tags})
	if err != nil {
		return nil, "", fmt.Errorf("tag list of %s/%s: %w", ns, repo, err)
	}
	return body, digest.SHA256.FromBytes(body), nil
}

// PutTagList stores body (EncodeTagList's, with digest d) as the last tag
// list of repo: as a blob, written only when not stored yet, then the
// record naming it. The list is content like any other: the caller
// records it in the cache index (Content{Digest: d, Size: len(body)}), so
// that its bytes count toward the cache's bound and eviction removes it
// when nobody reads it; a record whose blob was evicted reads as
// ErrNotFound. Both go through the same write path as blobs and records.
func (s *Store) PutTagList(ctx context.Context, ns, repo string, d digest.Digest, body []byte, fetchedAt time.Time) error {
	size, err := s.StatBlob(ctx, d)
	switch {
	case errors.Is(err, ErrNotFound), err == nil && size != int64(len(body)):
		if err := s.PutSmallBlob(ctx, d, body); err != nil {
			return fmt.Errorf("tag list of %s/%s: %w", ns, repo, err)
		}
	case err != nil:
		return fmt.Errorf("tag list of %s/%s: %w", ns, repo, err)
	}
	return s.putJSON(ctx, tagListPath(ns, repo), tagListRecord{Digest: d, Size: int64(len(body)), FetchedAt: fetchedAt.UTC()})
}

// GetTagList returns the last stored tag list of repo, reading at most
// max bytes of it; ErrNotFound when there is none, when its blob was
// evicted, or when it is unreadable. A record of an older version, which
// held the tags itself, is read as well (Digest "").
func (s *Store) GetTagList(ctx context.Context, ns, repo string, max int64) (TagList, error) {
	var rec tagListRecord
	if err := s.getJSON(ctx, tagListPath(ns, repo), &rec); err != nil {
		return TagList{}, err
	}
	if rec.Digest == "" {
		if rec.Tags == nil {
			return TagList{}, fmt.Errorf("tag list of %s/%s: record without a list: %w", ns, repo, ErrNotFound)
		}
		return TagList{Tags: rec.Tags, FetchedAt: rec.FetchedAt}, nil
	}
	if err := rec.Digest.Validate(); err != nil {
		return TagList{}, fmt.Errorf("tag list of %s/%s: %w: %w", ns, repo, err, ErrNotFound)
	}
	body, err := s.ReadSmallBlob(ctx, rec.Digest, max)
	if err != nil {
		return TagList{}, fmt.Errorf("tag list of %s/%s: %w", ns, repo, err)
	}
	var b tagListBody
	if err := json.Unmarshal(body, &b); err != nil || b.Name != RepoKey(ns, repo) || b.Tags == nil {
		return TagList{}, fmt.Errorf("tag list of %s/%s: blob %s is not its tag list: %w", ns, repo, rec.Digest, ErrNotFound)
	}
	return TagList{Tags: slices.Clip(b.Tags), FetchedAt: rec.FetchedAt, Digest: rec.Digest}, nil
}

// tagListFile is a _taglist record met by a walk of the repositories.
type tagListFile struct {
	path  string
	size  int64
	mtime time.Time
}

// maxTagListRecord bounds the _taglist records a walk reads: one naming
// its blob is about 150 bytes; a larger one is an older version's record
// holding the tags, with no blob to attribute.
const maxTagListRecord = 4 << 10

// addTagLists counts the blob that each _taglist record names as linked
// by its repository (no _links file is written for it: the list is not a
// blob of the repository's to serve), so that an index rebuilt from the
// storage, and du beside a running proxy, attribute stored tag lists to
// their repositories. Records gone or damaged since the walk are skipped.
func (s *Store) addTagLists(ctx context.Context, files []tagListFile, links map[digest.Digest]*linkSet) error {
	for _, f := range files {
		repo := strings.TrimSuffix(strings.TrimPrefix(f.path, reposRoot+"/"), "/"+tagListName)
		if f.size > maxTagListRecord || !strings.Contains(repo, "/") {
			continue
		}
		var rec tagListRecord
		if err := s.getJSON(ctx, f.path, &rec); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return fmt.Errorf("tag list record %s: %w", f.path, err)
		}
		if rec.Digest == "" || rec.Digest.Validate() != nil {
			continue
		}
		ls := links[rec.Digest]
		if ls == nil {
			ls = &linkSet{}
			links[rec.Digest] = ls
		}
		ls.repos = append(ls.repos, repo)
		if f.mtime.After(ls.latest) {
			ls.latest = f.mtime
		}
	}
	return nil
}
