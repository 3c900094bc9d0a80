package mirror_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// TestWritesDropCachedReferrers: a cached referrers list goes when a push
// attaches a referrer (a fallback tag sha256-<hex> written, or a manifest
// whose answer names the subject in OCI-Subject) and when a referrer is
// deleted; other subjects' lists stay.
func TestWritesDropCachedReferrers(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{})
	e := newPurgeEnv(t, reg, time.Hour)
	ctx := t.Context()
	ns := oci.NamespaceFor(purgeHost)
	rec := storage.ReferrersRecord{Index: json.RawMessage(`{"schemaVersion":2,"manifests":[]}`), FetchedAt: time.Now().UTC()}
	cached := func(d digest.Digest) bool {
		_, err := e.store.GetReferrers(ctx, ns, "app", d)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	put := func(ds ...digest.Digest) {
		for _, d := range ds {
			if err := e.store.PutReferrers(ctx, ns, "app", d, rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	a, b, other := digest.FromString("a"), digest.FromString("b"), digest.FromString("other")
	put(a, b, other)
	if err := e.mirror.ForgetTag(ctx, purgeHost, "app", "sha256-"+a.Encoded()); err != nil {
		t.Fatal(err)
	}
	if err := e.mirror.ForgetReferrers(ctx, purgeHost, "app", b); err != nil {
		t.Fatal(err)
	}
	if cached(a) || cached(b) || !cached(other) {
		t.Fatalf("after the pushes: a %v, b %v, other %v; want only other cached", cached(a), cached(b), cached(other))
	}

	// A referrer of a, pulled through the mirror, then deleted upstream.
	put(a)
	referrer := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
		`"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + a.String() + `","size":100}}`)
	d := digest.FromBytes(referrer)
	if err := e.store.PutSmallBlob(ctx, d, referrer); err != nil {
		t.Fatal(err)
	}
	if err := e.mirror.ForgetManifest(ctx, purgeHost, "app", d); err != nil {
		t.Fatal(err)
	}
	if cached(a) || !cached(other) {
		t.Fatalf("after the referrer's delete: a %v, other %v; want only other cached", cached(a), cached(other))
	}
}
