// Package harness is what the benchmark (bench/cmd/bench) and the load
// generator (bench/load) share to run the programs they measure: child
// processes with a log file that are stopped by PID, readiness polling,
// free loopback ports, /proc readings, and the proxy's configuration.
// Standard library only.
package harness

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Proc is a child process started by Start.
type Proc struct {
	Name string // for messages: "docker-registry", "the proxy"
	Log  string // the file that receives its stdout and stderr

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, valid after done
}

// Start runs bin with args, its output to logPath and extraEnv ("K=V")
// added to the environment. It runs in its own process group, so that a
// terminal's ^C reaches only the caller, which stops it, and is killed if
// the caller dies (Pdeathsig).
func Start(name, logPath string, extraEnv []string, bin string, args ...string) (*Proc, error) {
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
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports an error, with the end of the log, if the process has
// already ended: a server that should still be serving.
func (p *Proc) Exited() error {
	select {
	case <-p.done:
		if p.err == nil {
			// Exit status 0: nothing to wrap.
			return fmt.Errorf("%s exited early (status 0); log: %s", p.Name, Tail(p.Log, 2000))
		}
		return fmt.Errorf("%s exited early (%w); log: %s", p.Name, p.err, Tail(p.Log, 2000))
	default:
		return nil
	}
}

// Stop sends SIGTERM to the process (by PID, not to its group), waits up
// to grace, then SIGKILLs it. It returns an error if it had to kill it:
// a server that ignores SIGTERM is a finding.
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %s; killed", p.Name, p.Pid(), grace)
}

// WaitHTTP polls url until it answers want, p exits, or 30 s pass. p may
// be nil (a server the caller did not start); tlsConf, nil for plain
// HTTP, is the client's TLS configuration for https URLs.
func WaitHTTP(ctx context.Context, p *Proc, url string, want int, tlsConf *tls.Config) error {
	tr := &http.Transport{Proxy: nil, TLSClientConfig: tlsConf}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if p != nil {
			if err := p.Exited(); err != nil {
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
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	// last is set: the loop ran at least once (the deadline is 30 s
	// ahead on the monotonic clock) and every pass that did not return
	// set it to an error.
	err := fmt.Errorf("%s did not answer %d within 30s: %w", url, want, last)
	if p != nil {
		return fmt.Errorf("%s not ready: %w; log: %s", p.Name, err, Tail(p.Log, 2000))
	}
	return err
}

// FreePort returns a loopback TCP port that was free a moment ago, for a
// server that takes its port from its configuration.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Tail returns the last n bytes of a file, for error messages; it reads
// only those, as a log may be large.
func Tail(path string, n int64) string {
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
