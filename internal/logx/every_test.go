package logx_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/logx"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/sirupsen/logrus"
)

// TestEvery: a cause repeated 1000 times (from many goroutines) within an
// interval makes one line; the first line after the interval says how
// many were dropped; each cause and each logger counts on its own.
func TestEvery(t *testing.T) {
	t.Parallel()
	var out testutil.SyncBuffer
	log := logrus.New()
	log.SetOutput(&out)
	log.SetFormatter(&logrus.TextFormatter{DisableColors: true, DisableTimestamp: true})
	clock := testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	logx.SetClock(log, clock.Now)
	entry := logrus.NewEntry(log).WithField("path", "/v2/x")
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 100 {
				logx.Every(entry, "disk", time.Minute).Warn("cache storage unreadable")
			}
		})
	}
	wg.Wait()
	logx.Every(entry, "fds", time.Minute).Error("out of file descriptors")
	if got := strings.Count(out.String(), "cache storage unreadable"); got != 1 {
		t.Fatalf("%d lines for 1000 repeats within the interval, want 1:\n%s", got, out.String())
	}
	if !strings.Contains(out.String(), "out of file descriptors") {
		t.Fatalf("another cause was dropped:\n%s", out.String())
	}
	clock.Advance(61 * time.Second)
	logx.Every(entry, "disk", time.Minute).Warn("cache storage unreadable")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, "cache storage unreadable") || !strings.Contains(last, "suppressed=999") || !strings.Contains(last, "path=/v2/x") {
		t.Fatalf("the line after the interval: %q; want the count of dropped lines (999) and the entry's fields", last)
	}
	logx.Every(entry, "disk", time.Minute).Warn("cache storage unreadable")
	if got := strings.Count(out.String(), "cache storage unreadable"); got != 2 {
		t.Fatalf("%d lines, want 2", got)
	}

	// Another logger (another test, another server) has its own record.
	var other bytes.Buffer
	log2 := logrus.New()
	log2.SetOutput(&other)
	logx.Every(logrus.NewEntry(log2), "disk", time.Minute).Warn("cache storage unreadable")
	if !strings.Contains(other.String(), "cache storage unreadable") {
		t.Fatalf("a second logger's first line was dropped: %q", other.String())
	}
}
