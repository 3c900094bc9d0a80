package storage

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Temporary files. The proxy writes through the storage driver, and
// distribution's filesystem driver writes every PutContent (tag and
// referrers records, links, manifests into their upload, the readiness
// probe) to "<path>.<uuid>.tmp" first and renames it into place. A write
// that fails (ENOSPC when the buffered bytes are flushed) returns without
// removing that file, and a process killed between the write and the
// rename leaves it too. Both are cleaned: putContent removes the leftovers
// of a write that failed, and PurgeTemp removes those of an earlier run at
// start. The other drivers (inmemory, S3, GCS, Azure) write in one
// request and leave nothing.
//
// The upload files of fills (_uploads/<id>/data) are cleaned by Cancel and
// PurgeUploads; spool files of remote drivers are unlinked as soon as they
// are created, and PurgeTemp removes one a crash left in between.

// uuidLen is the length of the uuid in a driver's temporary file name.
const uuidLen = 36

// isTempName reports whether name (a base name) is a driver's temporary
// file: "<name>.<uuid>.tmp". A tag literally named like one (a tag may
// hold '.', '-' and hex digits) matches too: removing its record only
// costs a refetch.
func isTempName(name string) bool {
	rest, ok := strings.CutSuffix(name, ".tmp")
	if !ok || len(rest) < uuidLen+2 || rest[len(rest)-uuidLen-1] != '.' {
		return false
	}
	for i, c := range rest[len(rest)-uuidLen:] {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case (c < '0' || c > '9') && (c < 'a' || c > 'f'):
			return false
		}
	}
	return true
}

// cleanFailedPut removes the temporary files of a PutContent of p that
// failed: "<p>.<uuid>.tmp" beside p. A concurrent write of the same path
// whose temporary file is removed fails too and is retried by its caller
// like any failed write; on a full disk it would have failed anyway.
func cleanFailedPut(ctx context.Context, d causeDriver, p string) error {
	ctx = context.WithoutCancel(ctx)
	names, err := d.StorageDriver.List(ctx, path.Dir(p))
	if err != nil {
		if notFound(withCause(err)) {
			return nil
		}
		return withCause(err)
	}
	var errs []error
	for _, n := range names {
		base := path.Base(n)
		if !strings.HasPrefix(base, path.Base(p)+".") || !isTempName(base) || len(base) != len(path.Base(p))+uuidLen+len("..tmp") {
			continue
		}
		if err := d.StorageDriver.Delete(ctx, n); err != nil && !notFound(withCause(err)) {
			errs = append(errs, withCause(err))
		}
	}
	return errors.Join(errs...)
}

// PurgeTemp removes the temporary files that writes of an earlier run left
// behind (see above): with the filesystem driver, every driver temporary
// file under the cache directory except blobs/ (which only receives
// renames) and readiness probe files, last modified more than olderThan
// ago; and spool files of remote drivers in the spool directory. Files
// younger than olderThan may belong to a process sharing the storage and
// are kept. It returns how many files it removed.
func (s *Store) PurgeTemp(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	if s.localRoot == "" {
		return purgeSpool(s.spoolDir, cutoff)
	}
	n := 0
	skip := filepath.Join(s.localRoot, filepath.FromSlash(blobsRoot))
	health := filepath.Join(s.localRoot, filepath.FromSlash(healthRoot))
	err := filepath.WalkDir(s.localRoot, func(p string, e fs.DirEntry, err error) error {
		switch {
		case err != nil:
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile (eviction)
			}
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case e.IsDir() && p == skip:
			return fs.SkipDir
		case e.IsDir() || !e.Type().IsRegular():
			return nil
		}
		if !isTempName(e.Name()) && (filepath.Dir(p) != health || !strings.HasPrefix(e.Name(), "probe-")) {
			return nil
		}
		removed, err := removeOlder(p, e, cutoff)
		if removed {
			n++
		}
		return err
	})
	return n, err
}

// removeOlder removes the file p when it was last modified before cutoff.
func removeOlder(p string, e fs.DirEntry, cutoff time.Time) (bool, error) {
	fi, err := e.Info()
	if err != nil || !fi.ModTime().Before(cutoff) {
		return false, nil //nolint:nilerr // gone meanwhile, or too young: kept
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// purgeSpool removes spool files ("crp-spool-*", unlinked as soon as they
// are created) that a crash left in dir before cutoff.
func purgeSpool(dir string, cutoff time.Time) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), spoolPrefix) {
			removed, err := removeOlder(filepath.Join(dir, e.Name()), e, cutoff)
			if err != nil {
				return n, err
			}
			if removed {
				n++
			}
		}
	}
	return n, nil
}
