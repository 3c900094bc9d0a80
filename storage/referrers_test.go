package storage

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestReferrersRecord: a subject's referrers record is missing until
// stored, reads back as stored, belongs to one namespace, repository and
// subject, refuses an index that is not JSON, reads a damaged record as
// missing, and is no repository link for the walks.
func TestReferrersRecord(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.new(t)
			ctx := t.Context()
			subject := digest.FromString("subject")
			if _, err := s.GetReferrers(ctx, "quay.io", "org/app", subject); !errors.Is(err, ErrNotFound) {
				t.Fatalf("GetReferrers before PutReferrers: %v", err)
			}
			index := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
			rec := ReferrersRecord{Index: json.RawMessage(index), FetchedAt: time.Now().UTC().Truncate(time.Second)}
			if err := s.PutReferrers(ctx, "quay.io", "org/app", subject, rec); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetReferrers(ctx, "quay.io", "org/app", subject)
			if err != nil || string(got.Index) != index || !got.FetchedAt.Equal(rec.FetchedAt) {
				t.Fatalf("GetReferrers = %s %v, %v; want %s %v", got.Index, got.FetchedAt, err, index, rec.FetchedAt)
			}
			for _, other := range []struct{ ns, repo string }{{"docker.io", "org/app"}, {"quay.io", "org/other"}} {
				if _, err := s.GetReferrers(ctx, other.ns, other.repo, subject); !errors.Is(err, ErrNotFound) {
					t.Fatalf("record leaked to %s/%s: %v", other.ns, other.repo, err)
				}
			}
			if _, err := s.GetReferrers(ctx, "quay.io", "org/app", digest.FromString("other")); !errors.Is(err, ErrNotFound) {
				t.Fatalf("record leaked to another subject: %v", err)
			}
			if err := s.PutReferrers(ctx, "quay.io", "org/app", subject, ReferrersRecord{Index: json.RawMessage(`{"cut`)}); err == nil {
				t.Fatal("PutReferrers stored an index that is not JSON")
			}
			if err := s.driver.PutContent(ctx, referrersPath("quay.io", "org/app", subject), []byte(`{"index":{"sche`)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetReferrers(ctx, "quay.io", "org/app", subject); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a damaged record reads as %v, want ErrNotFound", err)
			}
			links, err := s.walkLinks(ctx)
			if err != nil || len(links) != 0 {
				t.Fatalf("walkLinks = %v, %v: a referrers record is no link", links, err)
			}
		})
	}
}

// TestDeleteReferrers: records are dropped by the whole digest or by the
// 64 characters a fallback tag keeps of it; others stay.
func TestDeleteReferrers(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.new(t)
			ctx := t.Context()
			rec := ReferrersRecord{Index: json.RawMessage(`{"schemaVersion":2,"manifests":[]}`), FetchedAt: time.Now().UTC()}
			a, c := digest.FromString("a"), digest.FromString("c")
			long := digest.SHA512.FromString("long")
			for _, d := range []digest.Digest{a, c, long} {
				if err := s.PutReferrers(ctx, "quay.io", "org/app", d, rec); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := s.DeleteReferrers(ctx, "quay.io", "org/app", a.Algorithm(), a.Encoded()); err != nil || n != 1 {
				t.Fatalf("DeleteReferrers(a) = %d, %v", n, err)
			}
			if n, err := s.DeleteReferrers(ctx, "quay.io", "org/app", long.Algorithm(), long.Encoded()[:64]); err != nil || n != 1 {
				t.Fatalf("DeleteReferrers(sha512 prefix) = %d, %v", n, err)
			}
			if n, err := s.DeleteReferrers(ctx, "quay.io", "org/none", a.Algorithm(), a.Encoded()); err != nil || n != 0 {
				t.Fatalf("DeleteReferrers in an empty repository = %d, %v", n, err)
			}
			for d, want := range map[digest.Digest]bool{a: false, long: false, c: true} {
				if _, err := s.GetReferrers(ctx, "quay.io", "org/app", d); (err == nil) != want {
					t.Errorf("record of %s present = %v, want %v", d, err == nil, want)
				}
			}
		})
	}
}
