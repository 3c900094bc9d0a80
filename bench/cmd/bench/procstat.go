package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// statusKB reads the given kB fields (e.g. "VmHWM", "RssAnon") of
// /proc/<pid>/status, in bytes.
func statusKB(pid int, keys ...string) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make(map[string]int64, len(keys))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for _, want := range keys {
			if k != want {
				continue
			}
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/%d/status %s %q: %w", pid, k, v, err)
			}
			out[k] = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, want := range keys {
		if _, ok := out[want]; !ok {
			return nil, fmt.Errorf("no %s in /proc/%d/status", want, pid)
		}
	}
	return out, nil
}

// peakRSS reads VmHWM (peak resident set size) of pid in bytes.
func peakRSS(pid int) (int64, error) {
	m, err := statusKB(pid, "VmHWM")
	if err != nil {
		return 0, err
	}
	return m["VmHWM"], nil
}

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

// anonSampler samples RssAnon (the process's own memory, without the
// binary's file-backed pages that VmHWM also counts) every 20 ms and keeps
// the peak.
type anonSampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	peak int64
}

func sampleAnon(pid int) *anonSampler {
	s := &anonSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if m, err := statusKB(pid, "RssAnon"); err == nil {
				s.mu.Lock()
				s.peak = max(s.peak, m["RssAnon"])
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// reset returns the peak so far and starts a new one.
func (s *anonSampler) reset() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peak
	s.peak = 0
	return p
}

func (s *anonSampler) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
