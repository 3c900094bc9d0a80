package storage

import (
	"errors"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestTags: the tags of a repository that have a record, on every
// backend; none for a repository without records (or unknown), and a
// deleted record is no longer listed. Another repository's tags, even
// one nested under it, are not its own.
func TestTags(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, b := range allBackends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.new(t)
			if tags, err := s.Tags(ctx, "quay.io", "org/app"); err != nil || len(tags) != 0 {
				t.Fatalf("unknown repository: %q, %v", tags, err)
			}
			rec := TagRecord{Digest: digest.FromString("m"), MediaType: "application/vnd.oci.image.manifest.v1+json"}
			for _, tag := range []string{"v1", "latest", "1.0.0-rc.1", "stable"} {
				if err := s.PutTag(ctx, "quay.io", "org/app", tag, rec); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.PutTag(ctx, "quay.io", "org/app/sub", "other", rec); err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteTag(ctx, "quay.io", "org/app", "stable"); err != nil {
				t.Fatal(err)
			}
			tags, err := s.Tags(ctx, "quay.io", "org/app")
			slices.Sort(tags)
			if want := []string{"1.0.0-rc.1", "latest", "v1"}; err != nil || !slices.Equal(tags, want) {
				t.Fatalf("tags %q, %v; want %q", tags, err, want)
			}
		})
	}
}

// TestEvictorRemove: one digest removed outside of a pass: its data,
// index entry and links go, the manifests that reference it stay; a
// pinned digest or one the index does not know is left alone.
func TestEvictorRemove(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := backends()[0].new(t)
	idx := NewMemIndex()
	st := stock(t, s, idx, cacheItems)
	pinned := st.d["c"]
	ev, err := NewEvictor(s, idx, EvictOptions{Pinned: func(d digest.Digest) bool { return d == pinned }})
	if err != nil {
		t.Fatal(err)
	}
	if removed, err := ev.Remove(ctx, st.d["a"]); err != nil || !removed {
		t.Fatalf("Remove(a) = %v, %v", removed, err)
	}
	st.assertPresent(t, "a", false)
	st.assertPresent(t, "m1", true)
	if removed, err := ev.Remove(ctx, pinned); err != nil || removed {
		t.Fatalf("Remove(pinned) = %v, %v", removed, err)
	}
	st.assertPresent(t, "c", true)
	if removed, err := ev.Remove(ctx, st.d["a"]); err != nil || removed {
		t.Fatalf("Remove of a digest no longer indexed = %v, %v", removed, err)
	}
	if b, n, err := idx.Usage(ctx); err != nil || b != st.total-st.sizeOf("a") || n != int64(len(cacheItems)-1) {
		t.Fatalf("usage %d bytes, %d entries, %v", b, n, err)
	}
	if _, err := s.StatBlob(ctx, st.d["a"]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed blob: %v", err)
	}
}
