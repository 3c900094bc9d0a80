package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// ErrNotFound reports that a blob, link or record is not in the cache.
var ErrNotFound = errors.New("not found in cache")

// Options tunes a Store.
type Options struct {
	// LocalRoot is the root directory of the filesystem driver, when that
	// is the driver. Uploads are then written in place under
	// <LocalRoot>/_uploads and serve as the spool that clients read while
	// a fill runs: every byte is written once.
	LocalRoot string
	// SpoolDir is the local directory for spool files with remote drivers
	// (S3, GCS, Azure, inmemory). Default: os.TempDir().
	SpoolDir string
}

// Store is the cache on a storage driver.
type Store struct {
	driver    storagedriver.StorageDriver
	localRoot string
	spoolDir  string
	probeID   string
}

// New returns a Store on driver d.
func New(d storagedriver.StorageDriver, opts Options) (*Store, error) {
	if d == nil {
		return nil, errors.New("storage: nil driver")
	}
	if opts.SpoolDir == "" {
		opts.SpoolDir = os.TempDir()
	}
	if opts.LocalRoot != "" {
		if err := os.MkdirAll(filepath.Join(opts.LocalRoot, uploadsRoot), 0o750); err != nil {
			return nil, fmt.Errorf("storage: cache directory %s: %w", opts.LocalRoot, err)
		}
	} else if err := os.MkdirAll(opts.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("storage: spool directory %s: %w", opts.SpoolDir, err)
	}
	return &Store{driver: causeDriver{d}, localRoot: opts.LocalRoot, spoolDir: opts.SpoolDir, probeID: newUploadID()}, nil
}

func notFound(err error) bool {
	var pnf storagedriver.PathNotFoundError
	return errors.As(err, &pnf)
}

func wrapNotFound(err error, what string) error {
	if notFound(err) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// StatBlob returns the size of a committed blob, or ErrNotFound.
func (s *Store) StatBlob(ctx context.Context, d digest.Digest) (int64, error) {
	fi, err := s.driver.Stat(ctx, BlobPath(d))
	if err != nil {
		return 0, wrapNotFound(err, "blob "+d.String())
	}
	return fi.Size(), nil
}

// OpenBlob opens a committed blob at offset. With the filesystem driver
// the reader is an *os.File, which lets the HTTP server use sendfile.
func (s *Store) OpenBlob(ctx context.Context, d digest.Digest, offset int64) (io.ReadCloser, error) {
	rc, err := s.driver.Reader(ctx, BlobPath(d), offset)
	if err != nil {
		return nil, wrapNotFound(err, "blob "+d.String())
	}
	return rc, nil
}

// RedirectURL returns a URL from which the client of r reads the
// committed blob d straight from the storage, or "" when the driver has
// none (filesystem, inmemory): then the proxy serves the bytes itself. The
// s3 driver presigns a GET (or HEAD, after r's method) of the blob's data
// object valid for 20 minutes, on its redirectendpoint when one is
// configured; gcs and azure sign a URL of the same lifetime. It checks
// neither that d is stored nor that the client may read it: the caller
// does both first. The URL is a credential for that object: never log it.
func (s *Store) RedirectURL(r *http.Request, d digest.Digest) (string, error) {
	u, err := s.driver.RedirectURL(r, BlobPath(d))
	if err != nil {
		return "", fmt.Errorf("blob %s: redirect URL: %w", d, err)
	}
	return u, nil
}

// ReadSmallBlob reads a committed blob of at most max bytes (manifests)
// and checks it against its digest, so a damaged copy is never served.
func (s *Store) ReadSmallBlob(ctx context.Context, d digest.Digest, max int64) ([]byte, error) {
	fi, err := s.driver.Stat(ctx, BlobPath(d))
	if err != nil {
		return nil, wrapNotFound(err, "blob "+d.String())
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("blob %s: %d bytes exceeds the bound of %d", d, fi.Size(), max)
	}
	b, err := s.driver.GetContent(ctx, BlobPath(d))
	if err != nil {
		return nil, wrapNotFound(err, "blob "+d.String())
	}
	if d.Algorithm().FromBytes(b) != d {
		return nil, &VerifyError{Digest: d, Got: d.Algorithm().FromBytes(b), Size: int64(len(b))}
	}
	return b, nil
}

// PutSmallBlob stores content (a manifest) under its digest d after
// checking that it matches. The data goes to an upload path first and is
// moved into place, so a reader never sees a partial object.
func (s *Store) PutSmallBlob(ctx context.Context, d digest.Digest, content []byte) error {
	if !d.Algorithm().Available() {
		return fmt.Errorf("blob %s: unsupported algorithm", d)
	}
	if got := d.Algorithm().FromBytes(content); got != d {
		return &VerifyError{Digest: d, Got: got, Size: int64(len(content))}
	}
	id := newUploadID()
	if err := s.driver.PutContent(ctx, uploadPath(id), content); err != nil {
		return errors.Join(fmt.Errorf("blob %s: write upload: %w", d, err), s.removeUpload(context.WithoutCancel(ctx), id))
	}
	if err := s.driver.Move(ctx, uploadPath(id), BlobPath(d)); err != nil {
		return errors.Join(fmt.Errorf("blob %s: commit: %w", d, err), s.removeUpload(ctx, id))
	}
	s.clearUpload(ctx, id)
	return nil
}

// VerifyError reports content that does not match its digest or size.
type VerifyError struct {
	Digest   digest.Digest
	Got      digest.Digest
	Size     int64
	WantSize int64
}

// Error implements error.
func (e *VerifyError) Error() string {
	if e.WantSize > 0 && e.Size != e.WantSize {
		return fmt.Sprintf("blob %s: size mismatch: got %d bytes, want %d", e.Digest, e.Size, e.WantSize)
	}
	return fmt.Sprintf("blob %s: digest mismatch: content hashes to %s (%d bytes)", e.Digest, e.Got, e.Size)
}

// LinkInfo records that a repository contains a blob or manifest.
type LinkInfo struct {
	// MediaType is set for manifests (as upstream served them).
	MediaType string `json:"mediaType,omitempty"`
	Size      int64  `json:"size"`
	// LinkedAt is when the membership was confirmed.
	LinkedAt time.Time `json:"linkedAt"`
}

// Link records that repo of upstream namespace ns contains d.
func (s *Store) Link(ctx context.Context, ns, repo string, d digest.Digest, info LinkInfo) error {
	return s.putJSON(ctx, linkPath(ns, repo, d), info)
}

// HasLink reports whether repo of upstream namespace ns is known to
// contain d. It only stats the link (the blob hit path needs no more). A
// missing link is (false, nil); any other failure of the storage is
// returned, so that it is not mistaken for a missing link silently.
func (s *Store) HasLink(ctx context.Context, ns, repo string, d digest.Digest) (bool, error) {
	_, err := s.driver.Stat(ctx, linkPath(ns, repo, d))
	switch {
	case err == nil:
		return true, nil
	case notFound(err):
		return false, nil
	}
	return false, fmt.Errorf("link %s/%s@%s: %w", ns, repo, d, err)
}

// Linked returns the link of d in repo, or ErrNotFound.
func (s *Store) Linked(ctx context.Context, ns, repo string, d digest.Digest) (LinkInfo, error) {
	var li LinkInfo
	err := s.getJSON(ctx, linkPath(ns, repo, d), &li)
	return li, err
}

// TagRecord is what the cache knows about a tag.
type TagRecord struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	// FetchedAt is when upstream last confirmed the tag's digest.
	FetchedAt time.Time `json:"fetchedAt"`
}

// GetTag returns the record of a tag, or ErrNotFound.
func (s *Store) GetTag(ctx context.Context, ns, repo, tag string) (TagRecord, error) {
	var r TagRecord
	err := s.getJSON(ctx, tagPath(ns, repo, tag), &r)
	if err == nil && r.Digest.Validate() != nil {
		return TagRecord{}, fmt.Errorf("tag record %s/%s:%s: %w", ns, repo, tag, ErrNotFound)
	}
	return r, err
}

// PutTag stores the record of a tag.
func (s *Store) PutTag(ctx context.Context, ns, repo, tag string, r TagRecord) error {
	return s.putJSON(ctx, tagPath(ns, repo, tag), r)
}

// DeleteTag removes the record of a tag; a missing record is not an error.
func (s *Store) DeleteTag(ctx context.Context, ns, repo, tag string) error {
	if err := s.driver.Delete(ctx, tagPath(ns, repo, tag)); err != nil && !notFound(err) {
		return err
	}
	return nil
}

// maxRecord bounds every JSON record read back from storage.
const maxRecord = 4 << 20

func (s *Store) getJSON(ctx context.Context, p string, v any) error {
	b, err := s.driver.GetContent(ctx, p)
	if err != nil {
		return wrapNotFound(err, p)
	}
	if len(b) > maxRecord {
		return fmt.Errorf("%s: record too large (%d bytes)", p, len(b))
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(v); err != nil {
		// A record cut short by a crash reads as missing: it is refetched.
		return fmt.Errorf("%s: unreadable record (%w): %w", p, err, ErrNotFound)
	}
	return nil
}

func (s *Store) putJSON(ctx context.Context, p string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.driver.PutContent(ctx, p, b); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// DeleteBlob removes a committed blob (its directory under blobs/); a
// missing blob is not an error. Eviction calls it after removing the
// blob's index entry, so a crash in between leaves a blob without an entry,
// which Reconcile adds back.
func (s *Store) DeleteBlob(ctx context.Context, d digest.Digest) error {
	if err := s.driver.Delete(ctx, path.Dir(BlobPath(d))); err != nil && !notFound(err) {
		return fmt.Errorf("blob %s: delete: %w", d, err)
	}
	return nil
}

// Unlink removes the record that repo of upstream namespace ns contains
// d; a missing link is not an error.
func (s *Store) Unlink(ctx context.Context, ns, repo string, d digest.Digest) error {
	if err := s.driver.Delete(ctx, linkPath(ns, repo, d)); err != nil && !notFound(err) {
		return fmt.Errorf("link %s/%s@%s: delete: %w", ns, repo, d, err)
	}
	return nil
}

// Tags returns the tags of repo of upstream namespace ns that have a
// record, in no particular order; a repository without any is (nil, nil).
func (s *Store) Tags(ctx context.Context, ns, repo string) ([]string, error) {
	paths, err := s.driver.List(ctx, tagsDir(ns, repo))
	if err != nil {
		if notFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("tag records of %s/%s: %w", ns, repo, err)
	}
	tags := make([]string, 0, len(paths))
	for _, p := range paths {
		tags = append(tags, path.Base(p))
	}
	return tags, nil
}
