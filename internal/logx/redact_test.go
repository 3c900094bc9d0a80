package logx_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
)

// TestRedactURI feeds RedactURI request URIs as clients, the shim and
// upstream redirects send them: the registry API's own parameters stay
// as written, every other value becomes REDACTED and no secret survives.
func TestRedactURI(t *testing.T) {
	t.Parallel()
	const digest = "sha256:9b7c6d1ad4e1e0c8b0a6bd2e7b3cd1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b"
	for _, tc := range []struct {
		name, uri, want string
		secrets         []string
	}{
		{name: "tag list page",
			uri: "/v2/quay.io/org/app/tags/list?n=50&last=v1.2.3", want: "/v2/quay.io/org/app/tags/list?n=50&last=v1.2.3"},
		{name: "containerd ns",
			uri: "/v2/library/alpine/manifests/3.20?ns=docker.io", want: "/v2/library/alpine/manifests/3.20?ns=docker.io"},
		{name: "ns value kept as the client encoded it",
			uri: "/v2/team/app/blobs/" + digest + "?ns=registry.test%3A5000", want: "/v2/team/app/blobs/" + digest + "?ns=registry.test%3A5000"},
		{name: "referrers filter",
			uri: "/v2/org/app/referrers/" + digest + "?artifactType=application%2Fvnd.example.sbom%2Bjson", want: "/v2/org/app/referrers/" + digest + "?artifactType=application%2Fvnd.example.sbom%2Bjson"},
		{name: "cross-repository mount",
			uri: "/v2/org/app/blobs/uploads/?mount=" + digest + "&from=library%2Falpine", want: "/v2/org/app/blobs/uploads/?mount=" + digest + "&from=library%2Falpine"},
		{name: "upload state",
			uri:     "/v2/org/app/blobs/uploads/5f1e2a3b-6c7d-4e8f-9a0b-1c2d3e4f5a6b?_state=eyJOYW1lIjoib3JnL2FwcCIsIlVVSUQiOiI1ZjFlIn0%3D",
			want:    "/v2/org/app/blobs/uploads/5f1e2a3b-6c7d-4e8f-9a0b-1c2d3e4f5a6b?_state=REDACTED",
			secrets: []string{"eyJOYW1lIjoib3JnL2FwcCIsIlVVSUQiOiI1ZjFlIn0"}},
		{name: "upload completion keeps the digest",
			uri:     "/v2/org/app/blobs/uploads/5f1e2a3b?_state=c2VjcmV0LXN0YXRl&digest=" + digest,
			want:    "/v2/org/app/blobs/uploads/5f1e2a3b?_state=REDACTED&digest=" + digest,
			secrets: []string{"c2VjcmV0LXN0YXRl"}},
		{name: "S3 presigned blob redirect",
			uri: "/docker/registry/v2/blobs/sha256/9b/9b7c/data?X-Amz-Algorithm=AWS4-HMAC-SHA256" +
				"&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z" +
				"&X-Amz-Expires=1200&X-Amz-SignedHeaders=host&X-Amz-Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
			want: "/docker/registry/v2/blobs/sha256/9b/9b7c/data?X-Amz-Algorithm=REDACTED&X-Amz-Credential=REDACTED&X-Amz-Date=REDACTED" +
				"&X-Amz-Expires=REDACTED&X-Amz-SignedHeaders=REDACTED&X-Amz-Signature=REDACTED",
			secrets: []string{"AKIAIOSFODNN7EXAMPLE", "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024"}},
		{name: "GCS signed URL",
			uri:     "/bucket/blob?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=svc%40proj.iam.gserviceaccount.com&X-Goog-Signature=0a1b2c3d4e5f",
			want:    "/bucket/blob?X-Goog-Algorithm=REDACTED&X-Goog-Credential=REDACTED&X-Goog-Signature=REDACTED",
			secrets: []string{"svc%40proj", "0a1b2c3d4e5f"}},
		{name: "Azure SAS",
			uri:     "/container/blob?sv=2021-08-06&se=2024-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=Zm9vYmFy%2Bc2lnbmF0dXJl%3D",
			want:    "/container/blob?sv=REDACTED&se=REDACTED&sr=REDACTED&sp=REDACTED&sig=REDACTED",
			secrets: []string{"Zm9vYmFy"}},
		{name: "token request through the shim",
			uri:     "/token?account=alice&scope=repository%3Alibrary%2Falpine%3Apull&service=registry.docker.io&offline_token=true",
			want:    "/token?account=REDACTED&scope=repository%3Alibrary%2Falpine%3Apull&service=registry.docker.io&offline_token=REDACTED",
			secrets: []string{"alice"}},
		{name: "token in the query",
			uri: "/v2/org/app/manifests/latest?token=ghp_abcdefghijklmnop&access_token=ya29.secret", want: "/v2/org/app/manifests/latest?token=REDACTED&access_token=REDACTED",
			secrets: []string{"ghp_abcdefghijklmnop", "ya29.secret"}},
		{name: "OAuth callback",
			uri: "/oauth/callback?code=4%2F0AbUR2VN&state=xyzzy", want: "/oauth/callback?code=REDACTED&state=REDACTED",
			secrets: []string{"0AbUR2VN", "xyzzy"}},
		{name: "password",
			uri: "/login?username=alice&password=hunter2", want: "/login?username=REDACTED&password=REDACTED",
			secrets: []string{"alice", "hunter2"}},
		{name: "semicolon does not smuggle a value behind an allowed name",
			uri: "/v2/_catalog?n=1;token=s3cr3t", want: "/v2/_catalog?n=1;token=REDACTED", secrets: []string{"s3cr3t"}},
		{name: "escaped name is judged unescaped",
			uri: "/x?%74oken=s3cr3t&%6Es=quay.io", want: "/x?%74oken=REDACTED&%6Es=quay.io", secrets: []string{"s3cr3t"}},
		{name: "names are case-sensitive",
			uri: "/x?NS=s3cr3t", want: "/x?NS=REDACTED", secrets: []string{"s3cr3t"}},
		{name: "repeated allowed name",
			uri: "/token?scope=a&scope=b&password=p4ss", want: "/token?scope=a&scope=b&password=REDACTED", secrets: []string{"p4ss"}},
		{name: "names without values stay",
			uri: "/x?flag&empty=", want: "/x?flag&empty="},
		{name: "no query", uri: "/v2/", want: "/v2/"},
		{name: "empty query kept", uri: "/v2/?", want: "/v2/?"},
		{name: "escaped path kept", uri: "/v2/a%2Fb/tags/list?n=1", want: "/v2/a%2Fb/tags/list?n=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, err := url.ParseRequestURI(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			got := logx.RedactURI(u)
			if got != tc.want {
				t.Errorf("RedactURI(%q)\n  = %q\nwant %q", tc.uri, got, tc.want)
			}
			for _, s := range tc.secrets {
				if strings.Contains(got, s) {
					t.Errorf("RedactURI(%q) = %q keeps the secret %q", tc.uri, got, s)
				}
			}
		})
	}
}

func TestRedactURIAbsoluteAndNil(t *testing.T) {
	t.Parallel()
	// A proxy-style absolute URL logs as its request line would name it
	// to the origin: path and query, never the userinfo.
	u, err := url.Parse("https://user:pa55@registry.example/v2/app/manifests/1?token=t0k3n&n=2")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := logx.RedactURI(u), "/v2/app/manifests/1?token=REDACTED&n=2"; got != want {
		t.Errorf("RedactURI = %q, want %q", got, want)
	}
	if u.RawQuery != "token=t0k3n&n=2" {
		t.Errorf("RedactURI changed its argument: RawQuery = %q", u.RawQuery)
	}
	if got := logx.RedactURI(nil); got != "" {
		t.Errorf("RedactURI(nil) = %q, want empty", got)
	}
}
