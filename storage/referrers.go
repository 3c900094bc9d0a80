package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// ReferrersRecord is the last referrers answer of a subject: the image
// index upstream's referrers API sent, or the one built from its fallback
// tag (<alg>-<ref>), unfiltered.
type ReferrersRecord struct {
	// Index is the image index (application/vnd.oci.image.index.v1+json).
	Index json.RawMessage `json:"index"`
	// FetchedAt is when upstream last answered it.
	FetchedAt time.Time `json:"fetchedAt"`
}

// GetReferrers returns the referrers record of subject d in repo of
// upstream namespace ns, or ErrNotFound (also for a record without an
// index: it is refetched).
func (s *Store) GetReferrers(ctx context.Context, ns, repo string, d digest.Digest) (ReferrersRecord, error) {
	var r ReferrersRecord
	if err := d.Validate(); err != nil {
		return r, fmt.Errorf("referrers of %s: %w", d, err)
	}
	if err := s.getJSON(ctx, referrersPath(ns, repo, d), &r); err != nil {
		return ReferrersRecord{}, err
	}
	if len(r.Index) == 0 || r.Index[0] != '{' {
		return ReferrersRecord{}, fmt.Errorf("referrers record %s/%s@%s: no index: %w", ns, repo, d, ErrNotFound)
	}
	return r, nil
}

// PutReferrers stores the referrers record of subject d.
func (s *Store) PutReferrers(ctx context.Context, ns, repo string, d digest.Digest, r ReferrersRecord) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("referrers of %s: %w", d, err)
	}
	if !json.Valid(r.Index) {
		return fmt.Errorf("referrers record %s/%s@%s: the index is not JSON", ns, repo, d)
	}
	return s.putJSON(ctx, referrersPath(ns, repo, d), r)
}

func referrersPath(ns, repo string, d digest.Digest) string {
	return path.Join(repoPath(ns, repo), "_referrers", string(d.Algorithm()), d.Encoded())
}

// DeleteReferrers drops the referrers records of the subjects of repo
// whose digest has algorithm alg and an encoded part starting with
// prefix: the whole digest (a manifest with that subject was pushed or
// deleted), or the 64 characters a fallback tag keeps of it (a fallback
// tag was written). It returns how many it dropped; none is no error.
func (s *Store) DeleteReferrers(ctx context.Context, ns, repo string, alg digest.Algorithm, prefix string) (int, error) {
	if !alg.Available() || prefix == "" {
		return 0, nil
	}
	dir := path.Join(repoPath(ns, repo), "_referrers", string(alg))
	paths, err := s.driver.List(ctx, dir)
	if err != nil {
		if notFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("referrers records of %s/%s: %w", ns, repo, err)
	}
	n := 0
	for _, p := range paths {
		if !strings.HasPrefix(path.Base(p), prefix) {
			continue
		}
		if err := s.driver.Delete(ctx, p); err != nil && !notFound(err) {
			return n, fmt.Errorf("referrers record %s: %w", p, err)
		}
		n++
	}
	return n, nil
}
