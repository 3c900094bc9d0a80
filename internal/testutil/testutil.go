// Package testutil holds small helpers shared by the project's tests: a
// goroutine-safe log buffer, a settable clock and a loopback TCP echo
// server.
//
// It is for tests only: import it from _test.go files, never from
// production code (internal/archtest enforces this).
package testutil

import (
	"bytes"
	"go.uber.org/goleak"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a log sink safe for concurrent writers (the code under test's
// goroutines) and a reader (the test). The zero value is ready to use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FakeClock is a settable clock whose Now method can stand in for
// time.Now. The zero value reads the zero time.Time.
type FakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewFakeClock returns a FakeClock that reads t until moved.
func NewFakeClock(t time.Time) *FakeClock { return &FakeClock{now: t} }

// Now returns the clock's current time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Set moves the clock to t.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// EchoServer runs a TCP echo server on 127.0.0.1 that half-closes each
// connection once its peer does, and returns its "127.0.0.1:port" address.
// The listener is closed when the test ends.
func EchoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

// LeakOptions are the goleak options of every package's TestMain: the
// distribution registry that internal/testreg runs in process starts an
// event broadcaster per registry that its App.Shutdown never stops (a
// goroutine of the test upstream, not of ours).
func LeakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run")}
}
