package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/flight"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// Defaults of a Policy.
const (
	// DefaultCheckTTL is how long a positive upstream access check is
	// remembered.
	DefaultCheckTTL = 5 * time.Minute
	// DefaultCheckTimeout bounds one upstream access check.
	DefaultCheckTimeout = 30 * time.Second
)

// ErrNoUsers is wrapped by NewPolicy's error when a registry's access mode
// needs proxy users and none are configured.
var ErrNoUsers = errors.New("access mode needs proxy users, and there are none")

// Mode is a registry's access mode: who may read what the proxy cached
// from it.
type Mode int

// The access modes.
const (
	// Public: anyone who reaches the proxy.
	Public Mode = iota
	// Authenticated: any proxy user (htpasswd).
	Authenticated
	// Users: the listed proxy users.
	Users
	// Upstream: clients whose own credentials the registry accepts for
	// the repository (checked with one upstream request, remembered for a
	// short time per client and repository).
	Upstream
)

// ParseMode reads a mode name; "" is def.
func ParseMode(s string, def Mode) (Mode, error) {
	switch s {
	case "":
		return def, nil
	case "public":
		return Public, nil
	case "authenticated":
		return Authenticated, nil
	case "users":
		return Users, nil
	case "upstream":
		return Upstream, nil
	}
	return Public, fmt.Errorf("unknown access mode %q (want public, authenticated, users or upstream)", s)
}

// String names the mode.
func (m Mode) String() string {
	return [...]string{"public", "authenticated", "users", "upstream"}[m]
}

// Realm is the Basic realm of the proxy's challenges.
const Realm = "container-registry-proxy"

// ProxyChallenge is the WWW-Authenticate value that asks for credentials.
const ProxyChallenge = `Basic realm="` + Realm + `"`

// Client is who a client is to the proxy.
type Client struct {
	// User is a proxy user whose password was verified ("" anonymous).
	User string
	// Basic are credentials the client sent that are not a proxy user's:
	// in mode upstream, its own credentials for the registry.
	Basic *Credentials
	// Authorization is a non-Basic Authorization header the client sent
	// (a Bearer token it fetched from the registry itself).
	Authorization string
}

// Identity names the client for logs without any secret: the proxy user,
// the upstream user name, or a short hash of a bearer token.
func (c Client) Identity() string {
	switch {
	case c.User != "":
		return "user:" + c.User
	case c.Basic != nil:
		return "basic:" + c.Basic.Username
	case c.Authorization != "":
		sum := sha256.Sum256([]byte(c.Authorization))
		return "token:" + hex.EncodeToString(sum[:4])
	}
	return "anonymous"
}

// Anonymous reports whether the client presented nothing.
func (c Client) Anonymous() bool {
	return c.User == "" && c.Basic == nil && c.Authorization == ""
}

// key identifies the client's upstream credentials in the check cache.
func (c Client) key() string {
	switch {
	case c.Basic != nil:
		sum := sha256.Sum256([]byte(c.Basic.Username + "\x00" + c.Basic.Password))
		return "b" + hex.EncodeToString(sum[:])
	case c.Authorization != "":
		sum := sha256.Sum256([]byte(c.Authorization))
		return "a" + hex.EncodeToString(sum[:])
	}
	return ""
}

type clientKey struct{}

// WithClient returns ctx carrying c (a proxy user authenticated on the
// CONNECT request, for the requests inside the tunnel).
func WithClient(ctx context.Context, c Client) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

// ClientFrom returns the client stored by WithClient.
func ClientFrom(ctx context.Context) (Client, bool) {
	c, ok := ctx.Value(clientKey{}).(Client)
	return c, ok
}

// Checker asks a registry whether the credentials in ctx (WithCredentials
// or WithAuthorization) may read repo: kind is "manifest", "blob" or
// "tags"; ref is a tag or digest.
type Checker func(ctx context.Context, repo, kind, ref string) error

// RegistryAccess is one registry's policy.
type RegistryAccess struct {
	Mode  Mode
	Users []string
	// Check is required for mode Upstream.
	Check Checker
}

// PolicyOptions configure a Policy.
type PolicyOptions struct {
	// Users are the proxy users (nil: none).
	Users *Htpasswd
	// Registries maps canonical hosts to their access. Unlisted hosts are
	// public.
	Registries map[string]RegistryAccess
	// CheckTTL is how long a positive upstream check is remembered
	// (default DefaultCheckTTL).
	CheckTTL time.Duration
	// CheckTimeout bounds one upstream check (default
	// DefaultCheckTimeout). The check runs detached from the request that
	// started it, since other requests of the same client may be waiting
	// for its answer.
	CheckTimeout time.Duration
	// Now is the clock (tests).
	Now func() time.Time
}

// Policy decides who may read what. It is safe for concurrent use.
type Policy struct {
	users  *Htpasswd
	regs   map[string]RegistryAccess
	ttl    time.Duration
	now    func() time.Time
	checks *flight.Group[struct{}] // upstream checks in flight, by host|repo|client key

	mu     sync.Mutex
	passed map[string]time.Time // host|repo|client key → expiry
}

// NewPolicy returns a Policy. A registry whose mode needs proxy users when
// there are none is an error wrapping ErrNoUsers.
func NewPolicy(opts PolicyOptions) (*Policy, error) {
	if opts.CheckTTL <= 0 {
		opts.CheckTTL = DefaultCheckTTL
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = DefaultCheckTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	for host, ra := range opts.Registries {
		if (ra.Mode == Authenticated || ra.Mode == Users) && opts.Users == nil {
			return nil, fmt.Errorf("registry %s: access mode %s: %w", host, ra.Mode, ErrNoUsers)
		}
		if ra.Mode == Upstream && ra.Check == nil {
			return nil, fmt.Errorf("registry %s: access mode upstream needs a checker", host)
		}
	}
	return &Policy{
		users:  opts.Users,
		regs:   opts.Registries,
		ttl:    opts.CheckTTL,
		now:    opts.Now,
		checks: flight.New[struct{}](opts.CheckTimeout),
		passed: map[string]time.Time{},
	}, nil
}

// Restricted reports whether any registry is not public: the registry
// base endpoint then challenges clients that sent no credentials.
func (p *Policy) Restricted() bool {
	for _, ra := range p.regs {
		if ra.Mode != Public {
			return true
		}
	}
	return false
}

// Mode returns a registry's mode.
func (p *Policy) Mode(host string) Mode { return p.regs[host].Mode }

// Identify returns who sent r: a client preset in the context (CONNECT
// Proxy-Authorization), a proxy user by Basic credentials, or the
// credentials it presented for upstream.
func (p *Policy) Identify(r *http.Request) Client {
	c, _ := ClientFrom(r.Context())
	h := r.Header.Get("Authorization")
	if h == "" {
		return c
	}
	if user, pass, ok := r.BasicAuth(); ok {
		if c.User == "" && p.users.Verify(user, pass) {
			c.User = user
			return c
		}
		c.Basic = &Credentials{Username: user, Password: pass}
		return c
	}
	c.Authorization = h
	return c
}

// VerifyProxyAuthorization checks a Proxy-Authorization header (Basic)
// against the proxy users.
func (p *Policy) VerifyProxyAuthorization(h string) (string, bool) {
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	if err != nil {
		return "", false
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok || !p.users.Verify(user, pass) {
		return "", false
	}
	return user, true
}

// HasUsers reports whether proxy users are configured.
func (p *Policy) HasUsers() bool { return p.users != nil }

func unauthorized(format string, args ...any) *oci.Error {
	e := oci.Errorf(http.StatusUnauthorized, oci.CodeUnauthorized, format, args...)
	e.Challenge = ProxyChallenge
	return e
}

// Authorize decides whether c may read repo of the registry host; kind
// and ref name what is read (for the upstream check). It returns nil or an
// *oci.Error: 401 UNAUTHORIZED with a challenge when credentials are
// missing or rejected, 403 DENIED when the client is known but not
// allowed, 504 UNAVAILABLE when ctx ends while the upstream check runs
// (the check goes on for the others), or the check's own error when
// upstream could not answer.
func (p *Policy) Authorize(ctx context.Context, c Client, host, repo, kind, ref string) error {
	ra := p.regs[host]
	switch ra.Mode {
	case Public:
		return nil
	case Authenticated:
		if c.User != "" {
			return nil
		}
		return unauthorized("registry %s is served to proxy users only: authenticate to the proxy", host)
	case Users:
		if c.User == "" {
			return unauthorized("registry %s is served to some proxy users only: authenticate to the proxy", host)
		}
		for _, u := range ra.Users {
			if u == c.User {
				return nil
			}
		}
		return oci.Errorf(http.StatusForbidden, oci.CodeDenied, "proxy user %s may not read %s/%s", c.User, host, repo)
	}
	return p.authorizeUpstream(ctx, c, ra.Check, host, repo, kind, ref)
}

// authorizeUpstream is Authorize for mode Upstream: the client's own
// credentials must be accepted upstream. A positive answer is remembered
// for CheckTTL; concurrent requests of one client for one repository share
// one check, which goes on when the request that started it hangs up.
func (p *Policy) authorizeUpstream(ctx context.Context, c Client, check Checker, host, repo, kind, ref string) error {
	k := c.key()
	if k == "" {
		return unauthorized("registry %s serves cached content only to clients whose own credentials it accepts: send them", host)
	}
	cacheKey := host + "|" + repo + "|" + k
	if p.passedRecently(cacheKey) {
		return nil
	}
	_, err := p.checks.Do(ctx, cacheKey, func(fctx context.Context) (struct{}, error) {
		if p.passedRecently(cacheKey) {
			return struct{}{}, nil // a check that ended meanwhile
		}
		start := p.now()
		if c.Basic != nil {
			fctx = WithCredentials(fctx, *c.Basic)
		} else {
			fctx = WithAuthorization(fctx, c.Authorization)
		}
		if err := check(fctx, repo, kind, ref); err != nil {
			return struct{}{}, err
		}
		p.pass(cacheKey, start)
		return struct{}{}, nil
	})
	switch {
	case err == nil:
		return nil
	case flight.Left(ctx, err):
		return oci.Wrap(http.StatusGatewayTimeout, oci.CodeUnavailable, err, "waiting for registry %s to check the client's access to %s", host, repo)
	}
	switch oci.StatusOf(err) {
	case http.StatusUnauthorized:
		return unauthorized("registry %s rejected the client's credentials for %s", host, repo)
	case http.StatusForbidden, http.StatusNotFound:
		return oci.Errorf(http.StatusForbidden, oci.CodeDenied, "registry %s does not let %s read %s", host, c.Identity(), repo)
	}
	return err
}

// passedRecently reports whether the check of cacheKey passed within the
// TTL.
func (p *Policy) passedRecently(cacheKey string) bool {
	p.mu.Lock()
	exp, ok := p.passed[cacheKey]
	p.mu.Unlock()
	return ok && p.now().Before(exp)
}

// pass remembers that the check of cacheKey started at start passed.
func (p *Policy) pass(cacheKey string, start time.Time) {
	exp := start.Add(p.ttl)
	p.mu.Lock()
	if len(p.passed) > 100000 {
		clear(p.passed)
	}
	p.passed[cacheKey] = exp
	p.mu.Unlock()
}

// Check identifies the client of r and authorizes it to read repo of the
// registry host. It returns the context for the upstream requests made on
// the client's behalf (carrying its own credentials when allowOwnAuth and
// it sent some that are not a proxy user's), the client's identity for
// logs, and nil or the denial.
func (p *Policy) Check(r *http.Request, host, repo, kind, ref string, allowOwnAuth bool) (context.Context, string, error) {
	c := p.Identify(r)
	ctx := r.Context()
	if err := p.Authorize(ctx, c, host, repo, kind, ref); err != nil {
		return ctx, c.Identity(), err
	}
	if allowOwnAuth && c.User == "" {
		switch {
		case c.Basic != nil:
			ctx = WithCredentials(ctx, *c.Basic)
		case c.Authorization != "":
			ctx = WithAuthorization(ctx, c.Authorization)
		}
	}
	return ctx, c.Identity(), nil
}

// CheckBase answers the registry base endpoint (/v2/): when some registry
// is restricted, a client that sent no credentials at all is challenged,
// so that it sends the credentials it has on the next requests; clients
// without any still go on anonymously for public registries.
func (p *Policy) CheckBase(r *http.Request) error {
	if !p.Restricted() {
		return nil
	}
	if c := p.Identify(r); c.Anonymous() {
		return unauthorized("authenticate to read restricted registries; public ones need nothing")
	}
	return nil
}
