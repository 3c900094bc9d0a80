package mirror_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// noFollow sends a request to the mirror and returns its answer as is: a
// 307 is not followed.
func noFollow(e *env, method, path string, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	resp := headersOnly(e, method, path, hdr...)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, body
}

// headersOnly is noFollow that returns as soon as the answer's headers
// are in; the caller reads and closes the body.
func headersOnly(e *env, method, path string, hdr ...string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	client := &http.Client{Transport: e.srv.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// follow GETs a redirect's Location as a client does, with nothing of
// the proxy's: no credentials, only the given headers (a Range).
func follow(t *testing.T, loc string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, loc, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("following the redirect: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("following the redirect: body: %v", err)
	}
	return resp, body
}

// wantRedirect checks a 307 hit of digest d to the env's bucket and
// returns its Location.
func wantRedirect(t *testing.T, e *env, resp *http.Response, body []byte, d string) string {
	t.Helper()
	wantStatus(t, resp, body, http.StatusTemporaryRedirect, "")
	loc := resp.Header.Get("Location")
	if prefix := e.s3.Endpoint + "/" + e.s3.Bucket + "/"; !strings.HasPrefix(loc, prefix) || !strings.Contains(loc, "X-Amz-Signature=") {
		t.Fatalf("Location %q: want a presigned URL starting %q", loc, prefix)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != d {
		t.Errorf("Docker-Content-Digest %q, want %q", got, d)
	}
	if got := resp.Header.Get("X-Cache"); got != "HIT" {
		t.Errorf("X-Cache %q, want HIT", got)
	}
	if len(body) != 0 {
		t.Errorf("a redirect with a body of %d bytes, want none", len(body))
	}
	return loc
}

// wantBytes checks an answer that carries the blob itself, not a redirect.
func wantBytes(t *testing.T, resp *http.Response, body []byte, blob []byte, cache string) {
	t.Helper()
	wantStatus(t, resp, body, http.StatusOK, "")
	if loc := resp.Header.Get("Location"); loc != "" {
		t.Errorf("Location %q on an answer with the bytes", loc)
	}
	if sha(body) != sha(blob) || len(body) != len(blob) {
		t.Errorf("body: %d bytes hashing to %s, want the %d-byte blob %s", len(body), sha(body), len(blob), sha(blob))
	}
	if got := resp.Header.Get("X-Cache"); got != cache {
		t.Errorf("X-Cache %q, want %s", got, cache)
	}
}

// TestRedirectHitsToTheBucket: on S3 (versitygw) with Options.Redirect,
// the GET that fills a blob streams it (200, MISS); the next GET is a 307
// hit whose Location, a presigned URL of the bucket, gives exactly the
// blob to a client without credentials; a Range GET redirects too and the
// bucket answers the Range; HEAD, If-None-Match (304) and a Range past
// the end (416) are answered by the proxy without a Location. The
// Observer counts the redirects as hits of 0 bytes, the access line says
// redirect=true, and the signed URL is never logged.
func TestRedirectHitsToTheBucket(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	blob := testreg.RandomLayer(t, 300_000)
	b := reg.PushBlob(t, "app", blob)
	d := b.Digest.String()
	path := "/v2/registry.test/app/blobs/" + d
	rec := newRecorder()
	e := newEnv(t, envOptions{backend: "s3", redirect: true, observer: rec}, upstreamSpec{host: "registry.test", reg: reg})

	resp, body := noFollow(e, http.MethodGet, path)
	wantBytes(t, resp, body, blob, "MISS")

	resp, body = noFollow(e, http.MethodGet, path)
	loc := wantRedirect(t, e, resp, body, d)
	resp, body = follow(t, loc)
	if resp.StatusCode != http.StatusOK || sha(body) != d {
		t.Fatalf("GET of the Location: status %d, %d bytes hashing to %s; want 200 and %s", resp.StatusCode, len(body), sha(body), d)
	}

	resp, body = noFollow(e, http.MethodGet, path, "Range", "bytes=5-14")
	loc = wantRedirect(t, e, resp, body, d)
	resp, body = follow(t, loc, "Range", "bytes=5-14")
	if resp.StatusCode != http.StatusPartialContent || string(body) != string(blob[5:15]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 5-14/%d", len(blob)) {
		t.Fatalf("Range GET of the Location: status %d, Content-Range %q, %q; want 206 and blob[5:15]",
			resp.StatusCode, resp.Header.Get("Content-Range"), body)
	}

	resp, body = noFollow(e, http.MethodHead, path)
	wantStatus(t, resp, body, http.StatusOK, "")
	if resp.ContentLength != int64(len(blob)) || resp.Header.Get("Location") != "" || resp.Header.Get("X-Cache") != "HIT" {
		t.Errorf("HEAD: Content-Length %d, Location %q, X-Cache %q; want %d, none, HIT",
			resp.ContentLength, resp.Header.Get("Location"), resp.Header.Get("X-Cache"), len(blob))
	}
	resp, body = noFollow(e, http.MethodGet, path, "If-None-Match", `"`+d+`"`)
	wantStatus(t, resp, body, http.StatusNotModified, "")
	notMod := resp
	resp, body = noFollow(e, http.MethodGet, path, "Range", fmt.Sprintf("bytes=%d-", len(blob)))
	wantStatus(t, resp, body, http.StatusRequestedRangeNotSatisfiable, oci.CodeRangeInvalid)
	for _, r := range []*http.Response{notMod, resp} {
		if r.Header.Get("Location") != "" {
			t.Errorf("a %d with a Location", r.StatusCode)
		}
	}
	if n := served(reg, http.MethodGet, testreg.KindBlob); n != 1 {
		t.Errorf("upstream served %d blob GETs, want 1 (the fill)", n)
	}

	e.settle()
	requireRedirectAccounting(t, e, rec, len(blob))
}

// requireRedirectAccounting checks what TestRedirectHitsToTheBucket's
// requests reported, once they all ended: two redirects, the HEAD and the
// 304 are hits of no body bytes; the fill's bytes are the miss's.
func requireRedirectAccounting(t *testing.T, e *env, rec *recorder, size int) {
	t.Helper()
	rec.mu.Lock()
	hits, hitBytes, missBytes := rec.answers["blob hit"], rec.bytes["blob hit"], rec.bytes["blob miss"]
	rec.mu.Unlock()
	if hits != 4 || hitBytes != 0 || missBytes != int64(size) {
		t.Errorf("observer: %d blob hits of %d bytes, %d miss bytes; want 4 hits of 0 bytes (2 redirects, HEAD, 304) and %d",
			hits, hitBytes, missBytes, size)
	}
	logs := e.logs.String()
	var redirects int
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "msg=request") && strings.Contains(l, "status=307") {
			redirects++
			if !strings.Contains(l, "cache=HIT") || !strings.Contains(l, "redirect=true") || !strings.Contains(l, "bytes=0") {
				t.Errorf("access line of a redirect: %s", l)
			}
		}
	}
	if redirects != 2 {
		t.Errorf("%d access lines with status=307, want 2", redirects)
	}
	if strings.Contains(logs, "X-Amz-Signature") || strings.Contains(logs, "X-Amz-Credential") {
		t.Errorf("the log holds a signed URL:\n%s", logs)
	}
}

// TestRedirectFillsStream: with redirects on, the GET that starts a fill
// and a GET that joins it get the bytes from the fill (200, MISS, no
// Location): only blobs already in the bucket are redirected. Both
// answers' headers are in before upstream sends a byte of the body (the
// fill sends them as soon as upstream's headers are in), so neither can
// have been answered as a hit.
func TestRedirectFillsStream(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	blob := testreg.RandomLayer(t, 200_000)
	b := reg.PushBlob(t, "app", blob)
	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	e := newEnv(t, envOptions{backend: "s3", redirect: true}, upstreamSpec{host: "registry.test", reg: reg})
	reg.SetFault(testreg.FaultBlobDelay)
	var resps []*http.Response
	for range 2 {
		resp := headersOnly(e, http.MethodGet, path)
		defer resp.Body.Close()
		resps = append(resps, resp)
	}
	if n := reg.BlobsParked(); n != 1 {
		t.Fatalf("%d upstream blob GETs parked, want the one fill's", n)
	}
	reg.SetFault(testreg.FaultNone)
	reg.ReleaseBlobs()
	for _, resp := range resps {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		wantBytes(t, resp, body, blob, "MISS")
	}
}

// TestRedirectOffServesBytes: on the same S3 storage without
// Options.Redirect (the default), a hit is the bytes from the proxy.
func TestRedirectOffServesBytes(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	blob := testreg.RandomLayer(t, 100_000)
	b := reg.PushBlob(t, "app", blob)
	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	e := newEnv(t, envOptions{backend: "s3"}, upstreamSpec{host: "registry.test", reg: reg})
	resp, body := noFollow(e, http.MethodGet, path)
	wantBytes(t, resp, body, blob, "MISS")
	resp, body = noFollow(e, http.MethodGet, path)
	wantBytes(t, resp, body, blob, "HIT")
}

// bearerAccess lets "Bearer reader" read everything, asks anyone without
// credentials for them (401) and refuses other credentials (403).
type bearerAccess struct{}

func (bearerAccess) Authorize(r *http.Request, _, repo, _, _ string) (context.Context, string, error) {
	switch r.Header.Get("Authorization") {
	case "Bearer reader":
		return r.Context(), "user:reader", nil
	case "":
		return r.Context(), "anonymous", oci.Errorf(http.StatusUnauthorized, oci.CodeUnauthorized, "authentication required")
	}
	return r.Context(), "user:other", oci.Errorf(http.StatusForbidden, oci.CodeDenied, "no access to %s", repo)
}

func (bearerAccess) AuthorizeBase(*http.Request) error { return nil }
func (bearerAccess) Restricted(string) bool            { return true }

// TestRedirectAfterAccessControl: a stored blob is redirected only for a
// client that may read it through that repository: the reader gets the
// 307; without credentials 401, with others' 403, through a repository
// upstream says does not hold it 404, none with a Location.
func TestRedirectAfterAccessControl(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	blob := testreg.RandomLayer(t, 100_000)
	b := reg.PushBlob(t, "app", blob)
	reg.PushBlob(t, "other", testreg.RandomLayer(t, 1000))
	d := b.Digest.String()
	e := newEnv(t, envOptions{backend: "s3", redirect: true, access: bearerAccess{}}, upstreamSpec{host: "registry.test", reg: reg})
	reader := []string{"Authorization", "Bearer reader"}
	resp, body := noFollow(e, http.MethodGet, "/v2/registry.test/app/blobs/"+d, reader...)
	wantBytes(t, resp, body, blob, "MISS")
	// The reader's redirect: the blob is in the bucket now (a request
	// after the fill waits for its commit), so what follows are hits.
	resp, body = noFollow(e, http.MethodGet, "/v2/registry.test/app/blobs/"+d, reader...)
	loc := wantRedirect(t, e, resp, body, d)
	if fresp, fbody := follow(t, loc); fresp.StatusCode != http.StatusOK || sha(fbody) != d {
		t.Fatalf("GET of the Location: status %d, digest %s; want 200 and %s", fresp.StatusCode, sha(fbody), d)
	}

	for _, tc := range []struct {
		name, path string
		hdr        []string
		status     int
		code       string
	}{
		{"no credentials", "/v2/registry.test/app/blobs/" + d, nil, http.StatusUnauthorized, oci.CodeUnauthorized},
		{"other credentials", "/v2/registry.test/app/blobs/" + d, []string{"Authorization", "Bearer intruder"}, http.StatusForbidden, oci.CodeDenied},
		{"a repository without the blob", "/v2/registry.test/other/blobs/" + d, reader, http.StatusNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := noFollow(e, http.MethodGet, tc.path, tc.hdr...)
			wantStatus(t, resp, body, tc.status, tc.code)
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Fatalf("a %d with Location %q", resp.StatusCode, loc)
			}
		})
	}
}

// noRedirects is a storage driver that cannot make redirect URLs (a
// bucket's credentials that cannot sign, say).
type noRedirects struct{ storagedriver.StorageDriver }

func (noRedirects) RedirectURL(*http.Request, string) (string, error) {
	return "", errors.New("cannot sign: no credentials")
}

// TestRedirectURLFailureServesBytes: when the storage cannot make the
// URL, every hit is served with its bytes (200, HIT) and the failure is
// logged once per interval, not once per request.
func TestRedirectURLFailureServesBytes(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	blob := testreg.RandomLayer(t, 100_000)
	b := reg.PushBlob(t, "app", blob)
	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	e := newEnv(t, envOptions{backend: "s3", redirect: true,
		wrap: func(d storagedriver.StorageDriver) storagedriver.StorageDriver { return noRedirects{d} }},
		upstreamSpec{host: "registry.test", reg: reg})
	resp, body := noFollow(e, http.MethodGet, path)
	wantBytes(t, resp, body, blob, "MISS")
	const line = "storage cannot make redirect URLs"
	for range 3 {
		resp, body = noFollow(e, http.MethodGet, path)
		wantBytes(t, resp, body, blob, "HIT")
	}
	if n := strings.Count(e.logs.String(), line); n != 1 {
		t.Fatalf("%q logged %d times for 3 hits, want once", line, n)
	}
	if !strings.Contains(e.logs.String(), "cannot sign: no credentials") {
		t.Errorf("the log line does not give the cause")
	}
	e.clock.Advance(6 * time.Minute)
	resp, body = noFollow(e, http.MethodGet, path)
	wantBytes(t, resp, body, blob, "HIT")
	if n := strings.Count(e.logs.String(), line); n != 2 {
		t.Fatalf("%q logged %d times after the interval, want twice", line, n)
	}
}
