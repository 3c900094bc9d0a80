package mirror_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/storage"
	"github.com/opencontainers/go-digest"
)

// boundedCache admits content up to max bytes and counts the room asked;
// its disk is low when low is set.
type boundedCache struct {
	max      int64
	reserved atomic.Int64
	low      atomic.Bool
}

func (c *boundedCache) Admit(size int64) bool { return size <= c.max }
func (c *boundedCache) Reserve(_ context.Context, size int64) error {
	c.reserved.Add(size)
	return nil
}
func (c *boundedCache) Committed(context.Context, storage.Content) error            { return nil }
func (c *boundedCache) Linked(context.Context, digest.Digest, string, string) error { return nil }
func (c *boundedCache) Unlinked(context.Context, digest.Digest, string, string) error {
	return nil
}
func (c *boundedCache) Hit(digest.Digest)                {}
func (c *boundedCache) Pin(digest.Digest) (unpin func()) { return func() {} }
func (c *boundedCache) LowOnDisk() bool                  { return c.low.Load() }
func (c *boundedCache) Repos(context.Context, digest.Digest) ([]string, bool, error) {
	return nil, false, nil
}

// TestBlobWithoutLengthLargerThanTheCacheIsNotKept: a blob sent without
// a Content-Length (chunked) that turns out larger than the cache's whole
// bound reaches its client, verified, but is neither committed nor given
// room (which would have emptied the cache for it).
func TestBlobWithoutLengthLargerThanTheCacheIsNotKept(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true})
	b := reg.PushBlob(t, "app", testreg.RandomLayer(t, 3<<20))
	c := &boundedCache{max: 2 << 20}
	e := newEnv(t, envOptions{cache: c}, upstreamSpec{host: "registry.test", reg: reg})
	reg.SetFault(testreg.FaultNoLength)
	status, sum, _, err := hashGET(e, "/v2/registry.test/app/blobs/"+b.Digest.String())
	if err != nil || status != 200 || sum != b.Digest.String() {
		t.Fatalf("GET: %d %s %v", status, sum, err)
	}
	e.drain()
	if _, err := e.store.StatBlob(t.Context(), b.Digest); err == nil {
		t.Error("a blob larger than the cache's bound was committed")
	}
	if n := c.reserved.Load(); n != 0 {
		t.Errorf("%d bytes of room were asked for a blob that is not kept", n)
	}
}
