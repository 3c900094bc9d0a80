package mirror

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/opencontainers/go-digest"
)

// heldUpstream is a registry's Upstream as the mirror calls it: every
// request to the upstream — manifests, blobs, tag lists, referrers, link
// checks — passes here, so a throttle hold (outage.go) covers them all.
// While the upstream is held after asking to wait, a call fails at once
// with its status and the remaining Retry-After, and nothing is sent; an
// answer that asks to wait starts the hold.
type heldUpstream struct {
	Upstream
	m    *Mirror
	host string
}

// held returns the answer while the upstream is held, counting it.
func (h *heldUpstream) held() error {
	err := h.m.throttled(h.host)
	if err != nil {
		h.m.opts.Observer.Throttled(h.host)
	}
	return err
}

func (h *heldUpstream) Manifest(ctx context.Context, repo, ref string, head bool) (oci.Descriptor, io.ReadCloser, error) {
	if err := h.held(); err != nil {
		return oci.Descriptor{}, nil, err
	}
	desc, body, err := h.Upstream.Manifest(ctx, repo, ref, head)
	h.m.noteThrottle(ctx, h.host, err)
	return desc, body, err
}

func (h *heldUpstream) Blob(ctx context.Context, repo string, dgst digest.Digest) (io.ReadCloser, int64, error) {
	if err := h.held(); err != nil {
		return nil, -1, err
	}
	body, size, err := h.Upstream.Blob(ctx, repo, dgst)
	h.m.noteThrottle(ctx, h.host, err)
	return body, size, err
}

func (h *heldUpstream) BlobFrom(ctx context.Context, repo string, dgst digest.Digest, off int64) (io.ReadCloser, int64, error) {
	if err := h.held(); err != nil {
		return nil, -1, err
	}
	body, size, err := h.Upstream.BlobFrom(ctx, repo, dgst, off)
	h.m.noteThrottle(ctx, h.host, err)
	return body, size, err
}

func (h *heldUpstream) StatBlob(ctx context.Context, repo string, dgst digest.Digest) (int64, error) {
	if err := h.held(); err != nil {
		return -1, err
	}
	size, err := h.Upstream.StatBlob(ctx, repo, dgst)
	h.m.noteThrottle(ctx, h.host, err)
	return size, err
}

func (h *heldUpstream) Get(ctx context.Context, repo, suffix string, query url.Values) (*http.Response, error) {
	if err := h.held(); err != nil {
		return nil, err
	}
	resp, err := h.Upstream.Get(ctx, repo, suffix, query)
	h.m.noteThrottle(ctx, h.host, err)
	return resp, err
}

// RateRemaining passes the wrapped Upstream's rate-limit report on
// (RateLimited); ok is false when it has none.
func (h *heldUpstream) RateRemaining() (remaining int64, window time.Duration, seen time.Time, ok bool) {
	if rl, isRL := h.Upstream.(RateLimited); isRL {
		return rl.RateRemaining()
	}
	return 0, 0, time.Time{}, false
}
