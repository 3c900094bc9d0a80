package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
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
