package auth

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// guardPolicies are two configurations of one registry, r.test: open
// serves it to anyone and passes clients' own credentials upstream;
// closed serves it to proxy users only and passes nothing.
func guardPolicies(t *testing.T) (open, closed *Policy) {
	t.Helper()
	users, err := LoadHtpasswd(writeHtpasswd(t, bcryptLine(t, "alice", "alice-pw")))
	if err != nil {
		t.Fatal(err)
	}
	open, err = NewPolicy(PolicyOptions{Registries: map[string]RegistryAccess{"r.test": {Mode: Public}}})
	if err != nil {
		t.Fatal(err)
	}
	closed, err = NewPolicy(PolicyOptions{Users: users, Registries: map[string]RegistryAccess{"r.test": {Mode: Authenticated}}})
	if err != nil {
		t.Fatal(err)
	}
	return open, closed
}

// statusOf is 0 for nil, else the status a client would see.
func statusOf(err error) int {
	if err == nil {
		return 0
	}
	return oci.StatusOf(err)
}

// basicHeader is the Basic Authorization header value of user:pass.
func basicHeader(user, pass string) string {
	return basicOf(Credentials{Username: user, Password: pass})
}

// manifestRequest is a client's request for a manifest of r.test, with
// the Authorization header authz ("" for none).
func manifestRequest(t *testing.T, authz string) *http.Request {
	r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v2/r.test/team/app/manifests/latest", nil)
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	return r
}

// TestGuardSwap: what a client may read, whether its own credentials go
// upstream and who the proxy users are follow the policy in force: a
// request let through under the old policy is refused under the new one,
// and back.
func TestGuardSwap(t *testing.T) {
	t.Parallel()
	open, closed := guardPolicies(t)
	g := NewGuard(open, true)
	bob := basicHeader("bob", "bob-registry-pw") // not a proxy user: his registry credentials
	alice := basicHeader("alice", "alice-pw")

	steps := []struct {
		name         string
		swap         func()
		policy       *Policy
		anonStatus   int  // Authorize for an anonymous client: 0 or the refusal's status
		bobStatus    int  // … for bob
		bobPassed    bool // bob's own credentials are in the upstream context
		baseStatus   int  // AuthorizeBase for an anonymous client
		proxyUser    string
		proxyUserSet bool
	}{
		{name: "open", policy: open, bobPassed: true},
		{name: "closed", swap: func() { g.Swap(closed, false) }, policy: closed, anonStatus: 401, bobStatus: 401, baseStatus: 401, proxyUser: "alice", proxyUserSet: true},
		{name: "open again", swap: func() { g.Swap(open, true) }, policy: open, bobPassed: true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.swap != nil {
				s.swap()
			}
			if g.Policy() != s.policy {
				t.Fatal("Policy() is not the policy swapped in")
			}
			if _, _, err := g.Authorize(manifestRequest(t, ""), "r.test", "team/app", "manifest", "latest"); statusOf(err) != s.anonStatus {
				t.Fatalf("anonymous: %v, want status %d", err, s.anonStatus)
			}
			ctx, id, err := g.Authorize(manifestRequest(t, bob), "r.test", "team/app", "manifest", "latest")
			if statusOf(err) != s.bobStatus {
				t.Fatalf("bob (%s): %v, want status %d", id, err, s.bobStatus)
			}
			if c, ok := credentialsFrom(ctx); err == nil && (ok != s.bobPassed || (ok && c.Username != "bob")) {
				t.Fatalf("bob's credentials passed upstream: %v (%v), want %v", ok, c, s.bobPassed)
			}
			if err := g.AuthorizeBase(manifestRequest(t, "")); statusOf(err) != s.baseStatus {
				t.Fatalf("base endpoint: %v, want status %d", err, s.baseStatus)
			}
			if _, _, err := g.Authorize(manifestRequest(t, alice), "r.test", "team/app", "manifest", "latest"); err != nil {
				t.Fatalf("alice refused: %v", err)
			}
			if u, ok := g.ProxyUser(alice); u != s.proxyUser || ok != s.proxyUserSet {
				t.Fatalf("ProxyUser(alice) = %q, %v; want %q, %v", u, ok, s.proxyUser, s.proxyUserSet)
			}
			if u, ok := g.ProxyUser(basicHeader("alice", "wrong")); ok {
				t.Fatalf("ProxyUser with a wrong password = %q", u)
			}
		})
	}
}

// TestGuardSwapConcurrent: requests authorized while the policy is swapped
// again and again each see one whole configuration, never the policy of
// one and the credential passing of the other (run with -race).
func TestGuardSwapConcurrent(t *testing.T) {
	t.Parallel()
	open, closed := guardPolicies(t)
	g := NewGuard(open, true)
	// Hundreds of refused logins from one address: the failed-login limit
	// (TestGuardLimitsFailedLogins) is not what this test is about.
	g.LimitLogins(0, 0)
	bob := basicHeader("bob", "bob-registry-pw")
	const readers, rounds = 4, 200
	stop := make(chan struct{})
	swapped := make(chan struct{})
	go func() { // swaps until the readers are done
		defer close(swapped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				g.Swap(closed, false)
			} else {
				g.Swap(open, true)
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan string, readers)
	for range readers {
		wg.Go(func() {
			for range rounds {
				ctx, _, err := g.Authorize(manifestRequest(t, bob), "r.test", "team/app", "manifest", "latest")
				if _, passed := credentialsFrom(ctx); err == nil && !passed {
					errs <- "let through by the open policy without passing the client's credentials: half of each configuration"
					return
				}
				if err != nil && oci.StatusOf(err) != http.StatusUnauthorized {
					errs <- "unexpected refusal: " + err.Error()
					return
				}
				g.ProxyUser(bob)
				if err := g.AuthorizeBase(manifestRequest(t, "")); err != nil && oci.StatusOf(err) != http.StatusUnauthorized {
					errs <- "unexpected base refusal: " + err.Error()
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-swapped
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// TestGuardNeedsPolicy: a nil policy is a programming error, caught at
// once rather than on the first request.
func TestGuardNeedsPolicy(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Fatal("NewGuard(nil) did not panic")
		}
	}()
	NewGuard(nil, false)
}
