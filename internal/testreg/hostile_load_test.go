package testreg

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"syscall"
	"testing"
)

// TestLoadBodyFaults: what a client of the registry sees under the faults
// of hostile_load.go, over HTTP/1.1 and h2.
func TestLoadBodyFaults(t *testing.T) {
	t.Parallel()
	for _, proto := range []struct {
		name  string
		http1 bool
	}{{"h1", true}, {"h2", false}} {
		reg := Start(t, Options{TLS: true, DisableHTTP2: proto.http1})
		layer := RandomLayer(t, 64<<10)
		img := reg.PushImage(t, "app", "v1", layer)
		blobURL := reg.URL + "/v2/app/blobs/" + img.Layers[0].Digest.String()
		size := img.Layers[0].Size
		cases := []struct {
			fault Fault
			check func(t *testing.T, resp *http.Response, body []byte, err error)
		}{
			{FaultResetMidBlob, func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err == nil || resp.ContentLength != size || int64(len(body)) > size/2 || !bytes.Equal(body, layer[:len(body)]) {
					t.Fatalf("%d of %d bytes (Content-Length %d), err %v; want at most half and an error", len(body), size, resp.ContentLength, err)
				}
				if proto.http1 && !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("HTTP/1.1: err %v, want a connection reset", err)
				}
			}},
			{FaultShortChunked, func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err != nil || resp.ContentLength != -1 || !bytes.Equal(body, layer[:size/2]) {
					t.Fatalf("%d bytes (Content-Length %d), err %v; want the first half, cleanly", len(body), resp.ContentLength, err)
				}
			}},
			{FaultLongChunked, func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err != nil || resp.ContentLength != -1 || !bytes.Equal(body, append(append([]byte{}, layer...), make([]byte, 1024)...)) {
					t.Fatalf("%d bytes (Content-Length %d), err %v; want the blob and 1 KiB more, cleanly", len(body), resp.ContentLength, err)
				}
			}},
		}
		for _, tc := range cases {
			t.Run(proto.name+"/"+tc.fault.String(), func(t *testing.T) {
				reg.SetFault(tc.fault)
				defer reg.SetFault(FaultNone)
				resp, err := reg.Client().Get(blobURL)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				tc.check(t, resp, body, err)
			})
		}
	}
}
