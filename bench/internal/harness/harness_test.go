package harness

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestStartStop: a process that exits on SIGTERM stops without an error,
// and one that ignores it is killed after the grace and reported.
func TestStartStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, err := Start("sleeper", filepath.Join(dir, "sleeper.log"), nil, "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Exited(); err != nil {
		t.Fatalf("Exited while running: %v", err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// exec keeps the ignored SIGTERM: sleep itself ignores it.
	q, err := Start("stubborn", filepath.Join(dir, "stubborn.log"), nil, "sh", "-c", `trap "" TERM; exec sleep 30`)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let sh set the trap
	if err := q.Stop(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "stubborn (pid") || !strings.Contains(err.Error(), "200ms; killed") {
		t.Fatalf("Stop of a process ignoring SIGTERM: %v", err)
	}
}

// TestExited: a process that ended is reported with its status, its
// extra environment, and the end of its log.
func TestExited(t *testing.T) {
	t.Parallel()
	p, err := Start("quitter", filepath.Join(t.TempDir(), "quitter.log"), []string{"WORD=goodbye"}, "sh", "-c", `echo "$WORD"; exit 3`)
	if err != nil {
		t.Fatal(err)
	}
	for p.Exited() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Exited(); !strings.Contains(err.Error(), "quitter exited early (exit status 3); log: goodbye") {
		t.Fatalf("Exited: %v", err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("Stop of an ended process: %v", err)
	}
}

// TestWaitHTTP: it waits for the wanted status, and stops waiting when
// the process exits.
func TestWaitHTTP(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if err := WaitHTTP(t.Context(), nil, srv.URL, http.StatusOK, nil); err != nil {
		t.Fatalf("WaitHTTP: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	p, err := Start("crasher", filepath.Join(t.TempDir(), "crasher.log"), nil, "sh", "-c", "exit 1")
	if err != nil {
		t.Fatal(err)
	}
	if err := WaitHTTP(t.Context(), p, url, http.StatusOK, nil); err == nil || !strings.Contains(err.Error(), "crasher exited early") {
		t.Fatalf("WaitHTTP on an exited process: %v", err)
	}
}

// TestKBFields reads kB lines, and a missing key is an error.
func TestKBFields(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(path, []byte("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t1024 kB\nThreads:\t4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := KBFields(path, "VmRSS", "VmHWM", "Threads")
	if err != nil || m["VmRSS"] != 1024 || m["VmHWM"] != 2048 || m["Threads"] != 4 {
		t.Fatalf("KBFields = %v, %v", m, err)
	}
	if _, err := KBFields(path, "RssAnon"); err == nil || !strings.Contains(err.Error(), "no RssAnon in") {
		t.Fatalf("missing key: %v", err)
	}
	if m, err := StatusKB(os.Getpid(), "VmRSS"); err != nil || m["VmRSS"] <= 0 {
		t.Fatalf("StatusKB of this process = %v, %v", m, err)
	}
}

// TestTail returns the last n bytes, or the whole of a shorter file.
func TestTail(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := Tail(path, 4); got != "6789" {
		t.Fatalf("Tail(4) = %q", got)
	}
	if got := Tail(path, 100); got != "0123456789" {
		t.Fatalf("Tail(100) = %q", got)
	}
}
