package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// counts are the requests and response body bytes the upstream served,
// by kind of object.
type counts struct {
	BlobRequests, BlobBytes         int64
	ManifestRequests, ManifestBytes int64
	ManifestGETs                    int64 // of ManifestRequests (the rest are HEADs)
	OtherRequests, OtherBytes       int64
}

func (c counts) sub(o counts) counts {
	return counts{
		c.BlobRequests - o.BlobRequests, c.BlobBytes - o.BlobBytes,
		c.ManifestRequests - o.ManifestRequests, c.ManifestBytes - o.ManifestBytes,
		c.ManifestGETs - o.ManifestGETs,
		c.OtherRequests - o.OtherRequests, c.OtherBytes - o.OtherBytes,
	}
}

// counter is a reverse proxy in front of the upstream that counts what
// it serves, so "bytes fetched from upstream" is measured.
type counter struct {
	blobReq, blobBytes         atomic.Int64
	manifestReq, manifestBytes atomic.Int64
	manifestGET                atomic.Int64
	otherReq, otherBytes       atomic.Int64
	rp                         *httputil.ReverseProxy
}

func (c *counter) snapshot() counts {
	return counts{
		c.blobReq.Load(), c.blobBytes.Load(),
		c.manifestReq.Load(), c.manifestBytes.Load(),
		c.manifestGET.Load(),
		c.otherReq.Load(), c.otherBytes.Load(),
	}
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, bytes := &c.otherReq, &c.otherBytes
	switch {
	case strings.Contains(r.URL.Path, "/blobs/"):
		req, bytes = &c.blobReq, &c.blobBytes
	case strings.Contains(r.URL.Path, "/manifests/"):
		req, bytes = &c.manifestReq, &c.manifestBytes
		if r.Method == http.MethodGet {
			c.manifestGET.Add(1)
		}
	}
	req.Add(1)
	c.rp.ServeHTTP(&countingWriter{ResponseWriter: w, n: bytes}, r)
}

// countingWriter adds every body byte written to n.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	k, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(k))
	return k, err
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// startCounter serves a counting reverse proxy to target on a loopback
// port. It returns the counter, its base URL and a function that stops it.
// With pki it serves TLS with pki's server certificate and trusts pki's CA
// towards target (the TLS upstream).
func startCounter(target string, pki *testPKI) (*counter, string, func(), error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, "", nil, err
	}
	c := &counter{rp: httputil.NewSingleHostReverseProxy(u)}
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 64,
		DisableCompression:  true,
		IdleConnTimeout:     30 * time.Second,
	}
	if pki != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: pki.roots, MinVersion: tls.VersionTLS12}
	}
	c.rp.Transport = tr
	c.rp.BufferPool = bufPool{ch: make(chan []byte, 64)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if pki != nil {
		scheme = "https"
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12}
	}
	go func() {
		serve := srv.Serve
		if pki != nil {
			serve = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") }
		}
		if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = srv.Close()
		tr.CloseIdleConnections()
	}
	return c, scheme + "://" + ln.Addr().String(), stop, nil
}

// bufPool gives the reverse proxy 256 KiB copy buffers (fewer syscalls
// than its 32 KiB default, so the counter disturbs the numbers less).
type bufPool struct{ ch chan []byte }

func (p bufPool) Get() []byte {
	select {
	case b := <-p.ch:
		return b
	default:
		return make([]byte, 256<<10)
	}
}

func (p bufPool) Put(b []byte) {
	select {
	case p.ch <- b:
	default:
	}
}
