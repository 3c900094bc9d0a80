package testreg

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// revalFaults are the faults of a slow or throttling upstream: Throttle
// (429 or 503 with a Retry-After of the test's choice) and Stall (a
// request accepted and never answered). Its zero value is inactive.
type revalFaults struct {
	mu         sync.Mutex
	status     int    // Throttle's status; 0: off
	retryAfter string // Throttle's Retry-After; "": none
	stall      chan struct{}
	stalled    int           // requests waiting in Stall now
	changed    chan struct{} // closed and replaced whenever stalled changes
}

// Throttle makes every /v2/ request except /v2/ itself answer status (429
// or 503) with an OCI error body and, unless retryAfter is "", a
// Retry-After header of that value, as a rate-limiting registry (or one
// in maintenance) does. Auth is not checked. Throttle(0, "") ends it. It
// goes before SetFault's faults, after Stall.
func (r *Registry) Throttle(status int, retryAfter string) {
	if status != 0 && (status < 400 || status > 599) {
		panic(fmt.Sprintf("testreg: Throttle(%d): not an error status", status))
	}
	s := &r.faults.reval
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.retryAfter = status, retryAfter
}

// Stall makes every /v2/ request except /v2/ itself wait, accepted but
// unanswered (no status line, no header), as a hanging upstream does,
// until Unstall lets it go on as usual, its client gives up, or the
// registry closes. Requests are counted when they arrive (Count,
// Requests), with status 0 while they wait.
func (r *Registry) Stall() {
	s := &r.faults.reval
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stall == nil {
		s.stall = make(chan struct{})
	}
}

// Unstall lets every stalled request go on, and later ones pass.
func (r *Registry) Unstall() {
	s := &r.faults.reval
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stall != nil {
		close(s.stall)
		s.stall = nil
	}
}

// Stalled returns how many requests are waiting in Stall now.
func (r *Registry) Stalled() int {
	s := &r.faults.reval
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stalled
}

// WaitStalled blocks until at least n requests wait in Stall; it fails
// the test after 30 seconds.
func (r *Registry) WaitStalled(t testing.TB, n int) {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		s := &r.faults.reval
		s.mu.Lock()
		stalled, changed := s.stalled, s.changedLocked()
		s.mu.Unlock()
		if stalled >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("testreg: %d requests stalled, want %d", stalled, n)
		}
	}
}

func (s *revalFaults) changedLocked() chan struct{} {
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

func (s *revalFaults) addStalled(d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stalled += d
	close(s.changedLocked())
	s.changed = make(chan struct{})
}

// serveRevalFault applies Stall and Throttle to a /v2/ request other than
// /v2/ itself; it reports whether it answered (or dropped) the request.
func (r *Registry) serveRevalFault(w http.ResponseWriter, req *http.Request) bool {
	s := &r.faults.reval
	s.mu.Lock()
	stall := s.stall
	s.mu.Unlock()
	if stall != nil {
		s.addStalled(1)
		select {
		case <-stall:
		case <-req.Context().Done():
		case <-r.closed:
		}
		s.addStalled(-1)
		if req.Context().Err() != nil {
			return true
		}
		select {
		case <-r.closed:
			panic(http.ErrAbortHandler) // drop the connection unanswered
		default:
		}
	}
	s.mu.Lock()
	status, retryAfter := s.status, s.retryAfter
	s.mu.Unlock()
	if status == 0 {
		return false
	}
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeOCIError(w, status, errorCode(status), fmt.Sprintf("testreg throttle: status %d", status))
	return true
}
