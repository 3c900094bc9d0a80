package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/bench/internal/harness"
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
type proc = harness.Proc

// stopGrace is how long a process has to exit on SIGTERM before it is
// killed.
const stopGrace = 10 * time.Second

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
	p, err := harness.Start(name, logPath, extraEnv, bin, args...)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.procs[p.Pid()] = p
	e.mu.Unlock()
	return p, nil
}

// stop sends SIGTERM to the process (by PID), waits up to stopGrace, then
// SIGKILLs it. It returns an error if it had to kill it.
func (e *env) stop(p *proc) error {
	e.mu.Lock()
	delete(e.procs, p.Pid())
	e.mu.Unlock()
	return p.Stop(stopGrace)
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

// waitHTTP polls url until it answers want, p exits, or 30 s pass.
func waitHTTP(ctx context.Context, p *proc, url string, want int) error {
	return waitHTTPS(ctx, p, url, want, nil)
}

// waitHTTPS is waitHTTP trusting pki's CA for https URLs (pki may be nil).
func waitHTTPS(ctx context.Context, p *proc, url string, want int, pki *testPKI) error {
	var tlsConf *tls.Config
	if pki != nil {
		tlsConf = &tls.Config{RootCAs: pki.roots, MinVersion: tls.VersionTLS12}
	}
	return harness.WaitHTTP(ctx, p, url, want, tlsConf)
}
