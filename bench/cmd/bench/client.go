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
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// newClient returns the HTTP client of one plain-HTTP client: its own
// transport (its own connections, as separate machines would have), no
// environment proxy, no compression.
func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}}
}

// newTLSClient returns the HTTP client of one TLS client: its own
// transport, trusting roots, through the HTTP proxy at proxy when not nil
// (CONNECT; set explicitly, since the environment's proxy is skipped for
// loopback), h2 negotiated by ALPN unless http1.
func newTLSClient(roots *x509.CertPool, proxy *url.URL, http1 bool) *http.Client {
	tr := &http.Transport{
		DisableCompression:  true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   !http1,
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

// target is where clients pull from: a registry base URL, the name under
// which the image's repository is reached there, and a maker of clients.
// splice: blob GETs of clients that do not verify digests go through a
// spliceClient (plain HTTP only; --client splice). bases: replicas, which
// client i reaches at bases[i % len(bases)] (base is bases[0]).
type target struct {
	base      string
	bases     []string
	name      func(repo string) string
	newClient func() *http.Client
	splice    bool
}

// got is what one client received.
type got struct {
	bytes int64 // body bytes, manifest and blobs
	reqs  int64
	proto string // protocol, and TLS version and cipher suite if any
}

// pullImage is what a client does: GET the manifest by tag, then the
// config and the layers, parallel at a time (as Docker does), checking
// every body's length and, when verify, its digest. Blob bodies go to
// /dev/null through sc when not nil (it never verifies).
func pullImage(ctx context.Context, c *http.Client, sc *spliceClient, t target, img *image, parallel int, verify bool) (got, error) {
	name := t.name(img.repo)
	g := got{}
	body, proto, err := getManifest(ctx, c, t.base, name, img.tag)
	if err != nil {
		return g, err
	}
	g.bytes, g.reqs, g.proto = int64(len(body)), 1, proto
	if d := digest.FromBytes(body).String(); d != img.manifestDigest {
		return g, fmt.Errorf("manifest %s:%s: digest %s, want %s", name, img.tag, d, img.manifestDigest)
	}
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, parallel)
	for _, b := range img.blobs() {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var (
				n   int64
				err error
			)
			if sc != nil && !verify {
				n, err = sc.getBlob(ctx, t.base, name, b)
			} else {
				n, err = getBlob(ctx, c, t.base, name, b, verify)
			}
			mu.Lock()
			defer mu.Unlock()
			g.bytes += n
			g.reqs++
			if err != nil && first == nil {
				first = err
			}
		}()
	}
	wg.Wait()
	return g, first
}

// getManifest GETs a manifest by reference and returns its body.
func getManifest(ctx context.Context, c *http.Client, base, name, ref string) ([]byte, string, error) {
	u := base + "/v2/" + name + "/manifests/" + ref
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Accept", mediaTypeManifest)
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: reading body: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s: status %d: %s", u, resp.StatusCode, body)
	}
	return body, protoOf(resp), nil
}

func protoOf(resp *http.Response) string {
	proto := resp.Proto
	if resp.TLS != nil {
		proto += " " + tls.VersionName(resp.TLS.Version) + " " + tls.CipherSuiteName(resp.TLS.CipherSuite)
	}
	return proto
}

// copyBufs are the clients' read buffers.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// getBlob GETs blob b, checks the body's length (and digest when verify)
// and returns the body bytes received.
func getBlob(ctx context.Context, c *http.Client, base, name string, b blob, verify bool) (int64, error) {
	return getBlobURL(ctx, c, base+"/v2/"+name+"/blobs/"+b.digest, b, verify)
}

// getBlobURL is getBlob from URL u: net/http, the body copied into user
// space (and hashed when verify), redirects followed.
func getBlobURL(ctx context.Context, c *http.Client, u string, b blob, verify bool) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return 0, fmt.Errorf("GET %s: status %d: %s", u, resp.StatusCode, msg)
	}
	w := io.Discard
	h := sha256.New()
	if verify {
		w = h
	}
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	n, err := io.CopyBuffer(w, onlyReader{resp.Body}, *bufp)
	if err != nil {
		return n, fmt.Errorf("GET %s: body cut after %d of %d bytes: %w", u, n, b.size, err)
	}
	if n != b.size {
		return n, fmt.Errorf("GET %s: body has %d bytes, want %d", u, n, b.size)
	}
	if verify {
		if d := "sha256:" + hex.EncodeToString(h.Sum(nil)); d != b.digest {
			return n, fmt.Errorf("GET %s: body digest %s, want %s", u, d, b.digest)
		}
	}
	return n, nil
}

// onlyReader hides a reader's WriterTo, so that io.CopyBuffer uses the
// given buffer.
type onlyReader struct{ io.Reader }

// result is one timed run or round of concurrent pulls.
type result struct {
	wall   time.Duration
	bytes  int64
	reqs   int64
	protos map[string]int // clients by protocol (and TLS version, suite)
}

// pullAll runs n clients, each with a client of its own, started
// together, and returns the wall time until the last one finished. verify
// is the --verify mode ("one": the first client of each replica). Clients
// are spread over t's replicas round-robin. Any client's error fails the
// run.
func pullAll(ctx context.Context, t target, img *image, n, parallel int, verify string) (result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		res    = result{protos: map[string]int{}}
		first  error
		gate   = make(chan struct{})
		cls    = make([]*http.Client, n)
		scs    = make([]*spliceClient, n)
		hashes = func(i int) bool { return verify == "all" || (verify == "one" && i < max(1, len(t.bases))) }
	)
	for i := range n {
		ti := t
		if len(t.bases) > 0 {
			ti.base = t.bases[i%len(t.bases)]
		}
		cls[i] = t.newClient()
		if t.splice && !hashes(i) && strings.HasPrefix(ti.base, "http://") {
			scs[i] = newSpliceClient(cls[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			g, err := pullImage(ctx, cls[i], scs[i], ti, img, parallel, hashes(i))
			mu.Lock()
			defer mu.Unlock()
			res.bytes += g.bytes
			res.reqs += g.reqs
			if g.proto != "" {
				res.protos[g.proto]++
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
	res.wall = time.Since(start)
	for i, c := range cls {
		c.CloseIdleConnections()
		if scs[i] != nil {
			scs[i].closeIdle()
		}
	}
	if first != nil {
		return result{}, first
	}
	return res, nil
}
