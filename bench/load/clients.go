package load

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Request kinds of the mix, in report order, with their weights (out of
// 100): roughly what pulls of warm images send (a HEAD of the tag, the
// manifest by digest, the config and layers), plus GETs by tag (older
// clients) and blob HEADs (clients checking what they have).
var kinds = []struct {
	name   string
	weight int
}{
	{"manifest GET by tag", 10},
	{"manifest GET by digest", 15},
	{"manifest HEAD by tag", 15},
	{"blob GET, small", 35},
	{"blob GET, large", 10},
	{"blob HEAD", 15},
}

// request is one concrete request of a kind.
type request struct {
	kind   int
	method string
	path   string
	accept string
	size   int64  // the body's (GET) or Content-Length's (HEAD) size
	digest string // the body's digest (GET)
	blob   bool
}

// mix builds the concrete requests of every kind from the images.
func (r *runner) mix() []request {
	var out []request
	p := "/v2/" + r.o.Registry + "/"
	for _, img := range r.images {
		man := p + img.repo + "/manifests/"
		size := int64(len(img.manifest))
		out = append(out,
			request{kind: 0, method: http.MethodGet, path: man + img.tag, accept: mediaTypeManifest, size: size, digest: img.manifestDigest},
			request{kind: 1, method: http.MethodGet, path: man + img.manifestDigest, accept: mediaTypeManifest, size: size, digest: img.manifestDigest},
			request{kind: 2, method: http.MethodHead, path: man + img.tag, accept: mediaTypeManifest, size: size})
		blobs := p + img.repo + "/blobs/"
		for _, b := range []blob{img.config, img.layers[0]} {
			out = append(out, request{kind: 3, method: http.MethodGet, path: blobs + b.digest, size: b.size, digest: b.digest, blob: true})
		}
		big := img.layers[1]
		out = append(out, request{kind: 4, method: http.MethodGet, path: blobs + big.digest, size: big.size, digest: big.digest, blob: true})
		for _, b := range append([]blob{img.config}, img.layers...) {
			out = append(out, request{kind: 5, method: http.MethodHead, path: blobs + b.digest, size: b.size, blob: true})
		}
	}
	return out
}

// warm fetches every manifest and blob once through the proxy and waits
// until every blob answers a HEAD from the cache.
func (r *runner) warm(ctx context.Context) error {
	t0 := time.Now()
	c := newClient(r.base, nil)
	defer c.close()
	for _, q := range r.requests {
		if q.method != http.MethodGet {
			continue
		}
		if _, cause, err := c.do(ctx, q, true); err != nil {
			return fmt.Errorf("warming %s: %s: %w", q.path, cause, err)
		}
	}
	for _, q := range r.requests {
		if q.kind != 5 {
			continue
		}
		if err := c.waitHit(ctx, q); err != nil {
			return err
		}
	}
	r.o.Log("warmed %d manifests and blobs in %.1fs", len(r.requests), time.Since(t0).Seconds())
	return nil
}

// client is one keep-alive client: a transport with one connection.
type client struct {
	base string
	tr   *http.Transport
	c    *http.Client
	buf  []byte
}

func newClient(base string, dials *atomic.Int64) *client {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               nil,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials != nil {
				dials.Add(1)
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	return &client{base: base, tr: tr, c: &http.Client{Transport: tr, Timeout: time.Minute}, buf: make([]byte, 32<<10)}
}

func (c *client) close() { c.tr.CloseIdleConnections() }

// errCheck is a failed check of an answer (status, length, digest).
type errCheck struct{ msg string }

func (e *errCheck) Error() string { return e.msg }

// do sends q and checks the answer: a 200, the expected length, and (with
// verify, and always for manifests) the digest of the body. It returns
// the X-Cache header and, on failure, a short cause and the error.
func (c *client) do(ctx context.Context, q request, verify bool) (string, string, error) {
	req, err := http.NewRequestWithContext(ctx, q.method, c.base+q.path, nil)
	if err != nil {
		return "", "request", err
	}
	if q.accept != "" {
		req.Header.Set("Accept", q.accept)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return "", "transport error", err
	}
	defer resp.Body.Close()
	xc := resp.Header.Get("X-Cache")
	if resp.StatusCode/100 != 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return xc, fmt.Sprintf("status %d", resp.StatusCode), &errCheck{fmt.Sprintf("%s %s: status %d", q.method, q.path, resp.StatusCode)}
	}
	if resp.ContentLength != q.size {
		return xc, "wrong Content-Length", &errCheck{fmt.Sprintf("%s %s: Content-Length %d, want %d", q.method, q.path, resp.ContentLength, q.size)}
	}
	if q.method == http.MethodHead {
		return xc, "", nil
	}
	var n int64
	var sum string
	if verify || !q.blob {
		h := sha256.New()
		n, err = io.CopyBuffer(h, resp.Body, c.buf)
		sum = "sha256:" + hex.EncodeToString(h.Sum(nil))
	} else {
		n, err = io.CopyBuffer(io.Discard, resp.Body, c.buf)
	}
	switch {
	case err != nil:
		return xc, "body cut short", fmt.Errorf("%s %s after %d bytes: %w", q.method, q.path, n, err)
	case n != q.size:
		return xc, "wrong body length", &errCheck{fmt.Sprintf("%s %s: %d bytes, want %d", q.method, q.path, n, q.size)}
	case sum != "" && sum != q.digest:
		return xc, "wrong digest", &errCheck{fmt.Sprintf("%s %s: body digest %s", q.method, q.path, sum)}
	}
	return xc, "", nil
}

// waitHit sends q (a blob HEAD) until the proxy answers it from the cache
// (X-Cache HIT): a fill hands its client the last byte before the commit.
func (c *client) waitHit(ctx context.Context, q request) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		xc, cause, err := c.do(ctx, q, false)
		if err != nil {
			return fmt.Errorf("HEAD %s: %s: %w", q.path, cause, err)
		}
		if xc == "HIT" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("HEAD %s: X-Cache %q 30s after its fill, want HIT", q.path, xc)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// kindStats is one client's (then the run's) figures of a kind.
type kindStats struct {
	requests, errors, bytes int64
	lat                     []time.Duration
}

// runStats is what runClients measured.
type runStats struct {
	kinds   []kindStats
	total   kindStats
	errs    map[string]int64
	samples []string
	cache   map[string]int64
	dials   int64
	took    time.Duration
}

// maxSamples bounds the error messages kept.
const maxSamples = 10

// runClients runs r.o.Clients clients on the mix for d; each finishes the
// request it has in flight at the end, then closes its connection.
func (r *runner) runClients(ctx context.Context, d time.Duration) *runStats {
	cum := make([]int, len(kinds))
	for i, k := range kinds {
		cum[i] = k.weight
		if i > 0 {
			cum[i] += cum[i-1]
		}
	}
	byKind := make([][]request, len(kinds))
	for _, q := range r.requests {
		byKind[q.kind] = append(byKind[q.kind], q)
	}
	var (
		dials atomic.Int64
		mu    sync.Mutex
		wg    sync.WaitGroup
	)
	st := &runStats{kinds: make([]kindStats, len(kinds)), errs: map[string]int64{}, cache: map[string]int64{}}
	start := time.Now()
	deadline := start.Add(d)
	for i := range r.o.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := r.client(ctx, uint64(i), deadline, cum, byKind, &dials)
			mu.Lock()
			st.merge(one)
			mu.Unlock()
		}()
	}
	wg.Wait()
	st.took = time.Since(start)
	st.dials = dials.Load()
	return st
}

// client is one client's loop until the deadline.
func (r *runner) client(ctx context.Context, seed uint64, deadline time.Time, cum []int, byKind [][]request, dials *atomic.Int64) *runStats {
	rng := rand.New(rand.NewPCG(seed, 0x10ad))
	c := newClient(r.base, dials)
	defer c.close()
	st := &runStats{kinds: make([]kindStats, len(kinds)), errs: map[string]int64{}, cache: map[string]int64{}}
	var blobGets int
	for ctx.Err() == nil && time.Now().Before(deadline) {
		w := rng.IntN(cum[len(cum)-1])
		k := 0
		for w >= cum[k] {
			k++
		}
		q := byKind[k][rng.IntN(len(byKind[k]))]
		verify := false
		if q.blob && q.method == http.MethodGet {
			verify = blobGets%r.o.VerifyEvery == 0
			blobGets++
		}
		t0 := time.Now()
		xc, cause, err := c.do(ctx, q, verify)
		lat := time.Since(t0)
		ks := &st.kinds[k]
		ks.requests++
		ks.lat = append(ks.lat, lat)
		if q.method == http.MethodGet {
			st.cache[xc]++
		}
		if err == nil && q.method == http.MethodGet {
			ks.bytes += q.size
		}
		if err != nil {
			if ctx.Err() != nil {
				break // interrupted: not the proxy's failure
			}
			ks.errors++
			st.errs[cause]++
			if len(st.samples) < maxSamples {
				st.samples = append(st.samples, err.Error())
			}
		}
	}
	return st
}

// merge adds o's figures to st.
func (st *runStats) merge(o *runStats) {
	for i := range st.kinds {
		a, b := &st.kinds[i], o.kinds[i]
		a.requests += b.requests
		a.errors += b.errors
		a.bytes += b.bytes
		a.lat = append(a.lat, b.lat...)
		st.total.requests += b.requests
		st.total.errors += b.errors
		st.total.bytes += b.bytes
	}
	for k, v := range o.errs {
		st.errs[k] += v
	}
	for k, v := range o.cache {
		st.cache[k] += v
	}
	for _, s := range o.samples {
		if len(st.samples) < maxSamples {
			st.samples = append(st.samples, s)
		}
	}
}
