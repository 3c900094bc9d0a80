package storage

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// fixture is an image stored through the Store API: two layers, a config,
// a manifest and an index over it, linked by two repositories.
type fixture struct {
	layer1, layer2, config, manifest, index digest.Digest
	sizes                                   map[digest.Digest]int64
}

func storeBlob(t *testing.T, s *Store, content []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(content)
	u := writeUpload(t, s, content)
	defer u.Close()
	if err := u.Commit(t.Context(), d, int64(len(content))); err != nil {
		t.Fatal(err)
	}
	return d
}

func storeSmall(t *testing.T, s *Store, content []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(content)
	if err := s.PutSmallBlob(t.Context(), d, content); err != nil {
		t.Fatal(err)
	}
	return d
}

func link(t *testing.T, s *Store, repoKey string, d digest.Digest, mediaType string) {
	t.Helper()
	ns, repo := SplitRepoKey(repoKey)
	if err := s.Link(t.Context(), ns, repo, d, LinkInfo{MediaType: mediaType, Size: 1, LinkedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func newFixture(t *testing.T, s *Store) fixture {
	t.Helper()
	var f fixture
	f.sizes = make(map[digest.Digest]int64)
	l1 := append([]byte{0x1f, 0x8b}, randomBytes(t, 3000)...)
	l2 := append([]byte{0x1f, 0x8b}, randomBytes(t, 2000)...)
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}`)
	f.layer1, f.layer2, f.config = storeBlob(t, s, l1), storeBlob(t, s, l2), storeSmall(t, s, cfg)
	m := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
		"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},
		"layers":[{"digest":%q,"size":%d},{"digest":%q,"size":%d}]}`, f.config, len(cfg), f.layer1, len(l1), f.layer2, len(l2))
	f.manifest = storeSmall(t, s, m)
	ix := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
		"manifests":[{"digest":%q,"size":%d,"platform":{"os":"linux","architecture":"amd64"}}]}`, f.manifest, len(m))
	f.index = storeSmall(t, s, ix)
	for d, n := range map[digest.Digest]int{f.layer1: len(l1), f.layer2: len(l2), f.config: len(cfg), f.manifest: len(m), f.index: len(ix)} {
		f.sizes[d] = int64(n)
	}
	for _, d := range []digest.Digest{f.layer1, f.layer2, f.config} {
		link(t, s, "docker.io/library/alpine", d, "")
	}
	link(t, s, "docker.io/library/alpine", f.manifest, "application/vnd.oci.image.manifest.v1+json")
	link(t, s, "docker.io/library/alpine", f.index, "application/vnd.oci.image.index.v1+json")
	link(t, s, "registry.local_5000/team/sub/app", f.layer1, "")
	link(t, s, "registry.local_5000/team/sub/app", f.manifest, "application/vnd.oci.image.manifest.v1+json")
	// A tag record and a tag list are not blobs.
	if err := s.PutTag(t.Context(), "docker.io", "library/alpine", "3", TagRecord{Digest: f.index}); err != nil {
		t.Fatal(err)
	}
	return f
}

// indexesFor returns the index implementations to run with backend b:
// all of them, but S3 only with the in-memory one (what the index does is
// no business of the driver's, and every S3 run costs round trips).
func indexesFor(b backend) []indexImpl {
	if b.name == "s3" {
		return indexImpls()[:1]
	}
	return indexImpls()
}

func TestRebuildIndex(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range allBackends() {
		for _, impl := range indexesFor(b) {
			t.Run(b.name+"/"+impl.name, func(t *testing.T) {
				s := b.new(t)
				f := newFixture(t, s)
				idx := impl.open(t)
				// Already indexed with a later access: the rebuild keeps it.
				later := time.Now().Add(time.Hour).UTC()
				mustPut(t, idx, IndexEntry{Digest: f.layer2, Size: f.sizes[f.layer2], Kind: KindBlob, Added: t0, LastAccess: later})
				// Indexed, but the blob is gone.
				mustPut(t, idx, entry("dangling", 99, t0))
				var progress []int
				rec, err := s.RebuildIndex(ctx, idx, func(n int) { progress = append(progress, n) })
				if err != nil {
					t.Fatal(err)
				}
				if rec != (Reconcile{Added: 4, Removed: 1}) {
					t.Fatalf("Reconcile = %+v, want 4 added, 1 removed", rec)
				}
				if !slices.Equal(progress, []int{5}) {
					t.Fatalf("progress = %v", progress)
				}
				alpine, app := "docker.io/library/alpine", "registry.local_5000/team/sub/app"
				children := []digest.Digest{f.config, f.layer1, f.layer2}
				slices.Sort(children)
				want := map[digest.Digest]struct {
					kind     string
					repos    []string
					children []digest.Digest
				}{
					f.layer1:   {KindBlob, []string{alpine, app}, nil},
					f.layer2:   {KindBlob, []string{alpine}, nil},
					f.config:   {KindBlob, []string{alpine}, nil},
					f.manifest: {KindManifest, []string{alpine, app}, children},
					f.index:    {KindManifest, []string{alpine}, []digest.Digest{f.manifest}},
				}
				for d, w := range want {
					e := mustGet(t, idx, d)
					if e.Kind != w.kind || e.Size != f.sizes[d] || !slices.Equal(e.Repos, w.repos) || !slices.Equal(e.Children, w.children) {
						t.Errorf("%s = %+v, want kind %s size %d repos %v children %v", d, e, w.kind, f.sizes[d], w.repos, w.children)
					}
					if e.LastAccess.IsZero() || e.Added.IsZero() {
						t.Errorf("%s: times not set: %+v", d, e)
					}
				}
				if e := mustGet(t, idx, f.layer2); !e.LastAccess.Equal(later) || !e.Added.Equal(t0) {
					t.Errorf("recorded times not kept: %+v", e)
				}
				if _, ok, _ := idx.Get(ctx, dig("dangling")); ok {
					t.Error("dangling entry kept")
				}
				if refs, _ := idx.Referrers(ctx, f.layer1); !slices.Equal(refs, []digest.Digest{f.manifest}) {
					t.Errorf("Referrers(layer1) = %v", refs)
				}
				var total int64
				for _, n := range f.sizes {
					total += n
				}
				if n, c, _ := idx.Usage(ctx); n != total || c != 5 {
					t.Errorf("Usage = %d, %d; want %d, 5", n, c, total)
				}
				// A second rebuild changes nothing.
				if rec, err := s.RebuildIndex(ctx, idx, nil); err != nil || rec != (Reconcile{}) {
					t.Fatalf("second rebuild = %+v, %v", rec, err)
				}
			})
		}
	}
}

func TestReconcile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range allBackends() {
		for _, impl := range indexesFor(b) {
			t.Run(b.name+"/"+impl.name, func(t *testing.T) {
				s := b.new(t)
				f := newFixture(t, s)
				idx := impl.open(t)
				if _, err := s.RebuildIndex(ctx, idx, nil); err != nil {
					t.Fatal(err)
				}
				// A blob without entry (a crash between commit and Put), a
				// dangling entry (a crash between Remove and delete, or a
				// hand-deleted blob), and an entry put while the check runs.
				if err := idx.Remove(ctx, f.manifest); err != nil {
					t.Fatal(err)
				}
				mustPut(t, idx, entry("dangling", 10, t0, "docker.io/library/alpine"))
				mustPut(t, idx, entry("in-flight", 10, time.Now().Add(time.Hour)))
				rec, err := s.Reconcile(ctx, idx)
				if err != nil {
					t.Fatal(err)
				}
				if rec != (Reconcile{Added: 1, Removed: 1}) {
					t.Fatalf("Reconcile = %+v, want 1 added, 1 removed", rec)
				}
				e := mustGet(t, idx, f.manifest)
				if e.Kind != KindManifest || len(e.Children) != 3 || len(e.Repos) != 2 {
					t.Fatalf("restored entry = %+v", e)
				}
				if _, ok, _ := idx.Get(ctx, dig("dangling")); ok {
					t.Fatal("dangling entry kept")
				}
				if _, ok, _ := idx.Get(ctx, dig("in-flight")); !ok {
					t.Fatal("an entry put during the check was removed")
				}
				if err := idx.Remove(ctx, dig("in-flight")); err != nil {
					t.Fatal(err)
				}
				if rec, err := s.Reconcile(ctx, idx); err != nil || rec != (Reconcile{}) {
					t.Fatalf("second Reconcile = %+v, %v", rec, err)
				}
			})
		}
	}
}

func TestRebuildManyBlobs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, impl := range indexImpls() {
		t.Run(impl.name, func(t *testing.T) {
			s := backends()[0].new(t)
			const n = progressEvery + putChunk/2
			for i := range n {
				storeSmall(t, s, []byte(fmt.Sprintf("\x1f\x8bblob %d", i)))
			}
			idx := impl.open(t)
			var progress []int
			rec, err := s.RebuildIndex(ctx, idx, func(n int) { progress = append(progress, n) })
			if err != nil || rec != (Reconcile{Added: n}) {
				t.Fatalf("RebuildIndex = %+v, %v", rec, err)
			}
			if !slices.Equal(progress, []int{progressEvery, n}) {
				t.Fatalf("progress = %v", progress)
			}
			if _, c, _ := idx.Usage(ctx); c != n {
				t.Fatalf("%d entries, want %d", c, n)
			}
		})
	}
}

func TestRebuildEmptyStorage(t *testing.T) {
	t.Parallel()
	for _, b := range allBackends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			idx := NewMemIndex()
			if rec, err := s.RebuildIndex(t.Context(), idx, nil); err != nil || rec != (Reconcile{}) {
				t.Fatalf("RebuildIndex on empty storage = %+v, %v", rec, err)
			}
		})
	}
}

func TestManifestChildren(t *testing.T) {
	t.Parallel()
	a, b, c := dig("a"), dig("b"), dig("c")
	sorted := func(ds ...digest.Digest) []digest.Digest { slices.Sort(ds); return ds }
	cases := []struct {
		name   string
		body   string
		want   []digest.Digest
		wantOK bool
	}{
		{"oci manifest", fmt.Sprintf(`{"schemaVersion":2,"config":{"digest":%q},"layers":[{"digest":%q},{"digest":%q}]}`, a, b, c), sorted(a, b, c), true},
		{"docker list", fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"digest":%q},{"digest":%q}]}`, a, b), sorted(a, b), true},
		{"empty index", `{"schemaVersion":2,"manifests":[]}`, nil, true},
		{"schema1 with repeated layers", fmt.Sprintf(`{"schemaVersion":1,"fsLayers":[{"blobSum":%q},{"blobSum":%q},{"blobSum":%q}]}`, a, b, a), sorted(a, b), true},
		{"invalid child digest skipped", fmt.Sprintf(`{"schemaVersion":2,"config":{"digest":"sha256:short"},"layers":[{"digest":%q}]}`, a), []digest.Digest{a}, true},
		{"image config", `{"architecture":"amd64","config":{"Env":[]},"rootfs":{"type":"layers"}}`, nil, false},
		{"other json", `{"schemaVersion":2}`, nil, false},
		{"not json", "\x1f\x8b\x08", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ManifestChildren([]byte(tc.body))
			if ok != tc.wantOK || !slices.Equal(got, tc.want) {
				t.Fatalf("ManifestChildren = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
