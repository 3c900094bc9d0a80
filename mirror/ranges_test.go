package mirror_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// rangeCase is one blob request and the answer it must get, the same
// whether the blob is stored or still being filled.
type rangeCase struct {
	name   string
	method string
	hdr    []string
	status int
	// from, to select the body (blob[from:to]); to < 0: no body.
	from, to int
	// contentRange is the expected Content-Range ("" none).
	contentRange string
}

func rangeCases(size int, d string) []rangeCase {
	n := fmt.Sprint(size)
	return []rangeCase{
		{"no range", "GET", nil, 200, 0, size, ""},
		{"middle", "GET", []string{"Range", "bytes=5-14"}, 206, 5, 15, "bytes 5-14/" + n},
		{"open-ended", "GET", []string{"Range", fmt.Sprintf("bytes=%d-", size-100)}, 206, size - 100, size, fmt.Sprintf("bytes %d-%d/%s", size-100, size-1, n)},
		{"suffix", "GET", []string{"Range", "bytes=-7"}, 206, size - 7, size, fmt.Sprintf("bytes %d-%d/%s", size-7, size-1, n)},
		{"suffix longer than the blob", "GET", []string{"Range", fmt.Sprintf("bytes=-%d", size+5)}, 206, 0, size, fmt.Sprintf("bytes 0-%d/%s", size-1, n)},
		{"end past the blob is clamped", "GET", []string{"Range", fmt.Sprintf("bytes=10-%d", size+1000)}, 206, 10, size, fmt.Sprintf("bytes 10-%d/%s", size-1, n)},
		{"last byte", "GET", []string{"Range", fmt.Sprintf("bytes=%d-%d", size-1, size-1)}, 206, size - 1, size, fmt.Sprintf("bytes %d-%d/%s", size-1, size-1, n)},
		{"inverted is ignored", "GET", []string{"Range", "bytes=5-3"}, 200, 0, size, ""},
		{"multi-range is ignored", "GET", []string{"Range", "bytes=0-1,5-6"}, 200, 0, size, ""},
		{"overlapping ranges are ignored", "GET", []string{"Range", "bytes=0-,0-,0-,0-"}, 200, 0, size, ""},
		{"a thousand ranges are ignored", "GET", []string{"Range", "bytes=0-9" + strings.Repeat(",0-9", 999)}, 200, 0, size, ""},
		{"an overlong range is ignored", "GET", []string{"Range", "bytes=" + strings.Repeat("0", 200) + "5-14"}, 200, 0, size, ""},
		{"not bytes", "GET", []string{"Range", "items=0-1"}, 200, 0, size, ""},
		{"malformed", "GET", []string{"Range", "bytes=abc"}, 200, 0, size, ""},
		{"empty suffix", "GET", []string{"Range", "bytes=-0"}, 416, 0, -1, "bytes */" + n},
		{"starts at the end", "GET", []string{"Range", fmt.Sprintf("bytes=%d-", size)}, 416, 0, -1, "bytes */" + n},
		{"beyond the end", "GET", []string{"Range", fmt.Sprintf("bytes=%d-%d", size+10, size+20)}, 416, 0, -1, "bytes */" + n},
		{"If-Range of this blob", "GET", []string{"Range", "bytes=5-14", "If-Range", `"` + d + `"`}, 206, 5, 15, "bytes 5-14/" + n},
		{"If-Range of another", "GET", []string{"Range", "bytes=5-14", "If-Range", `"sha256:other"`}, 200, 0, size, ""},
		{"If-None-Match of this blob", "GET", []string{"If-None-Match", `"` + d + `"`}, 304, 0, -1, ""},
		{"HEAD with a range", "HEAD", []string{"Range", "bytes=5-14"}, 206, 0, -1, "bytes 5-14/" + n},
	}
}

func checkRange(t *testing.T, tc rangeCase, blob []byte, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != tc.status {
		t.Fatalf("status %d, want %d (body %.200s)", resp.StatusCode, tc.status, body)
	}
	if got := resp.Header.Get("Content-Range"); got != tc.contentRange {
		t.Fatalf("Content-Range %q, want %q", got, tc.contentRange)
	}
	if tc.to >= 0 {
		if !bytes.Equal(body, blob[tc.from:tc.to]) {
			t.Fatalf("body: %d bytes, want blob[%d:%d]", len(body), tc.from, tc.to)
		}
		if resp.ContentLength != int64(tc.to-tc.from) {
			t.Fatalf("Content-Length %d, want %d", resp.ContentLength, tc.to-tc.from)
		}
	} else if len(body) != 0 && tc.status != 416 {
		t.Fatalf("a body of %d bytes, want none", len(body))
	}
	if tc.status == 416 && !bytes.Contains(body, []byte("RANGE_INVALID")) {
		t.Fatalf("416 without RANGE_INVALID: %s", body)
	}
}

// TestRangesStoredAndFilling: one Range implementation: each request gets
// the same answer from a stored blob (filesystem: the file itself;
// inmemory: a reader opened at the offset) and from a fill in progress.
func TestRangesStoredAndFilling(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"filesystem", "inmemory"} {
		t.Run(backend, func(t *testing.T) {
			reg := testreg.Start(t, testreg.Options{TLS: true})
			blob := testreg.RandomLayer(t, 300_000)
			b := reg.PushBlob(t, "app", blob)
			cases := rangeCases(len(blob), b.Digest.String())
			path := "/v2/registry.test/app/blobs/" + b.Digest.String()

			t.Run("filling", func(t *testing.T) {
				e := newEnv(t, envOptions{backend: backend}, upstreamSpec{host: "registry.test", reg: reg})
				reg.SetFault(testreg.FaultBlobDelay)
				defer reg.SetFault(testreg.FaultNone)
				first := make(chan error, 1)
				go func() {
					status, sum, _, err := hashGET(e, path)
					if err == nil && (status != 200 || sum != b.Digest.String()) {
						err = fmt.Errorf("the fill's own client: %d %s", status, sum)
					}
					first <- err
				}()
				reg.WaitBlobsParked(t, 1)
				type answer struct {
					resp *http.Response
					body []byte
				}
				answers := make([]answer, len(cases))
				var wg sync.WaitGroup
				for i, tc := range cases {
					wg.Go(func() {
						resp, body := e.do(tc.method, path, tc.hdr...)
						answers[i] = answer{resp, body}
					})
				}
				// Requests answered without a body (416, 304, HEAD) leave
				// the fill at once; the others stay on it.
				streaming := 1
				for _, tc := range cases {
					if tc.method == "GET" && (tc.status == 200 || tc.status == 206) {
						streaming++
					}
				}
				waitFillClients(t, e, streaming)
				reg.SetFault(testreg.FaultNone)
				reg.ReleaseBlobs()
				wg.Wait()
				if err := <-first; err != nil {
					t.Fatal(err)
				}
				for i, tc := range cases {
					t.Run(tc.name, func(t *testing.T) {
						checkRange(t, tc, blob, answers[i].resp, answers[i].body)
						if tc.status != 416 && answers[i].resp.Header.Get("X-Cache") != "MISS" {
							t.Fatalf("X-Cache %q: not answered from the fill", answers[i].resp.Header.Get("X-Cache"))
						}
					})
				}
			})
			t.Run("stored", func(t *testing.T) {
				e := newEnv(t, envOptions{backend: backend}, upstreamSpec{host: "registry.test", reg: reg})
				if status, sum, _, err := hashGET(e, path); err != nil || status != 200 || sum != b.Digest.String() {
					t.Fatalf("filling the cache: %d %s %v", status, sum, err)
				}
				for _, tc := range cases {
					t.Run(tc.name, func(t *testing.T) {
						resp, body := e.do(tc.method, path, tc.hdr...)
						checkRange(t, tc, blob, resp, body)
						if tc.status != 416 && resp.Header.Get("X-Cache") != "HIT" {
							t.Fatalf("X-Cache %q, want HIT", resp.Header.Get("X-Cache"))
						}
					})
				}
			})
		})
	}
}

// waitFillClients waits (bounded) until the one fill in flight has n
// clients: every request joined it before upstream is let go.
func waitFillClients(t *testing.T, e *env, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		fills := e.mirror.Fills()
		if len(fills) == 1 && fills[0].Clients >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fills %+v: want one with %d clients", fills, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRangeOfAFailingFillIsCutShort: a Range that ends before the blob
// does, answered from a fill whose bytes then fail verification, is never
// a complete 206: its last byte waits for the whole blob's verification,
// and the answer is cut short. Nothing is committed.
func TestRangeOfAFailingFillIsCutShort(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	b := reg.PushBlob(t, "app", testreg.RandomLayer(t, 100_000))
	e := newEnv(t, envOptions{}, upstreamSpec{host: "registry.test", reg: reg})
	reg.SetFault(testreg.FaultWrongBytes)
	// Slow enough that the range's bytes arrive long before the rest.
	reg.SetBlobRate(50_000)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.srv.URL+"/v2/registry.test/app/blobs/"+b.Digest.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=0-99")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode == http.StatusPartialContent && len(body) == 100 {
		t.Fatalf("a complete 206 of %d bytes from a fill that failed verification", len(body))
	}
	e.drain()
	if _, err := e.store.StatBlob(t.Context(), b.Digest); err == nil {
		t.Fatal("the blob whose bytes failed verification was committed")
	}
}
