package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/bench/internal/harness"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on
// Linux everywhere that matters).
const clockTicks = 100

// cpuTime returns the user+system CPU time pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	// After ')': state is f[0], so utime (field 14) is f[11], stime f[12].
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: malformed times", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// descendants returns pid and every process below it (nginx: the master
// and its workers, cache manager and cache loader), from
// /proc/<pid>/task/<tid>/children.
func descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], t.Name()))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// sumStatus adds up the kB fields keys of /proc/<pid>/status over pids,
// in bytes; processes that are gone are skipped.
func sumStatus(pids []int, keys ...string) map[string]int64 {
	out := map[string]int64{}
	for _, pid := range pids {
		m, err := harness.StatusKB(pid, keys...)
		if err != nil {
			continue
		}
		for k, v := range m {
			out[k] += v << 10
		}
	}
	return out
}

// sumCPU adds up the CPU time of pids.
func sumCPU(pids []int) time.Duration {
	var t time.Duration
	for _, pid := range pids {
		if c, err := cpuTime(pid); err == nil {
			t += c
		}
	}
	return t
}

// resetPeak sets VmHWM of each of pids back to its current RSS (writing
// 5 to /proc/<pid>/clear_refs, Linux ≥ 4.0), so that the next reading is
// the peak of the next run alone.
func resetPeak(pids []int) {
	for _, pid := range pids {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	}
}

// memSampler samples, every 20 ms, RssAnon (the processes' own memory:
// heap, stacks, buffers; not the binaries' file-backed pages that VmHWM
// also counts) and VmRSS summed over the processes pids returns, and keeps
// the peaks of the sums.
type memSampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	anon int64
	rss  int64
}

func sampleMem(pids func() []int) *memSampler {
	s := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			m := sumStatus(pids(), "RssAnon", "VmRSS")
			s.mu.Lock()
			s.anon = max(s.anon, m["RssAnon"])
			s.rss = max(s.rss, m["VmRSS"])
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// reset returns the peaks so far (RssAnon, VmRSS) and starts new ones.
func (s *memSampler) reset() (anon, rss int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	anon, rss = s.anon, s.rss
	s.anon, s.rss = 0, 0
	return anon, rss
}

func (s *memSampler) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// loadAvg returns the first three fields of /proc/loadavg, read at the
// start of the run (run.go) and at its end (machineInfo).
func loadAvg() string { return harness.LoadAvg() }
