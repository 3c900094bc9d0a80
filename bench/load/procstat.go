package load

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gmarcy/container-registry-proxy/bench/internal/harness"
)

// String prints a sample for the progress log.
func (s Sample) String() string {
	return fmt.Sprintf("RSS %.1f MiB, goroutines %d, fds %d", float64(s.RSS)/(1<<20), s.Goroutines, s.FDs)
}

// sample reads the proxy: RSS and its peak from /proc/<pid>/status, the
// descriptors in /proc/<pid>/fd, the goroutines from /metrics.
func (r *runner) sample(ctx context.Context) (Sample, error) {
	var s Sample
	g, err := r.goroutines(ctx)
	if err != nil {
		return s, err
	}
	s.Goroutines = g
	if r.pid == 0 {
		return s, nil
	}
	kb, err := harness.StatusKB(r.pid, "VmRSS", "VmHWM")
	if err != nil {
		return s, err
	}
	s.RSS, s.HWM = kb["VmRSS"]<<10, kb["VmHWM"]<<10
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", r.pid))
	if err != nil {
		return s, err
	}
	s.FDs = int64(len(ents))
	return s, nil
}

// metricsClient scrapes /metrics over one keep-alive connection, the same
// before, during and after the run.
var metricsClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}

// goroutines returns go_goroutines from the proxy's /metrics.
func (r *runner) goroutines(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scraping /metrics: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no go_goroutines in %s/metrics", r.base)
}

// sampler reads the proxy every 200 ms during the run and keeps the
// highest value of each field.
type sampler struct {
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	peak  Sample
}

func (r *runner) startSampler(ctx context.Context) *sampler {
	s := &sampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := r.sample(ctx); err == nil {
				s.mu.Lock()
				s.peak = Sample{RSS: max(s.peak.RSS, v.RSS), HWM: max(s.peak.HWM, v.HWM),
					Goroutines: max(s.peak.Goroutines, v.Goroutines), FDs: max(s.peak.FDs, v.FDs)}
				s.mu.Unlock()
			}
			select {
			case <-s.stopc:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the peaks.
func (s *sampler) stop() Sample {
	close(s.stopc)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// Limit is an open-files limit.
type Limit struct{ Soft, Hard uint64 }

// raiseFDLimit raises this process's soft open-files limit to the hard
// one (the Go runtime does so at start too, since Go 1.19) and returns
// the limit in force.
func raiseFDLimit() Limit {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return Limit{}
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return Limit{Soft: rl.Cur, Hard: rl.Max}
}

// procFDLimit reads "Max open files" of /proc/<pid>/limits.
func procFDLimit(pid int) Limit {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return Limit{}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) >= 2 {
				soft, _ := strconv.ParseUint(f[0], 10, 64)
				hard, _ := strconv.ParseUint(f[1], 10, 64)
				return Limit{Soft: soft, Hard: hard}
			}
		}
	}
	return Limit{}
}

// Machine describes where the run was made.
type Machine struct {
	NProc        int
	CPU          string
	MemTotal     string
	Kernel       string
	Go           string
	Proxy        string // the binary's --version
	Load0, Load1 string // /proc/loadavg at the start and the end
	FDLimit      Limit  // the generator's
	ProxyFDLimit Limit
}

func machineInfo(bin string) Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: goVersion, Load0: harness.LoadAvg(), Proxy: "a running proxy (--addr)"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if kb, err := harness.KBFields("/proc/meminfo", "MemTotal"); err == nil {
		m.MemTotal = fmt.Sprintf("%.0f GiB", float64(kb["MemTotal"])/(1<<20))
	}
	if bin != "" {
		out, err := exec.Command(bin, "--version").CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if err != nil {
			line = "unknown (" + err.Error() + ")"
		}
		m.Proxy = line
	}
	return m
}
