package auth

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// testClock is a clock the test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *testClock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func from(r *http.Request, addr string) *http.Request {
	r.RemoteAddr = addr
	return r
}

// TestGuardLimitsFailedLogins: through the Guard, with a real htpasswd
// file: ten refused logins from one address (wrong passwords, known user
// or not) make its eleventh request with credentials a 429
// TOOMANYREQUESTS with Retry-After, even with the right password, which
// is not checked; another address, and requests without credentials,
// are not affected; after the window the right password works again.
func TestGuardLimitsFailedLogins(t *testing.T) {
	t.Parallel()
	_, closed := guardPolicies(t)
	g := NewGuard(closed, false)
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	g.logins.now = clock.Now
	const attacker, other = "192.0.2.1:40000", "198.51.100.7:40000"
	authorize := func(addr, authz string) error {
		_, _, err := g.Authorize(from(manifestRequest(t, authz), addr), "r.test", "team/app", "manifest", "latest")
		return err
	}
	for i := range DefaultMaxFailedLogins {
		user := "alice"
		if i%2 == 1 {
			user = fmt.Sprintf("nobody%d", i) // unknown users count the same
		}
		if got := statusOf(authorize(attacker, basicHeader(user, "guess"))); got != http.StatusUnauthorized {
			t.Fatalf("failed login %d: %d, want 401", i+1, got)
		}
	}
	err := authorize(attacker, basicHeader("alice", "alice-pw"))
	var oe *oci.Error
	if !asOCI(err, &oe) || oe.Status != http.StatusTooManyRequests || oe.Code != "TOOMANYREQUESTS" {
		t.Fatalf("the right password after %d failures: %v; want 429 TOOMANYREQUESTS", DefaultMaxFailedLogins, err)
	}
	if s, err := strconv.Atoi(oe.RetryAfter); err != nil || s < 1 || s > 60 {
		t.Fatalf("Retry-After %q; want the seconds left of the window", oe.RetryAfter)
	}
	if err := g.AuthorizeBase(from(manifestRequest(t, basicHeader("alice", "alice-pw")), attacker)); statusOf(err) != http.StatusTooManyRequests {
		t.Fatalf("/v2/ with credentials from the blocked address: %v; want 429", err)
	}
	if got := statusOf(authorize(attacker, "")); got != http.StatusUnauthorized {
		t.Fatalf("an anonymous request from the blocked address: %d; want the usual 401 challenge", got)
	}
	if err := authorize(other, basicHeader("alice", "alice-pw")); err != nil {
		t.Fatalf("another address: %v", err)
	}
	clock.Advance(DefaultLoginWindow)
	if err := authorize(attacker, basicHeader("alice", "alice-pw")); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// TestGuardLoginLimitDetails: credentials a public registry ignores are
// no failed login; an IPv6 client counts per /64; LimitLogins changes and
// turns off the limit; the record of addresses stays bounded.
func TestGuardLoginLimitDetails(t *testing.T) {
	t.Parallel()
	open, closed := guardPolicies(t)
	pub := NewGuard(open, false)
	for range 3 * DefaultMaxFailedLogins {
		if _, _, err := pub.Authorize(from(manifestRequest(t, basicHeader("alice", "wrong")), "192.0.2.1:1"), "r.test", "team/app", "manifest", "latest"); err != nil {
			t.Fatalf("public registry with credentials it ignores: %v", err)
		}
	}

	g := NewGuard(closed, false)
	g.LimitLogins(2, time.Hour)
	fail := func(addr string) int {
		_, _, err := g.Authorize(from(manifestRequest(t, basicHeader("alice", "wrong")), addr), "r.test", "team/app", "manifest", "latest")
		return statusOf(err)
	}
	fail("[2001:db8:1:2::1]:5000")
	fail("[2001:db8:1:2::ffff]:5000")
	if got := fail("[2001:db8:1:2:aaaa::3]:5000"); got != http.StatusTooManyRequests {
		t.Fatalf("third failure from one IPv6 /64 with a limit of 2: %d; want 429", got)
	}
	if got := fail("[2001:db8:1:3::1]:5000"); got != http.StatusUnauthorized {
		t.Fatalf("another /64: %d; want 401", got)
	}

	g.LimitLogins(0, 0)
	for range 5 {
		if got := fail("[2001:db8:1:2::1]:5000"); got != http.StatusUnauthorized {
			t.Fatalf("limit off: %d; want 401", got)
		}
	}

	g.LimitLogins(1, time.Hour)
	for i := range maxLoginAddrs + 500 {
		g.LoginFailed(from(manifestRequest(t, ""), fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)))
	}
	g.logins.mu.Lock()
	n := len(g.logins.addrs)
	g.logins.mu.Unlock()
	if n > maxLoginAddrs {
		t.Fatalf("%d addresses remembered; want at most %d", n, maxLoginAddrs)
	}
}
