//go:build e2e

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

// upstreams are the registries one test's proxy serves: an anonymous one
// mapped as docker.io and one behind token auth under a made-up host name
// (registry.test:<port>) that only the proxy maps to its real address.
type upstreams struct {
	Hub      *testreg.Registry // anonymous, TLS, configured as docker.io
	Priv     *testreg.Registry // token auth, TLS, configured as PrivHost
	PrivHost string            // "registry.test:<port>"
	PrivNS   string            // "registry.test_<port>": its path alias
}

// startUpstreams starts both upstream registries for the life of the test.
func startUpstreams(t *testing.T) *upstreams {
	t.Helper()
	u := &upstreams{
		Hub:  testreg.Start(t, testreg.Options{TLS: true}),
		Priv: testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken}),
	}
	_, port, err := net.SplitHostPort(u.Priv.Host)
	if err != nil {
		t.Fatal(err)
	}
	u.PrivHost = "registry.test:" + port
	u.PrivNS = "registry.test_" + port
	return u
}

// resetCounts forgets what both upstreams have seen.
func (u *upstreams) resetCounts() {
	u.Hub.ResetCounts()
	u.Priv.ResetCounts()
}

// proxy is one running proxy process.
type proxy struct {
	Addr    string // "127.0.0.1:<port>"
	URL     string // "http://127.0.0.1:<port>"
	LogPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, valid after done

	startFailed bool // an exit is expected: the start was already reported
	killed      bool // the test killed it on purpose (see kill)
}

// startProxy writes a configuration for u, starts the proxy binary and
// waits until GET /v2/ answers. The proxy is stopped by PID in t.Cleanup,
// which also prints its log when the test failed.
func startProxy(t *testing.T, u *upstreams) *proxy {
	t.Helper()
	return startProxyWith(t, u, "")
}

// startProxyWith is startProxy with extra top-level YAML appended to the
// configuration (e.g. "allowPush: true\n" or a connect: section).
func startProxyWith(t *testing.T, u *upstreams, extra string) *proxy {
	t.Helper()
	dir := t.TempDir()
	return startProxyIn(t, dir, "main", func(addr string) string {
		return fmt.Sprintf(`listen: %q
cacheDir: %q
caDir: %q
logFormat: text
dockerHub: true
registries:
  - host: docker.io
    endpoint: %q
    caFile: %q
  - host: %q
    endpoint: %q
    caFile: %q
`, addr, filepath.Join(dir, "cache"), filepath.Join(dir, "ca"),
			u.Hub.URL, u.Hub.CAFile, u.PrivHost, u.Priv.URL, u.Priv.CAFile) + storageSection(t) + extra
	})
}

// storageSection is "" (the filesystem driver in cacheDir) unless
// E2E_STORAGE=s3: then a storage section on a bucket of its own on the
// shared versitygw, so that the client tests run the same pulls through a
// proxy on S3 (scripts/test.sh runs them both ways).
func storageSection(t *testing.T) string {
	if os.Getenv("E2E_STORAGE") != "s3" {
		return ""
	}
	return s3Section(sharedS3.Get(t))
}

// s3Section is a storage section for the bucket of srv, under /cache.
func s3Section(srv *testutil.S3Server) string {
	p := srv.DriverParams("/cache")
	return fmt.Sprintf(`storage:
  s3:
    region: %s
    regionendpoint: %s
    bucket: %s
    accesskey: %s
    secretkey: %s
    forcepathstyle: true
    secure: false
    rootdirectory: /cache
`, p["region"], p["regionendpoint"], p["bucket"], p["accesskey"], p["secretkey"])
}

// startProxyIn starts the proxy in dir with the configuration cfg(addr)
// on a free port (another one when the port was taken meanwhile).
func startProxyIn(t *testing.T, dir, name string, cfg func(addr string) string) *proxy {
	t.Helper()
	requireProxy(t)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr := freeAddr(t)
		p, err := launchProxy(t, dir, fmt.Sprintf("%s-%d", name, attempt), addr, cfg(addr))
		if err == nil {
			return p
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	t.Fatalf("starting proxy: %v", lastErr)
	return nil
}

var errAddrInUse = errors.New("address already in use")

// launchProxy writes cfg (which must listen on addr) into dir, starts the
// proxy binary with it (log in dir/proxy-<name>.log) and waits until GET
// /v2/ answers. The proxy is stopped by PID in t.Cleanup.
func launchProxy(t *testing.T, dir, name, addr, cfg string) (*proxy, error) {
	cfgPath := filepath.Join(dir, "config-"+name+".yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "proxy-"+name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(proxyBin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Keep the environment from adding or changing settings behind the file.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proxy{Addr: addr, URL: "http://" + addr, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("proxy log (%s):\n%s", logPath, tail(p.Log(), 300))
		}
	})
	if err := p.waitReady(30 * time.Second); err != nil {
		p.startFailed = true
		log := p.Log()
		if strings.Contains(log, "address already in use") {
			return nil, fmt.Errorf("%w: %s", errAddrInUse, addr)
		}
		return nil, fmt.Errorf("%w\nconfig:\n%s\nlog:\n%s", err, cfg, tail(log, 100))
	}
	t.Logf("proxy pid %d listening on %s", cmd.Process.Pid, addr)
	return p, nil
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReady polls GET /v2/ until it answers 200, the process exits or the
// timeout passes.
func (p *proxy) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		resp, err := client.Get(p.URL + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2/: status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-p.done:
			return errors.Join(errors.New("proxy exited before it was ready"), p.err)
		case <-deadline.C:
			return errors.Join(fmt.Errorf("proxy not ready after %s", timeout), last)
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM to the proxy's PID and SIGKILL if it has not exited
// after a bound. A proxy that died earlier, or exits non-zero on SIGTERM,
// fails the test.
func (p *proxy) stop(t *testing.T) {
	select {
	case <-p.done:
		if !p.startFailed && !p.killed {
			t.Errorf("proxy pid %d exited during the test: %v", p.cmd.Process.Pid, p.err)
		}
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("proxy pid %d: exit after SIGTERM: %v", p.cmd.Process.Pid, p.err)
		}
		return
	case <-time.After(15 * time.Second):
	}
	t.Errorf("proxy pid %d ignored SIGTERM for 15s; killing it", p.cmd.Process.Pid)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// kill sends SIGKILL to the proxy's PID and waits until it has exited.
func (p *proxy) kill(t *testing.T) {
	t.Helper()
	p.killed = true
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Errorf("SIGKILL pid %d: %v", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("proxy pid %d still running 15s after SIGKILL", p.cmd.Process.Pid)
	}
}

// Log returns the proxy's log so far.
func (p *proxy) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Mark returns the current end of the log, for LogSince.
func (p *proxy) Mark() int { return len(p.Log()) }

// LogSince returns the log written after mark.
func (p *proxy) LogSince(mark int) string {
	l := p.Log()
	if mark > len(l) {
		return ""
	}
	return l[mark:]
}

// accessLines returns the access-log lines after mark whose method is
// method and whose path contains pathPart. A request's access line is
// written when its handler returns, which may be just after the client
// has read the last byte: it waits (bounded) for at least one line.
func (p *proxy) accessLines(mark int, method, pathPart string) []string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out []string
		sc := bufio.NewScanner(strings.NewReader(p.LogSince(mark)))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			if strings.Contains(l, "msg=request") && strings.Contains(l, "method="+method+" ") && strings.Contains(l, pathPart) {
				out = append(out, l)
			}
		}
		if len(out) > 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// requireBlobHits fails unless, after mark, the proxy answered a GET for
// every digest from its cache (an access line with cache=HIT): proof that
// the client really fetched the blob through the proxy.
func (p *proxy) requireBlobHits(t *testing.T, mark int, digests ...string) {
	t.Helper()
	for _, d := range digests {
		lines := p.accessLines(mark, http.MethodGet, "/blobs/"+d)
		hit := false
		for _, l := range lines {
			if strings.Contains(l, "cache=HIT") {
				hit = true
			}
		}
		if !hit {
			t.Errorf("proxy log has no GET /blobs/%s with cache=HIT after the mark; lines for it:\n%s", d, strings.Join(lines, "\n"))
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return s
	}
	return "… (" + strconv.Itoa(len(lines)-n) + " lines omitted)\n" + strings.Join(lines[len(lines)-n:], "\n")
}

// requireNoUpstreamGets fails if reg saw a manifest or blob GET since its
// counts were last reset (tag HEAD revalidation is allowed).
func requireNoUpstreamGets(t *testing.T, reg *testreg.Registry, what string) {
	t.Helper()
	if n := reg.Count(http.MethodGet, testreg.KindBlob); n != 0 {
		t.Errorf("%s: upstream saw %d blob GETs, want 0: %v", what, n, reg.Requests())
	}
	if n := reg.Count(http.MethodGet, testreg.KindManifest); n != 0 {
		t.Errorf("%s: upstream saw %d manifest GETs, want 0: %v", what, n, reg.Requests())
	}
}
