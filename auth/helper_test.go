package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// gatedHelper is a docker-credential-gated helper (first on PATH) that
// reports each run on a FIFO and answers only when released through
// another, so a test can act while a run is under way.
type gatedHelper struct {
	calls, started, release string
}

func installGatedHelper(t *testing.T) *gatedHelper {
	t.Helper()
	dir := t.TempDir()
	h := &gatedHelper{calls: filepath.Join(dir, "calls"), started: filepath.Join(dir, "started"), release: filepath.Join(dir, "release")}
	for _, fifo := range []string{h.started, h.release} {
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := `#!/bin/sh
[ "$1" = get ] || exit 2
server=$(cat)
echo "$server" >> '` + h.calls + `'
echo started > '` + h.started + `'
cat '` + h.release + `' > /dev/null
printf '{"ServerURL":"%s","Username":"gated-user","Secret":"gated-secret"}\n' "$server"
`
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-gated"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return h
}

// awaitRun blocks until a helper run has started.
func (h *gatedHelper) awaitRun(t *testing.T) {
	t.Helper()
	if _, err := os.ReadFile(h.started); err != nil {
		t.Fatal(err)
	}
}

// releaseRun lets the running helper answer.
func (h *gatedHelper) releaseRun(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(h.release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runs returns how many times the helper ran.
func (h *gatedHelper) runs(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(h.calls)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return len(strings.Fields(string(b)))
}

// lookupResult is what one Lookup returned.
type lookupResult struct {
	c   Credentials
	ok  bool
	err error
}

func gatedKeychain(t *testing.T) *Keychain {
	t.Helper()
	return newKeychain(t, KeychainOptions{DockerConfig: writeTemp(t, "config.json", `{"credHelpers": {"registry.test:5000": "gated"}}`)})
}

var gatedCreds = Credentials{Username: "gated-user", Password: "gated-secret"}

// TestHelperLeaderHangsUp: the request whose lookup started a credential
// helper hangs up; its lookup fails at once, while the helper goes on and
// the other requests waiting for the same host get its answer. The helper
// runs once.
func TestHelperLeaderHangsUp(t *testing.T) {
	h := installGatedHelper(t)
	k := gatedKeychain(t)

	leaderCtx, hangUp := context.WithCancel(t.Context())
	leader := make(chan lookupResult, 1)
	go func() {
		c, ok, err := k.Lookup(leaderCtx, "registry.test:5000")
		leader <- lookupResult{c, ok, err}
	}()
	h.awaitRun(t)

	const waiters = 8
	results := make(chan lookupResult, waiters)
	for range waiters {
		go func() {
			c, ok, err := k.Lookup(t.Context(), "registry.test:5000")
			results <- lookupResult{c, ok, err}
		}()
	}
	hangUp()
	got := receive(t, leader, "the leader's lookup after it hung up") // before the release
	if !errors.Is(got.err, ErrHelper) || !errors.Is(got.err, context.Canceled) {
		t.Fatalf("leader that hung up got %v, %v, %v; want ErrHelper wrapping context.Canceled", got.c, got.ok, got.err)
	}
	h.releaseRun(t)
	for range waiters {
		if r := <-results; r.err != nil || !r.ok || r.c != gatedCreds {
			t.Fatalf("waiter got %v, %v, %v; want the helper's credentials", r.c, r.ok, r.err)
		}
	}
	if n := h.runs(t); n != 1 {
		t.Fatalf("helper ran %d times, want 1", n)
	}
}

// TestHelperWaiterHangsUp: a request waiting for a helper run another one
// started hangs up; its lookup fails at once, and the run goes on: the
// first request gets the credentials, and they are cached for the next.
func TestHelperWaiterHangsUp(t *testing.T) {
	h := installGatedHelper(t)
	k := gatedKeychain(t)

	leader := make(chan lookupResult, 1)
	go func() {
		c, ok, err := k.Lookup(t.Context(), "registry.test:5000")
		leader <- lookupResult{c, ok, err}
	}()
	h.awaitRun(t)

	waiterCtx, hangUp := context.WithCancel(t.Context())
	waiter := make(chan lookupResult, 1)
	go func() {
		c, ok, err := k.Lookup(waiterCtx, "registry.test:5000")
		waiter <- lookupResult{c, ok, err}
	}()
	hangUp()
	got := receive(t, waiter, "the waiter's lookup after it hung up") // before the release
	if !errors.Is(got.err, ErrHelper) || !errors.Is(got.err, context.Canceled) {
		t.Fatalf("waiter that hung up got %v, %v, %v; want ErrHelper wrapping context.Canceled", got.c, got.ok, got.err)
	}
	h.releaseRun(t)
	if r := <-leader; r.err != nil || !r.ok || r.c != gatedCreds {
		t.Fatalf("leader got %v, %v, %v; want the helper's credentials", r.c, r.ok, r.err)
	}
	if c, ok, err := k.Lookup(t.Context(), "registry.test:5000"); err != nil || !ok || c != gatedCreds || h.runs(t) != 1 {
		t.Fatalf("next lookup got %v, %v, %v after %d helper runs; want the cached credentials after 1", c, ok, err, h.runs(t))
	}
}
