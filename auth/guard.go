package auth

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// Guard is the access policy in force and whether clients' own
// credentials are passed upstream, swapped as one when the configuration
// is reloaded: every request reads the pair that was in force when it
// asked, never half of an old one and half of a new one. It is safe for
// concurrent use.
//
// It also limits failed logins per client address (DefaultMaxFailedLogins
// per DefaultLoginWindow, LimitLogins): a request whose credentials were
// refused (401) counts as one; past the limit, requests of that address
// that carry credentials are answered 429 TOOMANYREQUESTS with
// Retry-After without checking them. Requests without credentials are
// never refused for it. The counts survive Swap.
type Guard struct {
	cur    atomic.Pointer[guardState]
	logins *loginLimiter
}

// guardState is what a Guard swaps.
type guardState struct {
	policy       *Policy
	allowOwnAuth bool
}

// NewGuard returns a Guard enforcing p. allowOwnAuth passes a client's own
// credentials (those that are not a proxy user's) on to upstream with
// the requests made for it. p must not be nil.
func NewGuard(p *Policy, allowOwnAuth bool) *Guard {
	g := &Guard{logins: newLoginLimiter(nil)}
	g.Swap(p, allowOwnAuth)
	return g
}

// Swap puts p and allowOwnAuth in force for the requests that come after
// it; requests already authorized keep their answer. p must not be nil.
func (g *Guard) Swap(p *Policy, allowOwnAuth bool) {
	if p == nil {
		panic("auth: Guard needs a policy")
	}
	g.cur.Store(&guardState{policy: p, allowOwnAuth: allowOwnAuth})
}

// Policy returns the policy in force.
func (g *Guard) Policy() *Policy { return g.cur.Load().policy }

// Authorize is Policy.Check with the policy in force: it identifies the
// client of r and decides whether it may read repo of the registry host
// (kind and ref name what is read). It returns the context for the
// upstream requests made on the client's behalf, the client's identity
// for logs, and nil or the denial (an *oci.Error).
//
// Credentials from an address past the failed-login limit are refused
// with 429 unchecked; credentials refused with 401 count as a failure.
func (g *Guard) Authorize(r *http.Request, host, repo, kind, ref string) (context.Context, string, error) {
	creds := r.Header.Get("Authorization") != ""
	if creds {
		if err := g.logins.blocked(r); err != nil {
			return r.Context(), "", err
		}
	}
	s := g.cur.Load()
	ctx, identity, err := s.policy.Check(r, host, repo, kind, ref, s.allowOwnAuth)
	if creds && err != nil && oci.StatusOf(err) == http.StatusUnauthorized {
		g.logins.failed(r)
	}
	return ctx, identity, err
}

// AuthorizeBase is Policy.CheckBase with the policy in force: the answer
// to the registry base endpoint (/v2/). Credentials from an address past
// the failed-login limit are refused with 429 unchecked.
func (g *Guard) AuthorizeBase(r *http.Request) error {
	if r.Header.Get("Authorization") != "" {
		if err := g.logins.blocked(r); err != nil {
			return err
		}
	}
	return g.Policy().CheckBase(r)
}

// LimitLogins sets the failed-login limit: max failures per window and
// client address (0 turns the limit off; a window <= 0 keeps the one in
// force).
func (g *Guard) LimitLogins(max int, window time.Duration) { g.logins.set(max, window) }

// LoginBlocked returns the 429 (an *oci.Error with RetryAfter) for a
// request whose address is past the failed-login limit, else nil: for
// logins the Guard does not see, such as Proxy-Authorization on CONNECT.
func (g *Guard) LoginBlocked(r *http.Request) error { return g.logins.blocked(r) }

// LoginFailed counts a failed login of r's address (see LoginBlocked).
func (g *Guard) LoginFailed(r *http.Request) { g.logins.failed(r) }

// Restricted reports whether the policy in force serves what is cached
// from host to fewer clients than everyone who reaches the proxy (an
// access mode other than public).
func (g *Guard) Restricted(host string) bool { return g.Policy().Mode(host) != Public }

// ProxyUser checks a Proxy-Authorization header value against the proxy
// users of the policy in force and returns the user it names; ok is false
// when the header is not a valid Basic one of a proxy user, or when there
// are no proxy users.
func (g *Guard) ProxyUser(header string) (user string, ok bool) {
	p := g.Policy()
	if !p.HasUsers() {
		return "", false
	}
	return p.VerifyProxyAuthorization(header)
}
