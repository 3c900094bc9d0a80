package storage

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// Reconcile counts the repairs of RebuildIndex and Store.Reconcile.
type Reconcile struct {
	// Added counts stored blobs that had no index entry.
	Added int
	// Removed counts index entries whose blob was gone.
	Removed int
}

// progressEvery is how many blobs RebuildIndex indexes between calls of
// its progress function; putChunk how many entries it puts at once.
const (
	progressEvery = 1000
	putChunk      = 250
)

// bulkPutter is an Index that can put many entries at once (one
// transaction, one round trip).
type bulkPutter interface {
	PutMany(ctx context.Context, es []IndexEntry) error
}

func putMany(ctx context.Context, idx Index, es []IndexEntry) error {
	if bp, ok := idx.(bulkPutter); ok {
		return bp.PutMany(ctx, es)
	}
	for _, e := range es {
		if err := idx.Put(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// RebuildIndex fills idx from a walk of the storage: every blob under
// blobs/ (size; Added and LastAccess from the file's time, or the newest
// of its links' times when later, since the real access times died with
// the old index), the repositories linking it (repositories/*/_links), and
// for manifests (recognised by their content) their children. Entries are
// merged (Put), so access times already recorded are kept. Entries whose
// blob is gone are removed. progress, when set, is called every 1000 blobs
// and at the end with the number indexed so far.
//
// It is safe to run while the proxy serves and writes the same index:
// entries put after the walk started are never removed, and an entry is
// only removed after a second look finds its blob gone. A blob evicted
// during the walk may come back as an entry without data; the next
// Reconcile removes it and eviction tolerates it meanwhile.
func (s *Store) RebuildIndex(ctx context.Context, idx Index, progress func(n int)) (Reconcile, error) {
	return s.reconcile(ctx, idx, true, progress)
}

// Reconcile is the start-up check: it compares the blobs on the storage
// with the index, adds entries for blobs without one (reading links and
// the manifest only for those) and removes entries whose blob is gone. It
// lists the storage but reads no content of blobs already indexed. The
// counts are for a log line.
func (s *Store) Reconcile(ctx context.Context, idx Index) (Reconcile, error) {
	return s.reconcile(ctx, idx, false, nil)
}

type blobFile struct {
	size  int64
	mtime time.Time
}

type linkSet struct {
	repos  []string
	latest time.Time
}

func (s *Store) reconcile(ctx context.Context, idx Index, full bool, progress func(int)) (Reconcile, error) {
	var rec Reconcile
	started := time.Now()
	blobs, indexed, err := s.snapshot(ctx, idx)
	if err != nil {
		return rec, err
	}
	var todo []digest.Digest
	for d, b := range blobs {
		if e, ok := indexed[d]; full || !ok || e.Size != b.size {
			todo = append(todo, d)
		}
	}
	slices.Sort(todo)
	if rec.Added, err = s.indexBlobs(ctx, idx, todo, blobs, indexed, progress); err != nil {
		return rec, err
	}
	rec.Removed, err = s.dropGone(ctx, idx, blobs, indexed, started)
	return rec, err
}

// snapshot lists the blobs on the storage and the entries of the index
// (without their repositories and children).
func (s *Store) snapshot(ctx context.Context, idx Index) (map[digest.Digest]blobFile, map[digest.Digest]IndexEntry, error) {
	blobs := make(map[digest.Digest]blobFile)
	err := s.walkBlobs(ctx, func(d digest.Digest, size int64, mtime time.Time) error {
		blobs[d] = blobFile{size, mtime}
		return nil
	}, func() { clear(blobs) })
	if err != nil {
		return nil, nil, fmt.Errorf("index rebuild: walking blobs: %w", err)
	}
	indexed := make(map[digest.Digest]IndexEntry)
	err = idx.Walk(ctx, ByDigest, func(e IndexEntry) (bool, error) {
		e.Repos, e.Children = nil, nil
		indexed[e.Digest] = e
		return true, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("index rebuild: reading the index: %w", err)
	}
	return blobs, indexed, nil
}

// indexBlobs puts the entries of the blobs in todo, in chunks, reading
// the repository links once; blobs deleted since the walk are dropped
// from blobs. It returns how many had no entry before.
func (s *Store) indexBlobs(ctx context.Context, idx Index, todo []digest.Digest, blobs map[digest.Digest]blobFile, indexed map[digest.Digest]IndexEntry, progress func(int)) (int, error) {
	if len(todo) == 0 {
		if progress != nil {
			progress(0)
		}
		return 0, nil
	}
	links, err := s.walkLinks(ctx)
	if err != nil {
		return 0, fmt.Errorf("index rebuild: walking repository links: %w", err)
	}
	added := 0
	chunk := make([]IndexEntry, 0, putChunk)
	for i, d := range todo {
		e, err := s.entryFromStorage(ctx, d, blobs[d], links[d])
		if errors.Is(err, ErrNotFound) {
			delete(blobs, d) // deleted since the walk
			continue
		}
		if err != nil {
			return added, err
		}
		chunk = append(chunk, e)
		if _, ok := indexed[d]; !ok {
			added++
		}
		if len(chunk) == putChunk || i == len(todo)-1 {
			if err := putMany(ctx, idx, chunk); err != nil {
				return added, fmt.Errorf("index rebuild: %w", err)
			}
			chunk = chunk[:0]
		}
		if progress != nil && (i+1)%progressEvery == 0 {
			progress(i + 1)
		}
	}
	if len(chunk) > 0 {
		if err := putMany(ctx, idx, chunk); err != nil {
			return added, fmt.Errorf("index rebuild: %w", err)
		}
	}
	if progress != nil {
		progress(len(todo))
	}
	return added, nil
}

// dropGone removes the entries indexed before the rebuild started whose
// blob is gone (looked at twice: a blob committed after the walk stays).
func (s *Store) dropGone(ctx context.Context, idx Index, blobs map[digest.Digest]blobFile, indexed map[digest.Digest]IndexEntry, started time.Time) (int, error) {
	removed := 0
	for _, d := range slices.Sorted(maps.Keys(indexed)) {
		if _, ok := blobs[d]; ok || !indexed[d].Added.Before(started) {
			continue
		}
		if _, err := s.StatBlob(ctx, d); err == nil {
			continue // committed after the walk listed blobs/
		} else if !errors.Is(err, ErrNotFound) {
			return removed, fmt.Errorf("index rebuild: %w", err)
		}
		if err := idx.Remove(ctx, d); err != nil {
			return removed, fmt.Errorf("index rebuild: %w", err)
		}
		removed++
	}
	return removed, nil
}

// entryFromStorage builds the index entry of a stored blob.
func (s *Store) entryFromStorage(ctx context.Context, d digest.Digest, b blobFile, ls *linkSet) (IndexEntry, error) {
	at := b.mtime
	if at.IsZero() {
		at = time.Now()
	}
	e := IndexEntry{Digest: d, Size: b.size, Kind: KindBlob, Added: at, LastAccess: at}
	if ls != nil {
		e.Repos = ls.repos
		if ls.latest.After(e.LastAccess) {
			e.LastAccess = ls.latest
		}
	}
	isManifest, children, err := s.sniffManifest(ctx, d, b.size)
	if err != nil {
		return e, err
	}
	if isManifest {
		e.Kind, e.Children = KindManifest, children
	}
	return e, nil
}

// sniffManifest reads a blob that may be a manifest (small, starts with
// '{') and parses it.
func (s *Store) sniffManifest(ctx context.Context, d digest.Digest, size int64) (bool, []digest.Digest, error) {
	if size > oci.MaxManifestSize || size < 2 {
		return false, nil, nil
	}
	rc, err := s.driver.Reader(ctx, BlobPath(d), 0)
	if err != nil {
		return false, nil, wrapNotFound(err, "blob "+d.String())
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 512)
	for {
		c, err := br.ReadByte()
		if err != nil {
			return false, nil, nil
		}
		if c == '{' {
			if err := br.UnreadByte(); err != nil {
				return false, nil, err
			}
			break
		}
		if !strings.ContainsRune(" \t\r\n", rune(c)) {
			return false, nil, nil
		}
	}
	body, err := io.ReadAll(io.LimitReader(br, oci.MaxManifestSize+1))
	if err != nil {
		return false, nil, fmt.Errorf("blob %s: %w", d, err)
	}
	children, ok := ManifestChildren(body)
	return ok, children, nil
}

// ManifestChildren parses a manifest and returns the digests it references
// (config, layers, child manifests of an index; blobSums of schema 1),
// sorted and unique, and whether body is a manifest at all. An image
// config or other JSON blob is not a manifest: a manifest declares
// schemaVersion 2 with a config or a manifests list, or schemaVersion 1
// with fsLayers. The mirror passes the result as IndexEntry.Children.
func ManifestChildren(body []byte) ([]digest.Digest, bool) {
	type desc struct {
		Digest digest.Digest `json:"digest"`
	}
	var m struct {
		SchemaVersion int    `json:"schemaVersion"`
		Config        *desc  `json:"config"`
		Layers        []desc `json:"layers"`
		Manifests     []desc `json:"manifests"`
		FSLayers      []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, false
	}
	var out []digest.Digest
	add := func(d digest.Digest) {
		if d.Validate() == nil {
			out = append(out, d)
		}
	}
	switch {
	case m.SchemaVersion == 2 && (m.Config != nil || m.Manifests != nil):
		if m.Config != nil {
			add(m.Config.Digest)
		}
		for _, l := range m.Layers {
			add(l.Digest)
		}
		for _, c := range m.Manifests {
			add(c.Digest)
		}
	case m.SchemaVersion == 1 && m.FSLayers != nil:
		for _, l := range m.FSLayers {
			add(l.BlobSum)
		}
	default:
		return nil, false
	}
	return sortedUnique(out), true
}

// walkBlobs calls fn for every committed blob.
func (s *Store) walkBlobs(ctx context.Context, fn func(d digest.Digest, size int64, mtime time.Time) error, reset func()) error {
	return s.walk(ctx, blobsRoot, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		d, ok := blobPathDigest(fi.Path())
		if !ok {
			return nil
		}
		return fn(d, fi.Size(), fi.ModTime())
	}, reset)
}

// walk runs the driver's Walk from root. A directory deleted while the
// walk runs (eviction, another replica) makes the driver's walk fail; the
// walk is then started again, after reset, a few times. A missing root is
// an empty tree.
func (s *Store) walk(ctx context.Context, root string, fn storagedriver.WalkFn, reset func()) error {
	var err error
	for range 3 {
		err = s.driver.Walk(ctx, root, fn)
		var pnf storagedriver.PathNotFoundError
		if !errors.As(err, &pnf) {
			return err
		}
		if pnf.Path == root {
			return nil
		}
		if reset != nil {
			reset()
		}
	}
	return err
}

// blobPathDigest parses /blobs/<alg>/<xx>/<hex>/data.
func blobPathDigest(p string) (digest.Digest, bool) {
	parts := strings.Split(strings.TrimPrefix(p, blobsRoot+"/"), "/")
	if len(parts) != 4 || parts[3] != "data" || len(parts[2]) < 2 || parts[2][:2] != parts[1] {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
	if d.Validate() != nil || BlobPath(d) != p {
		return "", false
	}
	return d, true
}

// walkLinks returns, per digest, the repositories linking it and the time
// of the newest link; the blob of a repository's stored tag list counts
// as linked by it (addTagLists).
func (s *Store) walkLinks(ctx context.Context) (map[digest.Digest]*linkSet, error) {
	links := make(map[digest.Digest]*linkSet)
	var lists []tagListFile
	reset := func() { clear(links); lists = nil }
	err := s.walk(ctx, reposRoot, func(fi storagedriver.FileInfo) error {
		p := fi.Path()
		if fi.IsDir() {
			if strings.HasSuffix(p, "/_tags") {
				return storagedriver.ErrSkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, "/"+tagListName) {
			lists = append(lists, tagListFile{path: p, size: fi.Size(), mtime: fi.ModTime()})
			return nil
		}
		rel := strings.TrimPrefix(p, reposRoot+"/")
		i := strings.LastIndex(rel, "/_links/")
		if i < 0 {
			return nil
		}
		alg, hex, ok := strings.Cut(rel[i+len("/_links/"):], "/")
		if !ok {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
		if d.Validate() != nil || !strings.Contains(rel[:i], "/") {
			return nil
		}
		ls := links[d]
		if ls == nil {
			ls = &linkSet{}
			links[d] = ls
		}
		ls.repos = append(ls.repos, rel[:i])
		if fi.ModTime().After(ls.latest) {
			ls.latest = fi.ModTime()
		}
		return nil
	}, reset)
	if err != nil {
		return links, err
	}
	return links, s.addTagLists(ctx, lists, links)
}
