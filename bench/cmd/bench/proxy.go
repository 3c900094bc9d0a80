package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// upstreamHost is the registry name clients use; the proxy maps it to the
// counting proxy's URL. Its namespace in mirror paths is upstreamNS.
// upstreamTLSHost is the name of the TLS upstream, which clients reach
// through the shim (CONNECT upstreamTLSHost); only the proxy resolves it.
const (
	upstreamHost    = "upstream.test:5000"
	upstreamNS      = "upstream.test_5000"
	upstreamTLSHost = "upstream.test:5443"
)

// proxyConfig is the proxy's YAML configuration.
const proxyConfig = `listen: "127.0.0.1:%d"
cacheDir: %q
caDir: %q
dockerHub: false
logFormat: text
registries:
  - host: %q
    endpoint: %q
%s`

// proxyRun is one started proxy process.
type proxyRun struct {
	p    *proc
	base string
	log  string
	anon *anonSampler
}

// startProxy starts the proxy binary with cacheDir as its cache, upstream
// as the endpoint of upstreamHost (plain HTTP), and waits for /healthz.
func startProxy(ctx context.Context, e *env, bin, name, cacheDir, upstream string) (*proxyRun, error) {
	return startProxyFor(ctx, e, bin, name, cacheDir, upstreamHost, upstream, "    insecure: true\n")
}

// startTLSProxy starts the proxy with upstream (https) as the endpoint of
// upstreamTLSHost, verified with the CA in caFile.
func startTLSProxy(ctx context.Context, e *env, bin, name, cacheDir, upstream, caFile string) (*proxyRun, error) {
	return startProxyFor(ctx, e, bin, name, cacheDir, upstreamTLSHost, upstream, fmt.Sprintf("    caFile: %q\n", caFile))
}

// startProxyFor starts the proxy with one registry, host at endpoint with
// the extra YAML lines extra, and waits for /healthz.
func startProxyFor(ctx context.Context, e *env, bin, name, cacheDir, host, upstream, extra string) (*proxyRun, error) {
	dir := filepath.Join(e.root, "proxy", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.yml")
	body := fmt.Sprintf(proxyConfig, port, cacheDir, filepath.Join(e.root, "ca"), host, upstream, extra)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return nil, err
	}
	log := filepath.Join(dir, "proxy.log")
	p, err := e.start("container-registry-proxy", log, bin, "--config", cfg)
	if err != nil {
		return nil, err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if err := waitHTTP(ctx, p, base+"/healthz", 200); err != nil {
		_ = e.stop(p)
		return nil, err
	}
	return &proxyRun{p: p, base: base, log: log, anon: sampleAnon(p.pid())}, nil
}

// cacheLines counts the proxy's access-log lines for blob GETs by cache
// status (HIT, MISS, ...), and aborted responses.
func cacheLines(logPath string) (map[string]int, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "/blobs/") || !strings.Contains(line, "method=GET") {
			continue
		}
		if strings.Contains(line, "aborted=true") {
			out["aborted"]++
		}
		_, rest, ok := strings.Cut(line, "cache=")
		if !ok {
			out["none"]++
			continue
		}
		status, _, _ := strings.Cut(rest, " ")
		out[strings.Trim(status, `"`)]++
	}
	return out, sc.Err()
}

// waitCommitted waits until the blob d of size bytes is in place in the
// proxy's filesystem cache (storage/layout.go: /blobs/<alg>/<2>/<hex>/data,
// moved there by a rename once verified and synced). A fill hands its
// clients the last byte before that commit, and the proxy's shutdown does
// not wait for it, so stopping the proxy right after the fill's clients
// finished can lose the fill; the next process would then fetch the blob
// again during its first "warm" round.
func waitCommitted(ctx context.Context, p *proc, cacheDir, d string, size int64) error {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) < 2 {
		return fmt.Errorf("bad digest %q", d)
	}
	path := filepath.Join(cacheDir, "blobs", alg, hex[:2], hex, "data")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err := os.Stat(path); err == nil && st.Size() == size {
			return nil
		}
		if err := p.exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("blob %s not committed to %s after 30s; log: %s", d, path, tail(p.log, 2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
