package harness

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// StatusKB reads the kB fields keys (e.g. "VmHWM", "RssAnon") of
// /proc/<pid>/status, in kB.
func StatusKB(pid int, keys ...string) (map[string]int64, error) {
	return KBFields(fmt.Sprintf("/proc/%d/status", pid), keys...)
}

// KBFields reads the "Key: N kB" lines keys of a /proc file (status,
// meminfo), in kB. A key that is missing is an error.
func KBFields(path string, keys ...string) (map[string]int64, error) {
	f, err := os.Open(path)
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
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s %s %q: %w", path, k, v, err)
			}
			out[k] = n
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, want := range keys {
		if _, ok := out[want]; !ok {
			return nil, fmt.Errorf("no %s in %s", want, path)
		}
	}
	return out, nil
}

// LoadAvg returns the first three fields of /proc/loadavg, for the
// report's record of how busy the machine was ("unknown" if unreadable).
func LoadAvg() string {
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
