package storage

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// TestRebuildIndexTagList: an index rebuilt from the storage (and du
// beside a running proxy, which walks it) counts a stored tag list as
// content of its repository, not of nobody; records of older versions,
// which hold the tags themselves, name no blob.
func TestRebuildIndexTagList(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			body, d, err := EncodeTagList("docker.io", "library/alpine", []string{"3", "latest"})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.PutTagList(ctx, "docker.io", "library/alpine", d, body, time.Now()); err != nil {
				t.Fatal(err)
			}
			old := []byte(`{"tags":["v1"],"fetchedAt":"2025-01-01T00:00:00Z"}`)
			huge := append([]byte(`{"tags":["`), append(bytes.Repeat([]byte("x"), 8<<10), `"]}`...)...)
			for repo, rec := range map[string][]byte{"org/old": old, "org/huge": huge} {
				if err := s.driver.PutContent(ctx, tagListPath("quay.io", repo), rec); err != nil {
					t.Fatal(err)
				}
			}
			idx := NewMemIndex()
			defer idx.Close()
			if _, err := s.RebuildIndex(ctx, idx, nil); err != nil {
				t.Fatal(err)
			}
			e, ok, err := idx.Get(ctx, d)
			if err != nil || !ok || e.Kind != KindBlob || e.Size != int64(len(body)) || !slices.Equal(e.Repos, []string{"docker.io/library/alpine"}) {
				t.Fatalf("tag list entry %+v, %v, %v; want a blob of %d bytes of docker.io/library/alpine", e, ok, err, len(body))
			}
			rows, err := s.Usage(ctx, idx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 2 || rows[0].Upstream != "docker.io" || rows[0].Repo != "library/alpine" || rows[0].Bytes != int64(len(body)) {
				t.Fatalf("du rows %+v; want library/alpine with the list's %d bytes, and the total", rows, len(body))
			}
		})
	}
}
