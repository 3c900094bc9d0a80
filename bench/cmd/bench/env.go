package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// env owns everything the benchmark leaves on the machine: one temporary
// directory and the child processes, stopped by PID on cleanup.
type env struct {
	root string
	keep bool

	mu    sync.Mutex
	procs map[int]*proc
}

// proc is a child process started by the benchmark.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, valid after done
	log  string
}

func newEnv(keep bool) (*env, error) {
	root, err := os.MkdirTemp("", "crp-bench-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	return &env{root: root, keep: keep, procs: map[int]*proc{}}, nil
}

// start runs name with args, output to logPath, in its own process group
// (so a terminal's ^C reaches only the benchmark, which stops it) and
// killed if the benchmark dies.
func (e *env) start(name, logPath string, bin string, args ...string) (*proc, error) {
	return e.startEnv(name, logPath, nil, bin, args...)
}

// startEnv is start with extra environment variables ("K=V").
func (e *env) startEnv(name, logPath string, extraEnv []string, bin string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	if len(extraEnv) > 0 {
		cmd.Env = append(os.Environ(), extraEnv...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	e.mu.Lock()
	e.procs[cmd.Process.Pid] = p
	e.mu.Unlock()
	return p, nil
}

// pid returns the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports an error if the process has already ended.
func (p *proc) exited() error {
	select {
	case <-p.done:
		if p.err == nil {
			// Exit status 0: nothing to wrap.
			return fmt.Errorf("%s exited early (<nil>); log: %s", p.name, tail(p.log, 2000))
		}
		return fmt.Errorf("%s exited early (%w); log: %s", p.name, p.err, tail(p.log, 2000))
	default:
		return nil
	}
}

// stop sends SIGTERM to the process (by PID), waits up to 10 s, then
// SIGKILLs it. It returns an error if it had to kill it.
func (e *env) stop(p *proc) error {
	e.mu.Lock()
	delete(e.procs, p.pid())
	e.mu.Unlock()
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for 10s; killed", p.name, p.pid())
}

// cleanup stops every process still running and removes the temp dir.
func (e *env) cleanup() {
	e.mu.Lock()
	ps := make([]*proc, 0, len(e.procs))
	for _, p := range e.procs {
		ps = append(ps, p)
	}
	e.mu.Unlock()
	for _, p := range ps {
		if err := e.stop(p); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	}
	if e.keep {
		fmt.Fprintln(os.Stderr, "bench: kept", e.root)
		return
	}
	if err := os.RemoveAll(e.root); err != nil {
		fmt.Fprintln(os.Stderr, "bench: removing temp dir:", err)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP polls url until it answers want, p exits, or 30 s pass.
func waitHTTP(ctx context.Context, p *proc, url string, want int) error {
	return waitHTTPS(ctx, p, url, want, nil)
}

// waitHTTPS is waitHTTP trusting pki's CA for https URLs (pki may be nil).
func waitHTTPS(ctx context.Context, p *proc, url string, want int, pki *testPKI) error {
	deadline := time.Now().Add(30 * time.Second)
	tr := &http.Transport{Proxy: nil}
	if pki != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: pki.roots, MinVersion: tls.VersionTLS12}
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	var last error
	for time.Now().Before(deadline) {
		if err := p.exited(); err != nil {
			return err
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
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	// last is set: the loop ran at least once (the deadline is 30 s
	// ahead on the monotonic clock) and every pass that did not return
	// set it to an error.
	return fmt.Errorf("%s not ready at %s after 30s: %w; log: %s", p.name, url, last, tail(p.log, 2000))
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "(" + err.Error() + ")"
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	k, _ := f.ReadAt(b, off)
	return string(b[:k])
}
