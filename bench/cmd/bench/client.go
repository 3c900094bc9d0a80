package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// newClient returns an HTTP client for n concurrent downloads from
// loopback: no environment proxy, no compression, one connection each.
func newClient(n int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DisableCompression:  true,
		MaxIdleConnsPerHost: n,
		MaxConnsPerHost:     n,
		IdleConnTimeout:     30 * time.Second,
	}}
}

// pull is what a client does: GET the manifest by tag (when tag is not
// ""), then GET the blob, verifying the body's length and, when verify,
// its digest. base is a registry base URL and name the repository path
// under it.
type pull struct {
	c      *http.Client
	base   string
	name   string
	tag    string
	img    image
	verify bool
}

func (p pull) run(ctx context.Context) (int64, time.Duration, error) {
	if p.tag != "" {
		if err := p.manifest(ctx); err != nil {
			return 0, 0, err
		}
	}
	return p.blob(ctx)
}

func (p pull) manifest(ctx context.Context) error {
	url := p.base + "/v2/" + p.name + "/manifests/" + p.tag
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", mediaTypeManifest)
	resp, err := p.c.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("GET %s: reading body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, body)
	}
	if d := digestOf(body); d != p.img.manifestDigest {
		return fmt.Errorf("GET %s: manifest digest %s, want %s", url, d, p.img.manifestDigest)
	}
	return nil
}

// blob GETs the blob and returns its length and the last-byte wait: how
// long the final byte came after all the others.
func (p pull) blob(ctx context.Context) (int64, time.Duration, error) {
	url := p.base + "/v2/" + p.name + "/blobs/" + p.img.blobDigest
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := p.c.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return 0, 0, fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, b)
	}
	body := &tailTimer{r: resp.Body, size: p.img.blobSize}
	var w io.Writer = io.Discard
	h := sha256.New()
	if p.verify {
		w = h
	}
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(w, body, buf)
	if err != nil {
		return n, 0, fmt.Errorf("GET %s: body cut after %d of %d bytes: %w", url, n, p.img.blobSize, err)
	}
	if n != p.img.blobSize {
		return n, 0, fmt.Errorf("GET %s: body has %d bytes, want %d", url, n, p.img.blobSize)
	}
	if p.verify {
		if d := "sha256:" + hex.EncodeToString(h.Sum(nil)); d != p.img.blobDigest {
			return n, 0, fmt.Errorf("GET %s: body digest %s, want %s", url, d, p.img.blobDigest)
		}
	}
	return n, body.wait(), nil
}

// tailTimer notes when all but the last byte of a size-byte body had
// arrived and when the last one did.
type tailTimer struct {
	r                 io.Reader
	size, n           int64
	penultimate, last time.Time
}

func (t *tailTimer) Read(p []byte) (int, error) {
	k, err := t.r.Read(p)
	if k > 0 {
		t.n += int64(k)
		now := time.Now()
		if t.penultimate.IsZero() && t.n >= t.size-1 {
			t.penultimate = now
		}
		if t.n >= t.size {
			t.last = now
		}
	}
	return k, err
}

func (t *tailTimer) wait() time.Duration {
	if t.last.IsZero() || t.penultimate.IsZero() {
		return 0
	}
	return t.last.Sub(t.penultimate)
}

// result is one timed round of concurrent pulls.
type result struct {
	wall     time.Duration
	bytes    int64
	lastWait time.Duration // the longest last-byte wait of the clients
}

// pullAll runs n copies of p at once, started together, and returns the
// wall time until the last one finished. Any client's error fails the
// round.
func pullAll(ctx context.Context, p pull, n int) (result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		wait  time.Duration
		first error
	)
	gate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			k, lw, err := p.run(ctx)
			mu.Lock()
			defer mu.Unlock()
			total += k
			wait = max(wait, lw)
			if err != nil && first == nil {
				first = fmt.Errorf("client %d/%d: %w", i+1, n, err)
				cancel()
			}
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)
	if first != nil {
		return result{}, first
	}
	return result{wall: wall, bytes: total, lastWait: wait}, nil
}
