//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/opencontainers/go-digest"
)

// faultReadTimeout is the proxy's upstream.readTimeout in these tests: a
// stalled upstream body is given up after this much silence.
const faultReadTimeout = 2 * time.Second

// TestUpstreamFaultsAgainstTheBinary (issue 14, faults): the proxy binary
// in front of an upstream that misbehaves on a blob GET it has not cached:
// the connection reset (TCP RST over HTTP/1.1, a stream reset over h2)
// halfway, the body stalled halfway, cut short (Content-Length promised,
// connection closed), short or long with no Content-Length (a clean,
// chunked end), one byte flipped, and 429 (with Retry-After) or 503 for
// everything.
//
// The client never gets a complete-looking wrong body: a body fault cuts
// it short (a read error), a status fault answers an error status with an
// OCI error body (429 with Retry-After, and while that lasts the proxy
// answers without asking upstream). Nothing partial is visible in the
// cache (no blob file, no upload left), content cached before the fault
// still answers from the cache without asking upstream, and once upstream
// is healthy again the pull succeeds with one upstream GET, verified, and
// the blob is a hit after.
func TestUpstreamFaultsAgainstTheBinary(t *testing.T) {
	t.Parallel()
	requireProxy(t)
	for _, tc := range []struct {
		name       string
		fault      testreg.Fault // a body fault: the client is cut short
		http1      bool
		throttle   int    // or Throttle with this status
		retryAfter string // and this Retry-After
		wantStatus int
		wantCode   string
	}{
		{name: "reset mid-body, HTTP/1.1", fault: testreg.FaultResetMidBlob, http1: true},
		{name: "reset mid-body, h2", fault: testreg.FaultResetMidBlob},
		{name: "stall mid-body", fault: testreg.FaultStallMidBlob},
		{name: "truncated", fault: testreg.FaultDropMidBlob},
		{name: "short, no length", fault: testreg.FaultShortChunked},
		{name: "long, no length", fault: testreg.FaultLongChunked},
		{name: "one byte flipped", fault: testreg.FaultWrongBytes},
		{name: "429 with Retry-After", throttle: http.StatusTooManyRequests, retryAfter: "1", wantStatus: http.StatusTooManyRequests, wantCode: "TOOMANYREQUESTS"},
		{name: "503", throttle: http.StatusServiceUnavailable, wantStatus: http.StatusBadGateway, wantCode: "UNAVAILABLE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := testreg.Start(t, testreg.Options{TLS: true, DisableHTTP2: tc.http1})
			fault := func(on bool) {
				switch {
				case tc.throttle != 0 && on:
					reg.Throttle(tc.throttle, tc.retryAfter)
				case tc.throttle != 0:
					reg.Throttle(0, "")
				case on:
					reg.SetFault(tc.fault)
				default:
					reg.SetFault(testreg.FaultNone)
				}
			}
			upstreamFault(t, reg, fault, tc.retryAfter != "", tc.wantStatus, tc.wantCode)
		})
	}
}

func upstreamFault(t *testing.T, reg *testreg.Registry, fault func(on bool), held bool, wantStatus int, wantCode string) {
	const repo = "library/e2e-fault"
	blob := reg.PushBlob(t, repo, testreg.RandomLayer(t, 2<<20))
	cached := reg.PushImage(t, repo, "cached", testreg.RandomLayer(t, 10<<10))
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "cache")
	p := startProxyIn(t, dir, "fault", func(addr string) string {
		return fmt.Sprintf("listen: %q\ncacheDir: %q\ncaDir: %q\nlogFormat: text\nupstream:\n  readTimeout: %s\nregistries:\n  - host: docker.io\n    endpoint: %q\n    caFile: %q\n",
			addr, cacheDir, filepath.Join(dir, "ca"), faultReadTimeout, reg.URL, reg.CAFile)
	})
	base := p.URL + "/v2/docker.io/" + repo
	blobPath := base + "/blobs/" + blob.Digest.String()
	cachedLayer := base + "/blobs/" + cached.Layers[0].Digest.String()

	// Cached before the fault: a layer and the tag.
	if status, _, sum, err := fetch(http.MethodGet, cachedLayer); status != 200 || sum != cached.Layers[0].Digest || err != nil {
		t.Fatalf("caching a layer: status %d, %s, %v", status, sum, err)
	}
	getManifest(t, base+"/manifests/cached", cached)
	waitFile(t, filepath.Join(cacheDir, "blobs", "sha256", cached.Layers[0].Digest.Encoded()[:2], cached.Layers[0].Digest.Encoded(), "data"), 20*time.Second)

	fault(true)
	t.Cleanup(func() { fault(false) })
	reg.ResetCounts()
	resp, err := plainClient().Do(mustRequest(http.MethodGet, blobPath))
	if err != nil {
		t.Fatalf("GET blob during the fault: %v", err)
	}
	body, readErr := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("during the fault: status %d, %d of %d bytes, read error %v", resp.StatusCode, len(body), blob.Size, readErr)
	if wantStatus == 0 {
		if readErr == nil && resp.StatusCode == http.StatusOK {
			t.Errorf("a complete-looking answer (status 200, %d bytes, digest %s) from a faulty upstream", len(body), digest.FromBytes(body))
		}
	} else {
		requireOCIError(t, resp, body, wantStatus, wantCode)
		if wantStatus == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After")
		}
	}
	if held {
		// Upstream asked to wait: the next request is answered for it.
		n := len(reg.Requests())
		again, err := plainClient().Do(mustRequest(http.MethodGet, blobPath))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(again.Body)
		again.Body.Close()
		requireOCIError(t, again, b, wantStatus, wantCode)
		if m := len(reg.Requests()); m != n {
			t.Errorf("a request while upstream asked to wait made %d upstream requests, want none", m-n)
		}
	}

	// Nothing partial is visible, nothing is left behind.
	for _, f := range filesUnder(t, filepath.Join(cacheDir, "blobs")) {
		if strings.Contains(f, blob.Digest.Encoded()) {
			t.Errorf("the faulty blob is in the cache: %s", f)
		}
	}
	waitNoFiles(t, filepath.Join(cacheDir, "_uploads"))

	// Cached content still answers, without asking upstream for bytes.
	reg.ResetCounts()
	status, _, sum, err := fetch(http.MethodGet, cachedLayer)
	if status != 200 || sum != cached.Layers[0].Digest || err != nil {
		t.Errorf("cached layer during the fault: status %d, %s, %v", status, sum, err)
	}
	if wantStatus != 0 {
		getManifest(t, base+"/manifests/cached", cached)
	}
	if n := reg.Count(http.MethodGet, testreg.KindBlob); n != 0 {
		t.Errorf("cached content during the fault: %d upstream blob GETs", n)
	}

	// Healthy again: one upstream GET, verified, then a hit.
	fault(false)
	reg.ResetCounts()
	status, n, sum, err := fetchUntilOK(blobPath)
	if err != nil || status != http.StatusOK || n != blob.Size || sum != blob.Digest {
		t.Fatalf("after the fault: status %d, %d bytes, %s, %v; want the blob", status, n, sum, err)
	}
	if got := reg.Count(http.MethodGet, testreg.KindBlob); got != 1 {
		t.Errorf("after the fault: %d upstream blob GETs, want 1: %v", got, reg.Requests())
	}
	blobFile := filepath.Join(cacheDir, "blobs", "sha256", blob.Digest.Encoded()[:2], blob.Digest.Encoded(), "data")
	waitFile(t, blobFile, 20*time.Second)
	if got := fileDigest(t, blobFile); got != blob.Digest.String() {
		t.Errorf("committed blob digest %s, want %s", got, blob.Digest)
	}
	head, err := plainClient().Head(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	if head.StatusCode != http.StatusOK || head.Header.Get("X-Cache") != "HIT" {
		t.Errorf("HEAD after the refill: status %d, X-Cache %q; want 200, HIT", head.StatusCode, head.Header.Get("X-Cache"))
	}
}

// getManifest GETs a manifest through the proxy and checks its bytes.
func getManifest(t *testing.T, url string, img testreg.Image) {
	t.Helper()
	req := mustRequest(http.MethodGet, url)
	req.Header.Set("Accept", img.MediaType)
	resp, err := plainClient().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(b) != img.ManifestDigest {
		t.Errorf("GET %s: status %d, digest %s, %v; want 200, %s", url, resp.StatusCode, digest.FromBytes(b), err, img.ManifestDigest)
	}
}

// requireOCIError checks an error answer: the status and an OCI error
// body {"errors":[{"code":…}]} naming code.
func requireOCIError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 || e.Errors[0].Code != code {
		t.Errorf("body %s: want an OCI error with code %s (%v)", body, code, err)
	}
}

// fetchUntilOK GETs url until it answers something else than 429 or 503
// (an upstream that asked to wait with Retry-After is left alone that
// long: the proxy answers for it without asking), for at most 30 s.
func fetchUntilOK(url string) (int, int64, digest.Digest, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, n, sum, err := fetch(http.MethodGet, url)
		if (status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable) || time.Now().After(deadline) {
			return status, n, sum, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitNoFiles waits (bounded) until dir holds no regular file: a failed
// fill removes its upload once its readers are gone.
func waitNoFiles(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		files := filesUnder(t, dir)
		if len(files) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("files left under %s: %s", dir, strings.Join(files, ", "))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
