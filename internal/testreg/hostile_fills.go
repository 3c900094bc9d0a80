package testreg

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Misbehaviours aimed at a proxy's blob fills: an upstream that claims
// blobs it does not hold, and one that stalls in the middle of a body.

// ClaimBlob makes the registry claim to hold blob d of size bytes in every
// repository, as a lying or compromised upstream would for the digest of
// someone else's private layer: HEAD answers 200 with that length, and GET
// sends size bytes that are not d's (following SetBlobRate, and parked
// after the headers under FaultBlobDelay). Repeated calls add claims.
func (r *Registry) ClaimBlob(d digest.Digest, size int64) {
	r.faults.mu.Lock()
	defer r.faults.mu.Unlock()
	if r.faults.claims == nil {
		r.faults.claims = map[digest.Digest]int64{}
	}
	r.faults.claims[d] = size
}

// claimed returns the size the registry claims for the blob of path.
func (r *Registry) claimed(path string) (int64, digest.Digest, bool) {
	i := strings.LastIndex(path, "/blobs/")
	if i < 0 {
		return 0, "", false
	}
	d := digest.Digest(path[i+len("/blobs/"):])
	r.faults.mu.Lock()
	defer r.faults.mu.Unlock()
	size, ok := r.faults.claims[d]
	return size, d, ok
}

// serveClaimed answers a blob request for a claimed digest and reports
// whether it did.
func (r *Registry) serveClaimed(w http.ResponseWriter, req *http.Request) bool {
	size, d, ok := r.claimed(req.URL.Path)
	if !ok {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if req.Method != http.MethodGet {
		return true
	}
	if r.faults.get() == FaultBlobDelay {
		_ = http.NewResponseController(w).Flush()
		r.park(req)
	}
	r.copyBlob(w, req, io.LimitReader(repeatReader('x'), size))
	return true
}

// repeatReader is an endless stream of one byte.
type repeatReader byte

func (b repeatReader) Read(p []byte) (int, error) {
	copy(p, bytes.Repeat([]byte{byte(b)}, len(p)))
	return len(p), nil
}

// stallMidBlob sends the first half of body, then parks (BlobsParked counts
// it) until ReleaseBlobs, the client going away or Close, then sends the
// rest unless the client went away.
func (r *Registry) stallMidBlob(w http.ResponseWriter, req *http.Request, resp *http.Response) {
	if total := resp.ContentLength; total > 0 {
		r.copyBlob(w, req, io.LimitReader(resp.Body, total/2))
	}
	_ = http.NewResponseController(w).Flush()
	r.park(req)
	if req.Context().Err() != nil {
		return
	}
	r.copyBlob(w, req, resp.Body)
}

// WaitNoBlobsParked blocks until no blob GET is parked (by FaultBlobDelay
// or FaultStallMidBlob): released, or given up by its client. It fails
// the test after 30 seconds.
func (r *Registry) WaitNoBlobsParked(t testing.TB) {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		r.faults.mu.Lock()
		parked, changed := r.faults.parked, r.faults.changed
		r.faults.mu.Unlock()
		if parked == 0 {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("testreg: %d blob GETs still parked, want none", parked)
		}
	}
}
