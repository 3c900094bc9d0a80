package mirror_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// hashGET streams a GET's body through sha256 (never holding it).
func hashGET(e *env, path string, hdr ...string) (status int, got string, n int64, err error) {
	req, _ := http.NewRequestWithContext(e.t.Context(), "GET", e.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return 0, "", 0, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err = io.Copy(h, resp.Body)
	return resp.StatusCode, "sha256:" + hex.EncodeToString(h.Sum(nil)), n, err
}

func TestConcurrentColdFillFetchesOnce(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"filesystem", "inmemory"} {
		t.Run(backend, func(t *testing.T) {
			reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken})
			d, size := reg.PushBigBlob(t, "big/blob", 64)
			e := newEnv(t, envOptions{backend: backend}, upstreamSpec{host: "registry.test", reg: reg})
			reg.ResetCounts()
			// Park the upstream body so all 8 clients overlap one fill.
			reg.SetFault(testreg.FaultBlobDelay)
			path := "/v2/registry.test/big/blob/blobs/" + d.String()
			var wg sync.WaitGroup
			type result struct {
				status int
				sum    string
				n      int64
				err    error
			}
			results := make([]result, 8)
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, sum, n, err := hashGET(e, path)
					results[i] = result{s, sum, n, err}
				}()
			}
			reg.WaitBlobsParked(t, 1)
			reg.ReleaseBlobs()
			wg.Wait()
			for i, r := range results {
				if r.err != nil || r.status != 200 || r.sum != d.String() || r.n != size {
					t.Fatalf("client %d: status %d, %d bytes, sum %s, err %v", i, r.status, r.n, r.sum, r.err)
				}
			}
			if n := served(reg, "GET", "blob"); n != 1 {
				t.Fatalf("upstream served the blob %d times, want exactly 1", n)
			}
		})
	}
}

func TestLateJoinerWithRange(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	layer := testreg.RandomLayer(t, 2<<20)
	b := reg.PushBlob(t, "app", layer)
	e := newEnv(t, envOptions{backend: "filesystem"}, upstreamSpec{host: "registry.test", reg: reg})
	reg.SetFault(testreg.FaultBlobDelay)
	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	done := make(chan error, 1)
	go func() {
		_, sum, _, err := hashGET(e, path)
		if err == nil && sum != b.Digest.String() {
			err = fmt.Errorf("full body hashes to %s", sum)
		}
		done <- err
	}()
	reg.WaitBlobsParked(t, 1)
	// Joins the parked fill: its answer waits for the bytes.
	rangeDone := make(chan struct{})
	var resp *http.Response
	var body []byte
	go func() {
		defer close(rangeDone)
		resp, body = e.do("GET", path, "Range", "bytes=1000-1999")
	}()
	reg.ReleaseBlobs()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-rangeDone
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, layer[1000:2000]) {
		t.Fatalf("range: status %d, %d bytes, equal=%v", resp.StatusCode, len(body), bytes.Equal(body, layer[1000:2000]))
	}
	if want := fmt.Sprintf("bytes 1000-1999/%d", len(layer)); resp.Header.Get("Content-Range") != want {
		t.Fatalf("Content-Range = %q, want %q", resp.Header.Get("Content-Range"), want)
	}
	if reg.Count("GET", "blob") != 1 {
		t.Fatalf("upstream blob GETs = %d", reg.Count("GET", "blob"))
	}
	// From the cache: ranges, suffix ranges and an unsatisfiable one.
	cases := []struct {
		name   string
		rng    string
		status int
		want   []byte
	}{
		{"middle", "bytes=10-19", 206, layer[10:20]},
		{"open end", fmt.Sprintf("bytes=%d-", len(layer)-5), 206, layer[len(layer)-5:]},
		{"suffix", "bytes=-7", 206, layer[len(layer)-7:]},
		{"unsatisfiable", fmt.Sprintf("bytes=%d-", len(layer)+10), 416, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do("GET", path, "Range", tc.rng)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.want != nil && !bytes.Equal(body, tc.want) {
				t.Fatalf("body differs")
			}
		})
	}
}

func TestFaultyUpstreamCommitsNothing(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		fault testreg.Fault
	}{
		{"wrong bytes", testreg.FaultWrongBytes},
		{"connection dropped mid-blob", testreg.FaultDropMidBlob},
	}
	for _, backend := range []string{"filesystem", "inmemory"} {
		for _, tc := range cases {
			t.Run(backend+"/"+tc.name, func(t *testing.T) {
				reg := testreg.Start(t, testreg.Options{TLS: true})
				layer := testreg.RandomLayer(t, 3<<20)
				b := reg.PushBlob(t, "app", layer)
				e := newEnv(t, envOptions{backend: backend}, upstreamSpec{host: "registry.test", reg: reg})
				path := "/v2/registry.test/app/blobs/" + b.Digest.String()
				reg.SetFault(tc.fault)
				status, sum, _, err := hashGET(e, path)
				if err == nil && status == 200 && sum == b.Digest.String() {
					t.Fatal("a faulty upstream produced a verified body")
				}
				if err == nil && status == 200 {
					t.Fatalf("the client received a complete-looking wrong body (status %d, no read error)", status)
				}
				if _, err := e.store.StatBlob(t.Context(), b.Digest); !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("blob committed after a fault: %v", err)
				}
				if e.root != "" {
					entries, _ := os.ReadDir(filepath.Join(e.root, "_uploads"))
					if len(entries) != 0 {
						t.Fatalf("%d uploads left behind", len(entries))
					}
				}
				reg.SetFault(testreg.FaultNone)
				status, sum, _, err = hashGET(e, path)
				if err != nil || status != 200 || sum != b.Digest.String() {
					t.Fatalf("healthy retry: status %d sum %s err %v", status, sum, err)
				}
				// The next request is a hit: it waits for a commit in flight.
				resp, body := e.do("GET", path)
				if resp.Header.Get("X-Cache") != "HIT" || sha(body) != b.Digest.String() {
					t.Fatalf("after a healthy fill: X-Cache %q", resp.Header.Get("X-Cache"))
				}
				if _, err := e.store.StatBlob(t.Context(), b.Digest); err != nil {
					t.Fatalf("blob not committed after a healthy fill: %v", err)
				}
			})
		}
	}
}

func TestSharedBlobTwoUpstreams(t *testing.T) {
	t.Parallel()
	a := testreg.Start(t, testreg.Options{TLS: true})
	b := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken})
	shared := testreg.RandomLayer(t, 500_000)
	imgA := a.PushImage(t, "team/one", "v1", shared)
	imgB := b.PushImage(t, "other/two", "v1", shared)
	e := newEnv(t, envOptions{backend: "filesystem"}, upstreamSpec{host: "a.test", reg: a}, upstreamSpec{host: "b.test:8443", reg: b})
	layer := imgA.Layers[0].Digest
	if imgB.Layers[0].Digest != layer {
		t.Fatal("test setup: layers differ")
	}
	resp, body := e.do("GET", "/v2/a.test/team/one/blobs/"+layer.String())
	wantStatus(t, resp, body, 200, "")
	// The client has every byte once they are verified; the commit comes
	// just after. Fills are per upstream: a request through b.test before
	// the commit would start its own fill.
	e.drain()
	b.ResetCounts()
	// containerd style: ?ns= with a port.
	resp, body = e.do("GET", "/v2/other/two/blobs/"+layer.String()+"?ns=b.test%3A8443")
	wantStatus(t, resp, body, 200, "")
	if resp.Header.Get("X-Cache") != "HIT" || sha(body) != layer.String() {
		t.Fatalf("shared blob via second upstream: X-Cache %q", resp.Header.Get("X-Cache"))
	}
	if served(b, "GET", "blob") != 0 || served(b, "HEAD", "blob") != 1 {
		t.Fatalf("second upstream: %d blob GETs, %d HEADs; want 0 and 1", served(b, "GET", "blob"), served(b, "HEAD", "blob"))
	}
	// Stored once.
	var copies int
	filepath.Walk(filepath.Join(e.root, "blobs"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Name() == layer.Encoded() {
			copies++
		}
		return nil
	})
	if copies != 1 {
		t.Fatalf("blob stored %d times, want once", copies)
	}
	// Privacy: a repository that upstream says does not hold the blob is
	// not served the cached copy.
	resp, body = e.do("GET", "/v2/b.test_8443/other/secret/blobs/"+layer.String())
	wantStatus(t, resp, body, http.StatusNotFound, "BLOB_UNKNOWN")
}

func TestClientHangUpDoesNotStopFill(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	layer := testreg.RandomLayer(t, 1<<20)
	b := reg.PushBlob(t, "app", layer)
	e := newEnv(t, envOptions{backend: "filesystem"}, upstreamSpec{host: "registry.test", reg: reg})
	reg.SetFault(testreg.FaultBlobDelay)
	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+path, nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := e.srv.Client().Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		errc <- err
	}()
	reg.WaitBlobsParked(t, 1)
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("the cancelled client got a whole body")
	}
	reg.ReleaseBlobs()
	status, sum, _, err := hashGET(e, path)
	if err != nil || status != 200 || sum != b.Digest.String() {
		t.Fatalf("after hang-up: %d %s %v", status, sum, err)
	}
	if n := served(reg, "GET", "blob"); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1: the fill must survive its client", n)
	}
}

func TestMultiArchIndex(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	idx := reg.PushIndex(t, "multi", "v2")
	e := newEnv(t, envOptions{backend: "filesystem"}, upstreamSpec{host: "registry.test", reg: reg})
	base := "/v2/registry.test/multi"
	resp, body := e.do("GET", base+"/manifests/v2", "Accept", accept)
	if resp.StatusCode != 200 || !bytes.Equal(body, idx.Manifest) || resp.Header.Get("Content-Type") != idx.MediaType {
		t.Fatalf("index: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, img := range idx.Images {
		resp, body := e.do("GET", base+"/manifests/"+img.ManifestDigest.String(), "Accept", accept)
		if resp.StatusCode != 200 || !bytes.Equal(body, img.Manifest) {
			t.Fatalf("child %s: %d", img.Platform.Architecture, resp.StatusCode)
		}
		for _, l := range append(img.Layers, img.Config) {
			if _, sum, _, err := hashGET(e, base+"/blobs/"+l.Digest.String()); err != nil || sum != l.Digest.String() {
				t.Fatalf("blob %s: %v", l.Digest, err)
			}
		}
	}
	reg.Stop()
	// Offline, both platforms are still complete.
	resp, _ = e.do("GET", base+"/manifests/v2", "Accept", accept)
	if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "STALE" {
		t.Fatalf("offline index: %d %q", resp.StatusCode, resp.Header.Get("X-Cache"))
	}
	for _, img := range idx.Images {
		resp, _ := e.do("GET", base+"/manifests/"+img.ManifestDigest.String(), "Accept", accept)
		if resp.StatusCode != 200 {
			t.Fatalf("offline child %s: %d", img.Platform.Architecture, resp.StatusCode)
		}
		for _, l := range img.Layers {
			if status, sum, _, err := hashGET(e, base+"/blobs/"+l.Digest.String()); err != nil || status != 200 || sum != l.Digest.String() {
				t.Fatalf("offline blob %s: %d %v", l.Digest, status, err)
			}
		}
	}
}

func TestHeadDuringFillAndMiss(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	layer := testreg.RandomLayer(t, 1<<20)
	b := reg.PushBlob(t, "app", layer)
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	// HEAD of an uncached blob asks upstream once and downloads nothing.
	resp, _ := e.do("HEAD", path)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(layer)) || resp.Header.Get("Docker-Content-Digest") != b.Digest.String() {
		t.Fatalf("HEAD miss: %d len %d", resp.StatusCode, resp.ContentLength)
	}
	if served(reg, "GET", "blob") != 0 {
		t.Fatal("HEAD started a download")
	}
	reg.SetFault(testreg.FaultBlobDelay)
	done := make(chan struct{})
	go func() { defer close(done); hashGET(e, path) }()
	reg.WaitBlobsParked(t, 1)
	resp, _ = e.do("HEAD", path)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(layer)) {
		t.Fatalf("HEAD during fill: %d len %d", resp.StatusCode, resp.ContentLength)
	}
	reg.ReleaseBlobs()
	<-done
	if n := served(reg, "GET", "blob"); n != 1 {
		t.Fatalf("upstream blob GETs = %d", n)
	}
}
