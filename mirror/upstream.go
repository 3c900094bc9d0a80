package mirror

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// Upstream is what the mirror needs from one upstream registry. Errors are
// (or wrap) *oci.Error so they map to the right client status:
// 404 → MANIFEST_UNKNOWN/BLOB_UNKNOWN/NAME_UNKNOWN, 401 → UNAUTHORIZED,
// 403 → DENIED, 429 → TOOMANYREQUESTS (RetryAfter set, delay-seconds),
// 503 with Retry-After → 503 UNAVAILABLE (RetryAfter set), other upstream
// 5xx → 502 UNAVAILABLE, connection failures → 502, timeouts → 504. A 429
// or a 503 with RetryAfter holds the upstream (throttle.go).
type Upstream interface {
	// Manifest fetches /v2/<repo>/manifests/<ref> with the full Accept set.
	// With head=true it sends HEAD and returns a nil body. The descriptor
	// carries Content-Type, Docker-Content-Digest ("" when absent) and
	// Content-Length (-1 when absent). The body is bounded by the caller.
	Manifest(ctx context.Context, repo, ref string, head bool) (oci.Descriptor, io.ReadCloser, error)
	// Blob opens /v2/<repo>/blobs/<dgst>, following redirects without the
	// registry's credentials. size is -1 when upstream did not send it.
	Blob(ctx context.Context, repo string, dgst digest.Digest) (body io.ReadCloser, size int64, err error)
	// BlobFrom is Blob from byte off on (a Range request), to resume a
	// download; size is the whole blob's.
	BlobFrom(ctx context.Context, repo string, dgst digest.Digest, off int64) (body io.ReadCloser, size int64, err error)
	// StatBlob sends HEAD /v2/<repo>/blobs/<dgst> and returns the size.
	StatBlob(ctx context.Context, repo string, dgst digest.Digest) (int64, error)
	// Get sends GET /v2/<repo>/<suffix>?<query> (tags/list, referrers/…)
	// and returns a 2xx response whose body the caller closes; any other
	// status is returned as an error.
	Get(ctx context.Context, repo, suffix string, query url.Values) (*http.Response, error)
}
