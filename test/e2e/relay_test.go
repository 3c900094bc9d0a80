//go:build e2e

package e2e

import (
	"io"
	"net"
	"sync"
	"testing"
)

// gatedRelay is a TCP relay in front of an upstream registry that can hold
// the bytes flowing from upstream to its clients at a count the test
// chooses: upstream "parked mid-body" at a byte offset, whatever runs
// inside (TLS, h2). The proxy is configured with the relay's address as
// the upstream endpoint; the registry's certificate is for 127.0.0.1, so
// TLS passes through unchanged.
type gatedRelay struct {
	// Addr is "127.0.0.1:<port>".
	Addr string

	target string
	ln     net.Listener

	mu      sync.Mutex
	limit   int64 // bytes upstream→client allowed since hold; < 0: no limit
	sent    int64 // bytes upstream→client reserved since hold
	refuse  bool  // close new connections at once: "upstream is down"
	changed chan struct{}
	conns   map[net.Conn]struct{}
	closed  bool
}

// startRelay relays 127.0.0.1:<free port> to target until the test ends.
func startRelay(t *testing.T, target string) *gatedRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &gatedRelay{Addr: ln.Addr().String(), target: target, ln: ln, limit: -1,
		changed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	go r.accept()
	t.Cleanup(r.close)
	return r
}

// hold lets limit more bytes flow from upstream to clients (counted from
// now, over all connections), then parks every upstream→client copy.
func (r *gatedRelay) hold(limit int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.limit, r.sent, r.refuse = limit, 0, false
	r.notifyLocked()
}

// open lets bytes flow freely again and accepts connections.
func (r *gatedRelay) open() { r.hold(-1) }

// down makes the relay close every new connection at once, as a registry
// that is gone; connections already open stay.
func (r *gatedRelay) down() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse = true
}

// Sent returns the bytes sent upstream→client since the last hold.
func (r *gatedRelay) Sent() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent
}

func (r *gatedRelay) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *gatedRelay) close() {
	r.mu.Lock()
	r.closed = true
	r.notifyLocked()
	conns := r.conns
	r.conns = map[net.Conn]struct{}{}
	r.mu.Unlock()
	r.ln.Close()
	for c := range conns {
		c.Close()
	}
}

func (r *gatedRelay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		refuse, closed := r.refuse, r.closed
		r.mu.Unlock()
		if refuse || closed {
			c.Close()
			continue
		}
		go r.serve(c)
	}
}

// track registers c for close; it reports false when the relay is closed.
func (r *gatedRelay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *gatedRelay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		delete(r.conns, c)
		c.Close()
	}
}

func (r *gatedRelay) serve(client net.Conn) {
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		client.Close()
		return
	}
	if !r.track(client) || !r.track(up) {
		r.untrack(client, up)
		return
	}
	done := make(chan struct{})
	var once sync.Once
	end := func() { once.Do(func() { close(done); r.untrack(client, up) }) }
	go func() {
		_, _ = io.Copy(up, client)
		end()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		for off := 0; off < n; {
			k := r.reserve(n-off, done)
			if k == 0 {
				end()
				return
			}
			if _, werr := client.Write(buf[off : off+k]); werr != nil {
				end()
				return
			}
			off += k
		}
		if err != nil { // EOF or closed: HTTP clients need no half-close
			end()
			return
		}
	}
}

// reserve waits until up to max bytes may be sent and counts them; 0 when
// the connection ended or the relay closed.
func (r *gatedRelay) reserve(max int, done <-chan struct{}) int {
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return 0
		}
		if r.limit < 0 {
			r.sent += int64(max)
			r.mu.Unlock()
			return max
		}
		if avail := r.limit - r.sent; avail > 0 {
			k := int(min(avail, int64(max)))
			r.sent += int64(k)
			r.mu.Unlock()
			return k
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-done:
			return 0
		}
	}
}
