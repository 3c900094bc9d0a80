package testutil_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testutil"
)

func TestSyncBufferConcurrentWrites(t *testing.T) {
	t.Parallel()
	var b testutil.SyncBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprintf(&b, "w%d\n", i)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	s := b.String()
	if n := strings.Count(s, "\n"); n != 800 {
		t.Fatalf("%d lines, want 800", n)
	}
	for i := range 8 {
		if n := strings.Count(s, fmt.Sprintf("w%d\n", i)); n != 100 {
			t.Errorf("writer %d: %d lines, want 100", i, n)
		}
	}
}

func TestFakeClock(t *testing.T) {
	t.Parallel()
	var zero testutil.FakeClock
	if !zero.Now().IsZero() {
		t.Errorf("zero FakeClock reads %v", zero.Now())
	}
	zero.Advance(time.Second)
	if got := zero.Now(); !got.Equal(time.Time{}.Add(time.Second)) {
		t.Errorf("zero FakeClock after Advance reads %v", got)
	}

	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	c := testutil.NewFakeClock(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now() = %v, want %v", c.Now(), start)
	}
	if !c.Now().Equal(c.Now()) {
		t.Fatal("clock moved by itself")
	}
	c.Advance(90 * time.Minute)
	if want := start.Add(90 * time.Minute); !c.Now().Equal(want) {
		t.Errorf("after Advance, Now() = %v, want %v", c.Now(), want)
	}
	later := start.Add(72 * time.Hour)
	c.Set(later)
	if !c.Now().Equal(later) {
		t.Errorf("after Set, Now() = %v, want %v", c.Now(), later)
	}

	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c.Advance(time.Second)
				_ = c.Now()
			}
		}()
	}
	wg.Wait()
	if want := later.Add(400 * time.Second); !c.Now().Equal(want) {
		t.Errorf("after concurrent Advance, Now() = %v, want %v", c.Now(), want)
	}
}

func TestEchoServer(t *testing.T) {
	t.Parallel()
	var addr string
	t.Run("echoes and half-closes", func(t *testing.T) {
		addr = testutil.EchoServer(t)
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Fatalf("address %q is not on 127.0.0.1", addr)
		}
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		msg := bytes.Repeat([]byte("echo!"), 20000)
		go func() {
			_, _ = conn.Write(msg)
			_ = conn.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(conn) // ends only if the server half-closes
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echoed %d bytes (err %v), want %d identical", len(got), err, len(msg))
		}
	})
	if conn, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		conn.Close()
		t.Errorf("echo server at %s still accepts after its test ended", addr)
	}
}
