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

	"github.com/gmarcy/container-registry-proxy/bench/internal/harness"
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

// startProxy starts the proxy binary named name with cacheDir as its
// cache, upstream as the endpoint of upstreamHost (plain HTTP) and the
// extra environment env, and waits for /healthz.
func startProxy(ctx context.Context, e *env, bin, name, cacheDir, upstream string, env []string) (*proc, string, error) {
	return startProxyFor(ctx, e, bin, name, cacheDir, upstreamHost, upstream, "    insecure: true\n", env)
}

// startTLSProxy starts the proxy with upstream (https) as the endpoint of
// upstreamTLSHost, verified with the CA in caFile.
func startTLSProxy(ctx context.Context, e *env, bin, name, cacheDir, upstream, caFile string) (*proc, string, error) {
	return startProxyFor(ctx, e, bin, name, cacheDir, upstreamTLSHost, upstream, fmt.Sprintf("    caFile: %q\n", caFile), nil)
}

// startProxyFor starts the proxy with one registry, host at endpoint with
// the extra YAML lines extra, and waits for /healthz.
func startProxyFor(ctx context.Context, e *env, bin, name, cacheDir, host, upstream, extra string, env []string) (*proc, string, error) {
	return startProxyCfg(ctx, e, bin, name, "/healthz", env, func(port int) string {
		return harness.ProxyConfig(port, cacheDir, filepath.Join(e.root, "ca"), host, upstream, extra)
	})
}

// startProxyCfg starts the proxy binary named name with the configuration
// cfg(port), port being a free loopback port it must listen on, and waits
// until GET ready (a path) answers 200.
func startProxyCfg(ctx context.Context, e *env, bin, name, ready string, env []string, cfg func(port int) string) (*proc, string, error) {
	dir := filepath.Join(e.root, "proxy", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, "", err
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg(port)), 0o600); err != nil {
		return nil, "", err
	}
	log := filepath.Join(dir, "proxy.log")
	p, err := e.startEnv("container-registry-proxy", log, env, bin, "--config", cfgPath)
	if err != nil {
		return nil, "", err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if err := waitHTTP(ctx, p, base+ready, 200); err != nil {
		_ = e.stop(p)
		return nil, "", err
	}
	return p, base, nil
}

// cacheLines counts the proxy's access-log lines for blob GETs by cache
// status (HIT, MISS, ...), and aborted and redirected (307 to the
// bucket) responses.
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
		if strings.Contains(line, "redirect=true") {
			out["redirected"]++
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

// ourBlobPath is where the proxy's filesystem cache keeps blob d
// (storage/layout.go: /blobs/<alg>/<2>/<hex>/data, moved there by a
// rename once verified and synced).
func ourBlobPath(cacheDir, d string) string {
	alg, hex, _ := strings.Cut(d, ":")
	return filepath.Join(cacheDir, "blobs", alg, hex[:2], hex, "data")
}

// waitFile waits until the file at path has size bytes. A fill hands its
// clients the last byte before the commit, and neither the proxy's
// shutdown nor distribution's waits for it, so stopping a process right
// after the fill's clients finished could lose the fill; the next process
// would then fetch the blob again during its first "warm" round.
func waitFile(ctx context.Context, p *proc, path string, size int64) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err := os.Stat(path); err == nil && st.Size() == size {
			return nil
		}
		if err := p.Exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %d-byte %s after 30s; log: %s", p.Name, size, path, harness.Tail(p.Log, 2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
