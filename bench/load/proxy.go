package load

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gmarcy/container-registry-proxy/bench/internal/harness"
)

// proxyProc is the proxy process the generator started, and its base
// URL.
type proxyProc struct {
	*harness.Proc
	base string
}

// startProxy starts bin in dir with host mapped to upstream and waits
// until /healthz answers. Its configuration keeps the proxy's defaults
// (manifest cache off, as shipped) but for one plain-HTTP upstream.
func startProxy(ctx context.Context, bin, dir, host, upstream string) (*proxyProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.yml")
	text := harness.ProxyConfig(port, filepath.Join(dir, "cache"), filepath.Join(dir, "ca"), host, upstream, "    insecure: true\n")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, err
	}
	hp, err := harness.Start("the proxy", filepath.Join(dir, "proxy.log"), nil, bin, "--config", cfg)
	if err != nil {
		return nil, err
	}
	p := &proxyProc{Proc: hp, base: "http://127.0.0.1:" + strconv.Itoa(port)}
	if err := harness.WaitHTTP(ctx, p.Proc, p.base+"/healthz", http.StatusOK, nil); err != nil {
		_ = p.stop()
		return nil, err
	}
	return p, nil
}

// stop sends SIGTERM (by PID), waits up to 15 s, then SIGKILLs; it
// reports having had to kill.
func (p *proxyProc) stop() error { return p.Stop(15 * time.Second) }
