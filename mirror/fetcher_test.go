package mirror_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/mirror"
	"github.com/gmarcy/container-registry-proxy/storage"
)

// peerFetcher stands in for a cluster's fill coordinator: it takes a
// fill's bytes from a peer (another registry holding the same blob)
// instead of the fill's upstream, or, with lie set, sends other bytes.
type peerFetcher struct {
	peer  *testreg.Registry
	lie   atomic.Bool
	calls atomic.Int32
}

func (p *peerFetcher) Fetch(ctx context.Context, f mirror.FillRequest) (io.ReadCloser, int64, error) {
	p.calls.Add(1)
	if p.lie.Load() {
		b := bytes.Repeat([]byte("x"), 50_000)
		return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
	}
	resp, err := p.peer.Client().Get(p.peer.URL + "/v2/" + f.Repo + "/blobs/" + f.Digest.String())
	if err != nil {
		return nil, -1, err
	}
	return resp.Body, resp.ContentLength, nil
}

// TestFetcherSeam: a fill takes its bytes where the Fetcher says (a peer
// here, as a cluster's coordinator will), and the mirror verifies them
// all the same: the peer's genuine bytes are committed without an
// upstream fetch; lying bytes commit nothing and cut the client short.
func TestFetcherSeam(t *testing.T) {
	t.Parallel()
	up := testreg.Start(t, testreg.Options{TLS: true})
	peer := testreg.Start(t, testreg.Options{TLS: true})
	layer := testreg.RandomLayer(t, 50_000)
	b := up.PushBlob(t, "app", layer)
	peer.PushBlob(t, "app", layer)
	other := up.PushBlob(t, "app", testreg.RandomLayer(t, 50_000))
	fetcher := &peerFetcher{peer: peer}
	e := newEnv(t, envOptions{fetcher: fetcher}, upstreamSpec{host: "registry.test", reg: up})

	path := "/v2/registry.test/app/blobs/" + b.Digest.String()
	if status, sum, _, err := hashGET(e, path); err != nil || status != 200 || sum != b.Digest.String() {
		t.Fatalf("fill from the peer: %d %s %v", status, sum, err)
	}
	e.drain()
	if n := served(up, "GET", "blob"); n != 0 {
		t.Fatalf("upstream served %d blob GETs; the Fetcher's peer was to serve the fill", n)
	}
	if resp, _ := e.do("GET", path); resp.Header.Get("X-Cache") != "HIT" {
		t.Fatalf("the peer's verified bytes were not committed: X-Cache %q", resp.Header.Get("X-Cache"))
	}

	fetcher.lie.Store(true)
	lied := "/v2/registry.test/app/blobs/" + other.Digest.String()
	if status, sum, _, err := hashGET(e, lied); err == nil && status == 200 && sum == other.Digest.String() {
		t.Fatal("lying bytes reached a client as a complete body")
	}
	e.drain()
	if _, err := e.store.StatBlob(t.Context(), other.Digest); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("lying bytes were committed: %v", err)
	}
	if fetcher.calls.Load() != 2 {
		t.Fatalf("the Fetcher was asked %d times, want once per fill", fetcher.calls.Load())
	}
}
