package testreg

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Fault is a misbehaviour the registry can be switched into at runtime with
// SetFault. Positive values are HTTP statuses (see FaultStatus).
type Fault int

const (
	// FaultNone serves normally.
	FaultNone Fault = 0
	// FaultWrongBytes serves blob GETs with the right length and headers
	// but the last byte flipped, so only a full digest check notices.
	FaultWrongBytes Fault = -1
	// FaultDropMidBlob sends blob GET headers with the full Content-Length
	// and half the body, then closes the connection (HTTP/1.1: hijack and
	// close; HTTP/2: stream reset).
	FaultDropMidBlob Fault = -2
	// FaultBlobDelay sends blob GET headers, then parks the body until
	// ReleaseBlobs, so concurrent clients overlap one fill deterministically.
	FaultBlobDelay Fault = -3
	// FaultNoLength sends blob GET bodies without Content-Length
	// (chunked), as some registries and CDNs do.
	FaultNoLength Fault = -4
	// FaultStallMidBlob sends blob GET headers and the first half of the
	// body, then parks the rest until ReleaseBlobs (or the client goes
	// away, which it then does not get).
	FaultStallMidBlob Fault = -5
)

// FaultStatus makes every /v2/ request except /v2/ itself answer code with
// an OCI error body (429 also carries Retry-After: 7). Auth is not checked.
func FaultStatus(code int) Fault {
	if code < 100 || code > 599 {
		panic(fmt.Sprintf("testreg: FaultStatus(%d): not an HTTP status", code))
	}
	return Fault(code)
}

// String names the fault for test output.
func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "none"
	case FaultWrongBytes:
		return "wrong-bytes"
	case FaultDropMidBlob:
		return "drop-mid-blob"
	case FaultBlobDelay:
		return "blob-delay"
	case FaultNoLength:
		return "no-length"
	case FaultStallMidBlob:
		return "stall-mid-blob"
	default:
		return fmt.Sprintf("status-%d", int(f))
	}
}

// faultState is the current fault and the FaultBlobDelay gate.
type faultState struct {
	mu      sync.Mutex
	fault   Fault
	gate    chan struct{} // closed: parked blob bodies may go
	parked  int
	changed chan struct{} // closed and replaced whenever parked changes

	rate      atomic.Int64 // blob body bytes per second; 0: unthrottled
	blobBytes atomic.Int64 // blob body bytes sent by the front

	reval    revalFaults             // Throttle and Stall (hostile_reval.go)
	tagPages *TagPages               // made-up tags/list pages (hostile_tags.go)
	tagGate  chan struct{}           // closed: held tags/list requests may go
	tagsHeld atomic.Int64            // tags/list requests waiting at tagGate
	claims   map[digest.Digest]int64 // ClaimBlob: digest → claimed size
}

func (s *faultState) init() {
	s.gate = make(chan struct{})
	close(s.gate)
	s.changed = make(chan struct{})
}

func (s *faultState) get() Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fault
}

// SetFault switches the registry's behaviour; safe for concurrent use. Any
// blob bodies parked by an earlier FaultBlobDelay are released first, and
// FaultBlobDelay installs a fresh gate for ReleaseBlobs to open.
func (r *Registry) SetFault(f Fault) {
	s := &r.faults
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
	s.releaseLocked()
	if f == FaultBlobDelay || f == FaultStallMidBlob {
		s.gate = make(chan struct{})
	}
}

// SetBlobRate throttles blob bodies to about bytesPerSecond each (0:
// full speed), so that a fill lasts long enough to be interrupted.
func (r *Registry) SetBlobRate(bytesPerSecond int64) { r.faults.rate.Store(bytesPerSecond) }

// BlobBytes returns how many blob body bytes the registry sent in full
// (GET, all clients, ranges included; not the byte-flipping or dropping
// faults' bodies).
func (r *Registry) BlobBytes() int64 { return r.faults.blobBytes.Load() }

// ReleaseBlobs lets every parked blob body go. Blob GETs arriving later pass
// without waiting until SetFault(FaultBlobDelay) is called again.
func (r *Registry) ReleaseBlobs() {
	r.faults.mu.Lock()
	defer r.faults.mu.Unlock()
	r.faults.releaseLocked()
}

func (s *faultState) releaseLocked() {
	select {
	case <-s.gate:
	default:
		close(s.gate)
	}
}

// BlobsParked returns how many blob GETs are waiting for ReleaseBlobs.
func (r *Registry) BlobsParked() int {
	r.faults.mu.Lock()
	defer r.faults.mu.Unlock()
	return r.faults.parked
}

// WaitBlobsParked blocks until at least n blob GETs (whose headers have been
// sent) are waiting for ReleaseBlobs; it fails the test after 30 seconds.
func (r *Registry) WaitBlobsParked(t testing.TB, n int) {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		r.faults.mu.Lock()
		parked, changed := r.faults.parked, r.faults.changed
		r.faults.mu.Unlock()
		if parked >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("testreg: %d blob GETs parked, want %d", parked, n)
		}
	}
}

// park waits for the gate, the client going away, or Close.
func (r *Registry) park(req *http.Request) {
	s := &r.faults
	s.mu.Lock()
	gate := s.gate
	s.parked++
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	select {
	case <-gate:
	case <-req.Context().Done():
	case <-r.closed:
	}
	s.mu.Lock()
	s.parked--
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// applyBodyFault copies a successful blob body to w (headers already
// written) the way the current fault says.
func (r *Registry) applyBodyFault(w http.ResponseWriter, req *http.Request, resp *http.Response) {
	rc := http.NewResponseController(w)
	total := resp.ContentLength
	switch r.faults.get() {
	case FaultWrongBytes:
		if total <= 0 {
			break
		}
		// At the rate SetBlobRate asked for, like a genuine body.
		r.copyBlob(w, req, io.LimitReader(resp.Body, total-1))
		if req.Context().Err() != nil {
			return
		}
		last := make([]byte, 1)
		if _, err := io.ReadFull(resp.Body, last); err != nil {
			return
		}
		last[0] ^= 0xff
		_, _ = w.Write(last)
		return
	case FaultDropMidBlob:
		if total > 0 {
			_, _ = io.CopyN(w, resp.Body, total/2)
		}
		_ = rc.Flush()
		if conn, _, err := rc.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
		panic(http.ErrAbortHandler) // HTTP/2: reset the stream
	case FaultBlobDelay:
		_ = rc.Flush()
		r.park(req)
	case FaultStallMidBlob:
		r.stallMidBlob(w, req, resp)
		return
	}
	r.copyBlob(w, req, resp.Body)
}

// copyBlob sends body, counting the bytes and at the rate SetBlobRate
// asked for (in pieces of a tenth of a second).
func (r *Registry) copyBlob(w http.ResponseWriter, req *http.Request, body io.Reader) {
	cw := &countingWriter{w: w, n: &r.faults.blobBytes}
	rate := r.faults.rate.Load()
	if rate <= 0 {
		_, _ = io.Copy(cw, body)
		return
	}
	rc := http.NewResponseController(w)
	piece := max(rate/10, 1)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := io.CopyN(cw, body, piece)
		_ = rc.Flush()
		if err != nil || n < piece {
			return
		}
		select {
		case <-tick.C:
		case <-req.Context().Done():
			return
		case <-r.closed:
			return
		}
	}
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
