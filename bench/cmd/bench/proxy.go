package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// upstreamHost is the registry name clients use; the proxy maps it to the
// counting proxy's URL. Its namespace in mirror paths is upstreamNS.
const (
	upstreamHost = "upstream.test:5000"
	upstreamNS   = "upstream.test_5000"
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
    insecure: true
`

// proxyRun is one started proxy process.
type proxyRun struct {
	p    *proc
	base string
	log  string
	anon *anonSampler
}

// startProxy starts the proxy binary with cacheDir as its cache, upstream
// as the endpoint of upstreamHost, and waits for /healthz.
func startProxy(ctx context.Context, e *env, bin, name, cacheDir, upstream string) (*proxyRun, error) {
	dir := filepath.Join(e.root, "proxy", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.yml")
	body := fmt.Sprintf(proxyConfig, port, cacheDir, filepath.Join(e.root, "ca"), upstreamHost, upstream)
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
