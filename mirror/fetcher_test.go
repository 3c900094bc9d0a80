package mirror_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

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

// gatedFetcher decides a fill's source only when told to (decide), as a
// cluster's coordinator does after asking Redis, then streams from
// upstream while reporting source as the source.
type gatedFetcher struct {
	entered chan struct{}
	decide  chan struct{}
	source  string
}

func (g *gatedFetcher) Fetch(ctx context.Context, f mirror.FillRequest) (io.ReadCloser, int64, error) {
	close(g.entered)
	select {
	case <-g.decide:
	case <-ctx.Done():
		return nil, -1, ctx.Err()
	}
	f.Source(g.source)
	return f.FromUpstream(ctx, 0)
}

// TestPeerAskWaitsForTheFillsSource: a peer's request that joins a fill
// whose Fetcher has not yet decided where the bytes come from waits for
// that decision, and is refused (409) when the fill streams from another
// replica: it is never served a fill that turns out to be a third
// replica's stream (no chains, no loops between replicas).
func TestPeerAskWaitsForTheFillsSource(t *testing.T) {
	t.Parallel()
	up := testreg.Start(t, testreg.Options{TLS: true})
	b := up.PushBlob(t, "app", testreg.RandomLayer(t, 50_000))
	g := &gatedFetcher{entered: make(chan struct{}), decide: make(chan struct{}), source: "http://replica-c.test:3128"}
	e := newEnv(t, envOptions{fetcher: g}, upstreamSpec{host: "registry.test", reg: up})
	peer := httptest.NewServer(e.mirror.PeerHandler())
	t.Cleanup(peer.Close)

	client := make(chan string, 1)
	go func() {
		_, sum, _, err := hashGET(e, "/v2/registry.test/app/blobs/"+b.Digest.String())
		if err != nil {
			sum = err.Error()
		}
		client <- sum
	}()
	<-g.entered
	status := make(chan int, 1)
	go func() {
		resp, err := peer.Client().Get(peer.URL + mirror.PeerPath + b.Digest.String() + "?upstream=registry.test&repo=app")
		if err != nil {
			status <- -1
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	// The peer's request has joined the fill (two clients) before the
	// Fetcher decides.
	for {
		fills := e.mirror.Fills()
		if len(fills) == 1 && fills[0].Clients == 2 {
			break
		}
		select {
		case s := <-status:
			t.Fatalf("the peer's request ended (%d) before the fill's source was decided", s)
		case <-time.After(5 * time.Millisecond):
		}
	}
	close(g.decide)
	if s := <-status; s != http.StatusConflict {
		t.Errorf("peer ask joined a fill that streams from another replica: %d, want 409", s)
	}
	if sum := <-client; sum != b.Digest.String() {
		t.Errorf("the local client got %s, want %s", sum, b.Digest)
	}
}
