package storage

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/opencontainers/go-digest"
)

// TestRedirectURL: on S3 (versitygw) the URL of a committed blob is a
// presigned GET of its data object on the bucket's endpoint, which a
// client without credentials reads in full or by Range, and which is
// refused without its signature; the drivers without redirects
// (inmemory, filesystem) answer "", so the proxy serves the bytes.
func TestRedirectURL(t *testing.T) {
	t.Parallel()
	for _, b := range allBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.new(t)
			content := []byte(strings.Repeat("redirected bytes ", 1000))
			d := digest.FromBytes(content)
			if err := s.PutSmallBlob(t.Context(), d, content); err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v2/library/x/blobs/"+d.String(), nil)
			u, err := s.RedirectURL(r, d)
			if err != nil {
				t.Fatal(err)
			}
			v, isS3 := s3Buckets.Load(s)
			if !isS3 {
				if u != "" {
					t.Fatalf("RedirectURL on %s = %q, want \"\" (no redirects)", b.name, u)
				}
				return
			}
			srv := v.(*testutil.S3Server)
			want := srv.Endpoint + "/" + srv.Bucket + s3Root + BlobPath(d) + "?"
			if !strings.HasPrefix(u, want) {
				t.Fatalf("RedirectURL = %q, want a URL starting %q", u, want)
			}
			requireRedirectRead(t, u, content)
		})
	}
}

// requireRedirectRead checks a presigned URL of content: a plain GET
// reads it whole, a Range GET reads the range, and the same URL without
// its query (the signature) is refused.
func requireRedirectRead(t *testing.T, u string, content []byte) {
	t.Helper()
	status, body := plainGet(t, u, "")
	if status != http.StatusOK || !bytes.Equal(body, content) {
		t.Errorf("GET of the redirect URL: status %d, %d bytes; want 200 and the %d bytes of the blob", status, len(body), len(content))
	}
	status, body = plainGet(t, u, "bytes=17-33")
	if status != http.StatusPartialContent || !bytes.Equal(body, content[17:34]) {
		t.Errorf("Range GET of the redirect URL: status %d, %q; want 206 and %q", status, body, content[17:34])
	}
	unsigned, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	unsigned.RawQuery = ""
	if status, _ := plainGet(t, unsigned.String(), ""); status != http.StatusForbidden {
		t.Errorf("GET of the blob's object without the signature: status %d, want 403", status)
	}
}

// plainGet sends a GET with an optional Range and no credentials.
func plainGet(t *testing.T, u, rng string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}
