package testreg

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestBodyFaults(t *testing.T) {
	t.Parallel()
	for _, proto := range []struct {
		name  string
		http1 bool
		major int
	}{
		{name: "h1", http1: true, major: 1},
		{name: "h2", major: 2},
	} {
		reg := Start(t, Options{TLS: true, DisableHTTP2: proto.http1})
		layer := RandomLayer(t, 64<<10)
		img := reg.PushImage(t, "app", "v1", layer)
		blobPath := reg.URL + "/v2/app/blobs/" + img.Layers[0].Digest.String()
		size := img.Layers[0].Size

		cases := []struct {
			name  string
			fault Fault
			check func(t *testing.T, resp *http.Response, body []byte, readErr error)
		}{
			{name: "none", fault: FaultNone, check: func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err != nil || !bytes.Equal(body, layer) {
					t.Fatalf("body %d bytes, err %v", len(body), err)
				}
			}},
			{name: "wrong-bytes", fault: FaultWrongBytes, check: func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err != nil || int64(len(body)) != size || resp.ContentLength != size {
					t.Fatalf("body %d bytes (Content-Length %d), err %v; want %d", len(body), resp.ContentLength, err, size)
				}
				if digest.FromBytes(body) == img.Layers[0].Digest || !bytes.Equal(body[:size-1], layer[:size-1]) {
					t.Fatal("want identical bytes except the last")
				}
			}},
			{name: "drop-mid-blob", fault: FaultDropMidBlob, check: func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err == nil || resp.ContentLength != size || int64(len(body)) != size/2 {
					t.Fatalf("got %d of %d bytes (Content-Length %d), err %v; want half and an error", len(body), size, resp.ContentLength, err)
				}
			}},
		}
		for _, tc := range cases {
			t.Run(proto.name+"/"+tc.name, func(t *testing.T) {
				reg.SetFault(tc.fault)
				reg.ResetCounts()
				resp, err := reg.Client().Get(blobPath)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.ProtoMajor != proto.major {
					t.Fatalf("status %d proto %s", resp.StatusCode, resp.Proto)
				}
				body, err := io.ReadAll(resp.Body)
				tc.check(t, resp, body, err)
				checkCounts(t, reg, map[[2]string]int64{{"GET", KindBlob}: 1, {"", KindOther}: 0})
			})
		}
	}
}

func TestStatusFault(t *testing.T) {
	t.Parallel()
	reg := Start(t, Options{TLS: true, Auth: AuthToken})
	reg.PushImage(t, "app", "v1")
	for _, code := range []int{429, 500, 502, 503, 404, 401} {
		t.Run(FaultStatus(code).String(), func(t *testing.T) {
			reg.SetFault(FaultStatus(code))
			c := reg.Client()
			resp, err := c.Get(reg.URL + "/v2/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized { // /v2/ itself is spared
				t.Fatalf("/v2/: %d", resp.StatusCode)
			}
			for _, path := range []string{"/v2/app/manifests/v1", "/v2/app/tags/list", "/v2/app/blobs/sha256:" + strings.Repeat("0", 64)} {
				resp, err := c.Get(reg.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				var env struct {
					Errors []struct{ Code string } `json:"errors"`
				}
				err = json.NewDecoder(resp.Body).Decode(&env)
				resp.Body.Close()
				if resp.StatusCode != code || err != nil || len(env.Errors) != 1 || env.Errors[0].Code != errorCode(code) {
					t.Fatalf("%s: %d %+v %v", path, resp.StatusCode, env, err)
				}
				if ra := resp.Header.Get("Retry-After"); (code == 429) != (ra == "7") {
					t.Fatalf("%s: Retry-After %q", path, ra)
				}
			}
		})
	}
	reg.SetFault(FaultNone)
	p := newPuller(t, reg, "", "")
	if resp, _ := p.get("/v2/app/tags/list"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after FaultNone: %d", resp.StatusCode)
	}
}

func TestBlobDelay(t *testing.T) {
	t.Parallel()
	for _, redirect := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "redirect"}[redirect], func(t *testing.T) {
			reg := Start(t, Options{TLS: true, BlobRedirect: redirect})
			img := reg.PushImage(t, "app", "v1", RandomLayer(t, 32<<10))
			blob := img.Layers[0]
			reg.SetFault(FaultBlobDelay)

			const n = 3
			type result struct {
				body []byte
				err  error
			}
			results := make(chan result, n)
			headers := make(chan struct{}, n)
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					resp, err := reg.Client().Get(reg.URL + "/v2/app/blobs/" + blob.Digest.String())
					if err != nil {
						results <- result{err: err}
						return
					}
					defer resp.Body.Close()
					headers <- struct{}{}
					b, err := io.ReadAll(resp.Body)
					results <- result{b, err}
				})
			}
			reg.WaitBlobsParked(t, n)
			for range n {
				<-headers // every client has its headers while the bodies wait
			}
			select {
			case r := <-results:
				t.Fatalf("a body finished before ReleaseBlobs: %d bytes, %v", len(r.body), r.err)
			default:
			}
			reg.ReleaseBlobs()
			wg.Wait()
			close(results)
			for r := range results {
				if r.err != nil || digest.FromBytes(r.body) != blob.Digest {
					t.Fatalf("after release: %d bytes, err %v", len(r.body), r.err)
				}
			}
			if reg.BlobsParked() != 0 {
				t.Fatalf("still parked: %d", reg.BlobsParked())
			}
			// Released: later GETs pass until FaultBlobDelay is set again.
			newPuller(t, reg, "", "").pullBlob("app", blob)
		})
	}
}

func TestBlobRedirect(t *testing.T) {
	t.Parallel()
	reg := Start(t, Options{TLS: true, Auth: AuthBasic, BlobRedirect: true})
	img := reg.PushImage(t, "app", "v1", RandomLayer(t, 4096))
	blob := img.Layers[0]
	noFollow := reg.Client()
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/app/blobs/"+blob.Digest.String(), nil)
	req.SetBasicAuth(reg.opts.Username, reg.opts.Password)
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, reg.CDNURL+"/") {
		t.Fatalf("got %d %q, want 307 to %s", resp.StatusCode, loc, reg.CDNURL)
	}

	cases := []struct {
		name     string
		auth     bool
		fault    Fault
		wantAuth bool
		wantOK   bool
	}{
		{name: "clean client", wantOK: true},
		{name: "wrong bytes at the CDN", fault: FaultWrongBytes},
		{name: "leaking client", auth: true, wantAuth: true, wantOK: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg.SetFault(tc.fault)
			reg.ResetCounts()
			req, _ := http.NewRequest(http.MethodGet, loc, nil)
			if tc.auth {
				req.SetBasicAuth("u", "p")
			}
			resp, err := reg.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || (digest.FromBytes(body) == blob.Digest) != tc.wantOK || int64(len(body)) != blob.Size {
				t.Fatalf("CDN: %d bytes, err %v", len(body), err)
			}
			if reg.CDNSawAuthorization() != tc.wantAuth {
				t.Fatalf("CDNSawAuthorization = %v", reg.CDNSawAuthorization())
			}
			checkCounts(t, reg, map[[2]string]int64{{"GET", KindCDN}: 1, {"GET", KindBlob}: 0})
		})
	}

	t.Run("missing blob is not redirected", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/app/blobs/"+digest.FromString("nope").String(), nil)
		req.SetBasicAuth(reg.opts.Username, reg.opts.Password)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func TestFaultStatusPanics(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Fatal("FaultStatus(42) did not panic")
		}
	}()
	FaultStatus(42)
}
