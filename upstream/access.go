package upstream

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// Kinds of object CheckAccess can probe.
const (
	AccessManifest = "manifest"
	AccessBlob     = "blob"
	AccessTags     = "tags"
	// AccessReferrers is a referrers listing: checked as a tag listing of
	// the repository (a read of the repository; the referrers API itself
	// may be missing upstream).
	AccessReferrers = "referrers"
)

// CheckAccess asks upstream whether the credentials in ctx may read repo:
// a HEAD of /v2/<repo>/manifests/<ref> (what "manifest") or
// /v2/<repo>/blobs/<ref> (what "blob"); for what "tags" (a tag listing)
// and "referrers" (a referrers listing) a GET of /v2/<repo>/tags/list?n=1,
// ref unused. The credentials are those of
// auth.WithCredentials or auth.WithAuthorization; with neither the check
// is anonymous — the proxy's own keychain and static credentials are never
// used, since the point is what the client itself may read. Tokens fetched
// for the check are cached under the client's identity only.
//
// It returns nil on 2xx and the mapped *oci.Error otherwise: 401
// UNAUTHORIZED (also when the token realm rejects the credentials), 403
// DENIED, 404 MANIFEST_UNKNOWN / BLOB_UNKNOWN / NAME_UNKNOWN, 5xx
// UNAVAILABLE; a bad kind, repo or ref is a 400.
func (r *Registry) CheckAccess(ctx context.Context, repo, what, ref string) error {
	if !oci.ValidRepository(repo) {
		return oci.Errorf(http.StatusBadRequest, oci.CodeNameInvalid, "invalid repository name %q", repo)
	}
	var (
		suffix, accept string
		k              kind
		query          url.Values
		method         = http.MethodHead
	)
	switch what {
	case AccessManifest:
		if !oci.ValidTag(ref) {
			if _, err := oci.ParseDigest(ref); err != nil {
				return oci.Errorf(http.StatusBadRequest, oci.CodeManifestInvalid, "invalid manifest reference %q", ref)
			}
		}
		suffix, accept, k = "manifests/"+ref, oci.ManifestAccept, kindManifest
	case AccessBlob:
		if _, err := oci.ParseDigest(ref); err != nil {
			return err
		}
		suffix, k = "blobs/"+ref, kindBlob
	case AccessTags, AccessReferrers:
		suffix, k, query, method = "tags/list", kindOther, url.Values{"n": {"1"}}, http.MethodGet
	default:
		return oci.Errorf(http.StatusBadRequest, oci.CodeUnsupported, "unknown access check kind %q", what)
	}
	if !auth.HasOverride(ctx) {
		ctx = auth.WithCredentials(ctx, auth.Credentials{})
	}
	resp, err := r.do(ctx, method, r.url(repo, suffix, query), accept)
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return r.responseError(resp, k)
	}
	_, _ = io.CopyN(io.Discard, resp.Body, oci.MaxSmallBody) //nolint:errcheck // the answer was 2xx: a failed read only costs the connection
	resp.Body.Close()
	return nil
}
