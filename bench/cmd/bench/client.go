package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

// newTLSClient returns the HTTP client of one TLS client: its own
// transport (its own connection, as separate machines would have),
// trusting roots, through the HTTP proxy at proxy when not nil (CONNECT;
// set explicitly, since the environment's proxy is skipped for loopback),
// h2 negotiated by ALPN unless http1.
func newTLSClient(roots *x509.CertPool, proxy *url.URL, http1 bool) *http.Client {
	tr := &http.Transport{
		DisableCompression: true,
		MaxConnsPerHost:    1,
		IdleConnTimeout:    30 * time.Second,
		TLSClientConfig:    &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:  !http1,
	}
	if proxy != nil {
		tr.Proxy = http.ProxyURL(proxy)
	}
	if http1 {
		// A non-nil, empty map turns h2 off.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr}
}

// pull is what a client does: GET the manifest by tag (when tag is not
// ""), then GET the blob, verifying the body's length and, when verify,
// its digest. base is a registry base URL and name the repository path
// under it.
type pull struct {
	c      *http.Client
	newC   func() *http.Client // when set, each client of pullAll gets its own
	base   string
	name   string
	tag    string
	img    image
	verify bool
}

// got is what one client's blob GET delivered.
type got struct {
	n     int64
	wait  time.Duration // last-byte wait
	proto string        // protocol, and TLS version and cipher suite if any
}

func (p pull) run(ctx context.Context) (got, error) {
	if p.tag != "" {
		if err := p.manifest(ctx); err != nil {
			return got{}, err
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

// blob GETs the blob and returns its length, the last-byte wait (how
// long the final byte came after all the others) and the protocol.
func (p pull) blob(ctx context.Context) (got, error) {
	url := p.base + "/v2/" + p.name + "/blobs/" + p.img.blobDigest
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := p.c.Do(req)
	if err != nil {
		return got{}, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return got{}, fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, b)
	}
	proto := resp.Proto
	if resp.TLS != nil {
		proto += " " + tls.VersionName(resp.TLS.Version) + " " + tls.CipherSuiteName(resp.TLS.CipherSuite)
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
		return got{n: n}, fmt.Errorf("GET %s: body cut after %d of %d bytes: %w", url, n, p.img.blobSize, err)
	}
	if n != p.img.blobSize {
		return got{n: n}, fmt.Errorf("GET %s: body has %d bytes, want %d", url, n, p.img.blobSize)
	}
	if p.verify {
		if d := "sha256:" + hex.EncodeToString(h.Sum(nil)); d != p.img.blobDigest {
			return got{n: n}, fmt.Errorf("GET %s: body digest %s, want %s", url, d, p.img.blobDigest)
		}
	}
	return got{n: n, wait: body.wait(), proto: proto}, nil
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
	lastWait time.Duration  // the longest last-byte wait of the clients
	protos   map[string]int // clients by protocol (and TLS version, suite)
}

// pullAll runs n copies of p at once, started together, and returns the
// wall time until the last one finished. Any client's error fails the
// round.
func pullAll(ctx context.Context, p pull, n int) (result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		total  int64
		wait   time.Duration
		first  error
		protos = map[string]int{}
	)
	gate := make(chan struct{})
	clients := []*http.Client{p.c}
	for i := range n {
		wg.Add(1)
		p := p
		if p.newC != nil {
			p.c = p.newC()
			clients = append(clients, p.c)
		}
		go func() {
			defer wg.Done()
			<-gate
			g, err := p.run(ctx)
			mu.Lock()
			defer mu.Unlock()
			total += g.n
			wait = max(wait, g.wait)
			if g.proto != "" {
				protos[g.proto]++
			}
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
	for _, c := range clients {
		if c != nil {
			c.CloseIdleConnections()
		}
	}
	if first != nil {
		return result{}, first
	}
	return result{wall: wall, bytes: total, lastWait: wait, protos: protos}, nil
}
