package auth

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// Defaults of the failed-login limit.
const (
	// DefaultMaxFailedLogins is how many failed logins a client address
	// may make per DefaultLoginWindow before its credentials are refused
	// unchecked.
	DefaultMaxFailedLogins = 10
	// DefaultLoginWindow is the window failed logins are counted in.
	DefaultLoginWindow = time.Minute
)

// maxLoginAddrs bounds the client addresses whose failures are counted at
// once: past it, expired entries are dropped, then any.
const maxLoginAddrs = 10000

// loginLimiter counts failed logins per client address in fixed windows:
// the first failure starts a window; after max failures in it, requests
// of that address that carry credentials are refused (429) without
// checking them until the window ends. Guessing passwords costs an
// attacker a window per max guesses, and the proxy no bcrypt work.
type loginLimiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	now    func() time.Time
	addrs  map[string]*loginFailures
}

type loginFailures struct {
	start time.Time
	n     int
}

func newLoginLimiter(now func() time.Time) *loginLimiter {
	if now == nil {
		now = time.Now
	}
	return &loginLimiter{max: DefaultMaxFailedLogins, window: DefaultLoginWindow, now: now, addrs: map[string]*loginFailures{}}
}

// clientAddr is the address failures are counted for: the remote IP, an
// IPv6 client's /64 (one host's share of a network), or the remote
// address as written when it is no IP.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return host
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// blocked returns the 429 for r's address when it used up its failures,
// else nil.
func (l *loginLimiter) blocked(r *http.Request) error {
	addr := clientAddr(r)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max <= 0 {
		return nil
	}
	f := l.addrs[addr]
	if f == nil || f.n < l.max {
		return nil
	}
	left := f.start.Add(l.window).Sub(now)
	if left <= 0 {
		delete(l.addrs, addr)
		return nil
	}
	e := oci.Errorf(http.StatusTooManyRequests, oci.CodeTooManyRequests, "too many failed logins from %s: try again in %s", addr, left.Round(time.Second))
	e.RetryAfter = strconv.Itoa(int(left.Seconds() + 0.999))
	return e
}

// failed counts a failed login of r's address.
func (l *loginLimiter) failed(r *http.Request) {
	addr := clientAddr(r)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max <= 0 {
		return
	}
	f := l.addrs[addr]
	if f != nil && now.Sub(f.start) >= l.window {
		f = nil
	}
	if f == nil {
		l.makeRoom(now)
		f = &loginFailures{start: now}
		l.addrs[addr] = f
	}
	f.n++
}

// makeRoom keeps the map within maxLoginAddrs: expired windows go first,
// then arbitrary entries.
func (l *loginLimiter) makeRoom(now time.Time) {
	if len(l.addrs) < maxLoginAddrs {
		return
	}
	for a, f := range l.addrs {
		if now.Sub(f.start) >= l.window {
			delete(l.addrs, a)
		}
	}
	for a := range l.addrs {
		if len(l.addrs) < maxLoginAddrs {
			break
		}
		delete(l.addrs, a)
	}
}

// set changes the limit; max 0 turns it off.
func (l *loginLimiter) set(max int, window time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.max = max
	if window > 0 {
		l.window = window
	}
}
