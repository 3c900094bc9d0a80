package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/oci"
	"golang.org/x/crypto/bcrypt"
)

func writeHtpasswd(t *testing.T, lines ...string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func bcryptLine(t *testing.T, user, pass string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + string(h)
}

func TestLoadHtpasswd(t *testing.T) {
	t.Parallel()
	good := bcryptLine(t, "alice", "pw")
	cases := []struct {
		name  string
		lines []string
		err   string
	}{
		{"bcrypt", []string{"# users", good, ""}, ""},
		{"md5 refused", []string{"bob:$apr1$abc$def"}, "only bcrypt"},
		{"no colon", []string{"bob"}, ":1: want user:bcrypt-hash"},
		{"empty", []string{"# nobody"}, "no users"},
		{"broken hash", []string{"bob:$2y$xx"}, "bob"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := writeHtpasswd(t, tc.lines...)
			h, err := LoadHtpasswd(f)
			if tc.err == "" {
				if err != nil || !h.Verify("alice", "pw") || h.Verify("alice", "nope") || h.Verify("carol", "pw") {
					t.Fatalf("LoadHtpasswd: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), f) {
				t.Fatalf("error %v, want one naming %s and %q", err, f, tc.err)
			}
		})
	}
}

func TestPolicyModes(t *testing.T) {
	t.Parallel()
	users, err := LoadHtpasswd(writeHtpasswd(t, bcryptLine(t, "alice", "sekrit-a"), bcryptLine(t, "carol", "sekrit-c")))
	if err != nil {
		t.Fatal(err)
	}
	var checks atomic.Int64
	check := func(ctx context.Context, repo, kind, ref string) error {
		checks.Add(1)
		if a := ctxAuthorizationForTest(ctx); a == "Bearer good" {
			return nil
		}
		return oci.Errorf(http.StatusUnauthorized, oci.CodeUnauthorized, "no")
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p, err := NewPolicy(PolicyOptions{Users: users, CheckTTL: time.Minute, Now: func() time.Time { return now }, Registries: map[string]RegistryAccess{
		"pub.test":  {Mode: Public},
		"auth.test": {Mode: Authenticated},
		"few.test":  {Mode: Users, Users: []string{"carol"}},
		"up.test":   {Mode: Upstream, Check: check},
	}})
	if err != nil {
		t.Fatal(err)
	}
	req := func(hdr string) *http.Request {
		r := httptest.NewRequest("GET", "/v2/x/manifests/latest", nil)
		if hdr != "" {
			r.Header.Set("Authorization", hdr)
		}
		return r
	}
	basic := func(u, pw string) string {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(u, pw)
		return r.Header.Get("Authorization")
	}
	cases := []struct {
		name, host, hdr string
		status          int
	}{
		{"public anonymous", "pub.test", "", 0},
		{"authenticated anonymous", "auth.test", "", 401},
		{"authenticated user", "auth.test", basic("alice", "sekrit-a"), 0},
		{"authenticated wrong password", "auth.test", basic("alice", "x"), 401},
		{"users listed", "few.test", basic("carol", "sekrit-c"), 0},
		{"users not listed", "few.test", basic("alice", "sekrit-a"), 403},
		{"upstream anonymous", "up.test", "", 401},
		{"upstream rejected", "up.test", "Bearer bad", 401},
		{"upstream accepted", "up.test", "Bearer good", 0},
		{"upstream accepted, remembered", "up.test", "Bearer good", 0},
		{"unknown registry is public", "other.test", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, id, err := p.Check(req(tc.hdr), tc.host, "team/app", "manifest", "latest", false)
			if tc.status == 0 && err != nil {
				t.Fatalf("denied %s: %v", id, err)
			}
			if tc.status != 0 && oci.StatusOf(err) != tc.status {
				t.Fatalf("status %d (%v), want %d", oci.StatusOf(err), err, tc.status)
			}
			if tc.status == 401 {
				var oe *oci.Error
				if !asOCI(err, &oe) || oe.Challenge != ProxyChallenge {
					t.Fatal("a 401 must carry the Basic challenge")
				}
			}
			if strings.Contains(id, "good") || strings.Contains(id, "sekrit") {
				t.Fatalf("identity %q leaks a secret", id)
			}
		})
	}
	if n := checks.Load(); n != 2 {
		t.Fatalf("upstream checks = %d, want 2 (a positive answer is remembered)", n)
	}
	now = now.Add(2 * time.Minute)
	if _, _, err := p.Check(req("Bearer good"), "up.test", "team/app", "manifest", "latest", false); err != nil || checks.Load() != 3 {
		t.Fatalf("after the TTL the check must run again: %v, %d", err, checks.Load())
	}
	if err := p.CheckBase(req("")); oci.StatusOf(err) != 401 {
		t.Fatalf("base for anonymous with restricted registries: %v", err)
	}
	if err := p.CheckBase(req(basic("alice", "sekrit-a"))); err != nil {
		t.Fatalf("base for a user: %v", err)
	}
	for _, mode := range []Mode{Authenticated, Users} {
		_, err := NewPolicy(PolicyOptions{Registries: map[string]RegistryAccess{"x.test": {Mode: mode}}})
		if !errors.Is(err, ErrNoUsers) || !strings.Contains(err.Error(), "x.test") || !strings.Contains(err.Error(), mode.String()) {
			t.Fatalf("mode %s without users: err = %v, want ErrNoUsers naming the registry and the mode", mode, err)
		}
	}
}

func ctxAuthorizationForTest(ctx context.Context) string { return authorizationFrom(ctx) }

func asOCI(err error, oe **oci.Error) bool { return errors.As(err, oe) }

// gatedRegistry is a registry that lets "Bearer good" read anything and
// holds every answer until released; it reports each request on arrived.
type gatedRegistry struct {
	*httptest.Server
	hits    atomic.Int64
	arrived chan struct{}
	gate    chan struct{}
	release func()
}

func newGatedRegistry(t *testing.T) *gatedRegistry {
	t.Helper()
	g := &gatedRegistry{arrived: make(chan struct{}, 16), gate: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.hits.Add(1)
		g.arrived <- struct{}{}
		<-g.gate
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(g.Close)
	var once sync.Once
	g.release = func() { once.Do(func() { close(g.gate) }) }
	t.Cleanup(g.release) // runs before Close, which waits for the handlers
	return g
}

// checker asks the registry with a HEAD of the manifest, through a
// Transport that sends the client's own Authorization header.
func (g *gatedRegistry) checker(t *testing.T) Checker {
	client := &http.Client{Transport: &Transport{Base: g.Client().Transport, Host: hostOf(t, g.URL)}}
	return func(ctx context.Context, repo, kind, ref string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, g.URL+"/v2/"+repo+"/manifests/"+ref, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return oci.Wrap(http.StatusBadGateway, oci.CodeUnavailable, err, "registry unreachable")
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return oci.Errorf(resp.StatusCode, oci.CodeUnauthorized, "registry answered %d", resp.StatusCode)
		}
		return nil
	}
}

// upstreamPolicy is a policy whose registry up.test checks clients' own
// credentials at g.
func upstreamPolicy(t *testing.T, g *gatedRegistry) *Policy {
	t.Helper()
	p, err := NewPolicy(PolicyOptions{Registries: map[string]RegistryAccess{"up.test": {Mode: Upstream, Check: g.checker(t)}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// clientRequest is a client's manifest request carrying its own token.
func clientRequest(ctx context.Context) *http.Request {
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v2/up.test/team/app/manifests/latest", nil)
	r.Header.Set("Authorization", "Bearer good")
	return r
}

// checkUpstream runs p.Check for r in a goroutine; its error arrives on
// the channel.
func checkUpstream(p *Policy, r *http.Request) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, _, err := p.Check(r, "up.test", "team/app", "manifest", "latest", false)
		ch <- err
	}()
	return ch
}

// TestPolicyCheckLeaderHangsUp: the request that started an upstream
// access check hangs up; it gets a 504 at once, while the check goes on
// and the same client's other requests, waiting for it, are let through.
// Upstream is asked once.
func TestPolicyCheckLeaderHangsUp(t *testing.T) {
	t.Parallel()
	g := newGatedRegistry(t)
	p := upstreamPolicy(t, g)

	leaderCtx, hangUp := context.WithCancel(t.Context())
	leader := checkUpstream(p, clientRequest(leaderCtx))
	<-g.arrived // the check is under way

	const waiters = 8
	waiting := make([]<-chan error, waiters)
	for i := range waiters {
		waiting[i] = checkUpstream(p, clientRequest(t.Context()))
	}
	hangUp()
	err := receive(t, leader, "the leader's answer after it hung up") // before release
	if oci.StatusOf(err) != http.StatusGatewayTimeout || !errors.Is(err, context.Canceled) {
		t.Fatalf("leader that hung up got %v, want a 504 wrapping context.Canceled", err)
	}
	g.release()
	for i, ch := range waiting {
		if err := <-ch; err != nil {
			t.Fatalf("waiter %d denied: %v", i, err)
		}
	}
	if n := g.hits.Load(); n != 1 {
		t.Fatalf("upstream checks = %d, want 1", n)
	}
}

// TestPolicyCheckWaiterHangsUp: a request waiting for an upstream check
// another request of the same client started hangs up; it gets a 504 at
// once, and the check goes on: the first request is let through and the
// answer is remembered for the next.
func TestPolicyCheckWaiterHangsUp(t *testing.T) {
	t.Parallel()
	g := newGatedRegistry(t)
	p := upstreamPolicy(t, g)

	leader := checkUpstream(p, clientRequest(t.Context()))
	<-g.arrived

	waiterCtx, hangUp := context.WithCancel(t.Context())
	waiter := checkUpstream(p, clientRequest(waiterCtx))
	hangUp()
	err := receive(t, waiter, "the waiter's answer after it hung up") // before release
	if oci.StatusOf(err) != http.StatusGatewayTimeout || oci.CodeOf(err) != oci.CodeUnavailable || !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter that hung up got %v, want a 504 UNAVAILABLE wrapping context.Canceled", err)
	}
	g.release()
	if err := <-leader; err != nil {
		t.Fatalf("leader denied: %v", err)
	}
	if err := <-checkUpstream(p, clientRequest(t.Context())); err != nil || g.hits.Load() != 1 {
		t.Fatalf("next request: %v after %d upstream checks; want it let through on the remembered answer after 1", err, g.hits.Load())
	}
}

// receive returns the value ch delivers. A value that does not come
// within a generous bound fails the test (instead of hanging it): the
// caller expects it at once.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not come", what)
		panic("unreachable")
	}
}

// TestUnknownUserChecksADummyHash: an unknown user's password is checked
// against a hash at the users' highest cost, as a known user's is, so that
// a wrong password answers in the same time either way; it is refused.
func TestUnknownUserChecksADummyHash(t *testing.T) {
	t.Parallel()
	low, err := bcrypt.GenerateFromPassword([]byte("bob-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	high, err := bcrypt.GenerateFromPassword([]byte("carol-pw"), bcrypt.MinCost+2)
	if err != nil {
		t.Fatal(err)
	}
	h, err := LoadHtpasswd(writeHtpasswd(t, "bob:"+string(low)+"\ncarol:"+string(high)))
	if err != nil {
		t.Fatal(err)
	}
	if cost, err := bcrypt.Cost(h.dummy); err != nil || cost != bcrypt.MinCost+2 {
		t.Fatalf("dummy hash cost %d (%v), want the users' highest, %d", cost, err, bcrypt.MinCost+2)
	}
	if h.Verify("mallory", "bob-pw") || h.Verify("mallory", "") || !h.Verify("bob", "bob-pw") {
		t.Fatal("unknown users must be refused and known ones accepted")
	}
}
