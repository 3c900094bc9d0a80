package load

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// proxyConfig is the proxy's configuration: defaults (manifest cache off,
// as shipped), one plain-HTTP upstream.
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

// proxyProc is the proxy process the generator started.
type proxyProc struct {
	cmd  *exec.Cmd
	base string
	log  string
	done chan struct{}
	err  error
}

// startProxy starts bin in dir with host mapped to upstream and waits
// until /healthz answers.
func startProxy(ctx context.Context, bin, dir, host, upstream string) (*proxyProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.yml")
	text := fmt.Sprintf(proxyConfig, port, filepath.Join(dir, "cache"), filepath.Join(dir, "ca"), host, upstream)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "proxy.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group (a terminal's ^C reaches the generator, which
	// stops it), killed if the generator dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &proxyProc{cmd: cmd, base: "http://127.0.0.1:" + strconv.Itoa(port), log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := waitStatus(ctx, p, p.base+"/healthz", http.StatusOK); err != nil {
		_ = p.stop()
		return nil, err
	}
	return p, nil
}

func (p *proxyProc) pid() int { return p.cmd.Process.Pid }

// exited reports an error if the process has ended.
func (p *proxyProc) exited() error {
	select {
	case <-p.done:
		if p.err == nil {
			return fmt.Errorf("the proxy exited (status 0); log: %s", tail(p.log, 2000))
		}
		return fmt.Errorf("the proxy exited (%w); log: %s", p.err, tail(p.log, 2000))
	default:
		return nil
	}
}

// stop sends SIGTERM (by PID), waits up to 15 s, then SIGKILLs; it
// reports having had to kill.
func (p *proxyProc) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(15 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("the proxy (pid %d) ignored SIGTERM for 15s; killed", p.pid())
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitStatus polls url until it answers want, p (if any) exits, or 30 s
// pass.
func waitStatus(ctx context.Context, p *proxyProc, url string, want int) error {
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if p != nil {
			if err := p.exited(); err != nil {
				return err
			}
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s did not answer %d within 30s: %w", url, want, last)
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}
