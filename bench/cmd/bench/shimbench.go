package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
)

// startTLSUpstream starts the TLS docker-registry on the plain one's
// storage and a TLS counting proxy in front of it. The returned function
// stops the counter (the registry is stopped by the caller or cleanup).
func startTLSUpstream(ctx context.Context, e *env, bin string) (*tlsUpstream, func(), error) {
	pki, err := newTestPKI(filepath.Join(e.root, "upstream-tls"))
	if err != nil {
		return nil, nil, fmt.Errorf("test PKI: %w", err)
	}
	reg, direct, err := startRegistry(ctx, e, bin, pki)
	if err != nil {
		return nil, nil, err
	}
	cnt, counted, stop, err := startCounter(direct, pki)
	if err != nil {
		_ = e.stop(reg)
		return nil, nil, err
	}
	return &tlsUpstream{pki: pki, reg: reg, direct: direct, counted: counted, cnt: cnt}, stop, nil
}

// fetchCA GETs the proxy's interception CA from /ca.crt, as a client
// setting itself up would.
func fetchCA(ctx context.Context, base string) (*x509.CertPool, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ca.crt", nil)
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /ca.crt: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("GET /ca.crt: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /ca.crt: status %d", resp.StatusCode)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(body) {
		return nil, fmt.Errorf("GET /ca.crt: no PEM certificate in %d bytes", len(body))
	}
	return pool, nil
}

// shimRows are the TLS scenarios: direct downloads from the TLS upstream
// and warm downloads through the shim, each with hashed and length-only
// bodies.
type shimRows struct {
	directHashed, direct, viaHashed, via *scenario
	ratios                               []float64 // shim / direct throughput of each interleaved pair of plain rounds
}

// shim fills a cache through the shim (CONNECT upstreamTLSHost, TLS
// terminated by the proxy), starts a fresh proxy process on it, and then
// times rounds of n clients alternately against the TLS upstream directly
// and through the shim: repeat rounds with hashed bodies, then warmRounds
// rounds that only count bytes. The order within a pair alternates
// (direct first, then shim first, ...), so that drift in the machine's
// load does not favour either.
func (b *bench) shim(ctx context.Context, n int) (*shimRows, error) {
	t := b.tls
	rows := &shimRows{
		directHashed: &scenario{name: fmt.Sprintf("upstream direct TLS, %d client(s), bodies hashed", n), clients: n, peer: true},
		direct:       &scenario{name: fmt.Sprintf("upstream direct TLS, %d client(s)", n), clients: n, peer: true},
		viaHashed:    &scenario{name: fmt.Sprintf("proxy warm via shim (TLS), %d client(s), bodies hashed", n), clients: n, proxy: true},
		via: &scenario{name: fmt.Sprintf("proxy warm via shim (TLS), %d client(s)", n), clients: n, proxy: true, lines: map[string]int{},
			linesOf: "both shim rows (one process)"},
	}
	cache := filepath.Join(b.e.root, "cache", "shim")
	pr, err := startTLSProxy(ctx, b.e, b.o.proxyBin, "shim-fill", cache, t.counted, t.pki.caFile)
	if err != nil {
		return nil, err
	}
	ours, err := fetchCA(ctx, pr.base)
	if err != nil {
		_ = b.stopProxy(pr)
		return nil, err
	}
	proxyURL, err := url.Parse(pr.base)
	if err != nil {
		return nil, err
	}
	viaPull := func(verify bool, proxyURL *url.URL) pull {
		return pull{
			newC: func() *http.Client { return newTLSClient(ours, proxyURL, b.o.tlsHTTP1) },
			base: "https://" + upstreamTLSHost, name: b.img.repo, tag: b.img.tag, img: b.img, verify: verify,
		}
	}
	fill, err := b.measurePull(ctx, pr, t.cnt, viaPull(true, proxyURL), 1)
	if err != nil {
		return nil, fmt.Errorf("shim: filling the cache through the shim: %w; proxy log: %s", err, pr.log)
	}
	if fill.upstream.BlobRequests != 1 || fill.upstream.BlobBytes != b.img.blobSize {
		return nil, fmt.Errorf("shim: the fill through the shim fetched %d blob bytes in %d GETs from the TLS upstream, want %d in 1; proxy log: %s",
			fill.upstream.BlobBytes, fill.upstream.BlobRequests, b.img.blobSize, pr.log)
	}
	b.log("shim fill through CONNECT: %.2fs (%v)", fill.wall.Seconds(), fill.protos)
	if err := waitCommitted(ctx, pr.p, cache, b.img.blobDigest, b.img.blobSize); err != nil {
		return nil, err
	}
	if err := b.stopProxy(pr); err != nil {
		return nil, err
	}
	if pr, err = startTLSProxy(ctx, b.e, b.o.proxyBin, "shim", cache, t.counted, t.pki.caFile); err != nil {
		return nil, err
	}
	b.log("shim proxy pid %d, docker-registry (TLS) pid %d", pr.p.pid(), t.reg.pid())
	if proxyURL, err = url.Parse(pr.base); err != nil {
		return nil, err
	}
	direct := func(verify bool) (sample, error) {
		p := pull{
			newC: func() *http.Client { return newTLSClient(t.pki.roots, nil, b.o.tlsHTTP1) },
			base: t.direct, name: b.img.repo, tag: b.img.tag, img: b.img, verify: verify,
		}
		cpu0, err := cpuTime(t.reg.pid())
		if err != nil {
			return sample{}, err
		}
		self0, _ := cpuTime(os.Getpid())
		res, err := pullAll(ctx, p, n)
		if err != nil {
			return sample{}, err
		}
		self1, _ := cpuTime(os.Getpid())
		cpu1, err := cpuTime(t.reg.pid())
		if err != nil {
			return sample{}, err
		}
		return sample{wall: res.wall, bytes: res.bytes, lastWait: res.lastWait, peerCPU: cpu1 - cpu0, selfCPU: self1 - self0, protos: res.protos}, nil
	}
	for _, pair := range []struct {
		d, v   *scenario
		verify bool
		rounds int
	}{
		{rows.directHashed, rows.viaHashed, true, b.o.repeat},
		{rows.direct, rows.via, false, b.o.warmRounds},
	} {
		for i := range pair.rounds {
			var ds, vs sample
			for k := range 2 {
				if (k == 0) == (i%2 == 0) {
					if ds, err = direct(pair.verify); err != nil {
						return nil, fmt.Errorf("%s round %d: %w", pair.d.name, i+1, err)
					}
					continue
				}
				if vs, err = b.measurePull(ctx, pr, t.cnt, viaPull(pair.verify, proxyURL), n); err != nil {
					return nil, fmt.Errorf("%s round %d: %w; proxy log: %s", pair.v.name, i+1, err, pr.log)
				}
			}
			pair.d.samples = append(pair.d.samples, ds)
			pair.v.samples = append(pair.v.samples, vs)
			ratio := mbps(vs.bytes, vs.wall) / mbps(ds.bytes, ds.wall)
			if !pair.verify {
				rows.ratios = append(rows.ratios, ratio)
			}
			b.log("TLS round %d/%d (hashed %v): direct %.2fs %.0f MB/s (registry CPU %.2fs); shim %.2fs %.0f MB/s (proxy CPU %.2fs, upstream blob GETs %d, VmHWM %.1f MiB); shim/direct %.2f×",
				i+1, pair.rounds, pair.verify, ds.wall.Seconds(), mbps(ds.bytes, ds.wall), ds.peerCPU.Seconds(),
				vs.wall.Seconds(), mbps(vs.bytes, vs.wall), vs.cpu.Seconds(), vs.upstream.BlobRequests, mib(vs.rss), ratio)
		}
	}
	if err := b.finish(pr, rows.via); err != nil {
		return nil, err
	}
	return rows, nil
}
