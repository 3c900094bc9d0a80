package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newKeychain(t *testing.T, opts KeychainOptions) *Keychain {
	t.Helper()
	k, err := NewKeychain(opts)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// lookupWant is one expected Lookup answer.
type lookupWant struct {
	host string
	want Credentials
	ok   bool
}

func checkLookups(t *testing.T, k *Keychain, wants []lookupWant) {
	t.Helper()
	for _, w := range wants {
		t.Run(w.host, func(t *testing.T) {
			got, ok, err := k.Lookup(t.Context(), w.host)
			if err != nil || ok != w.ok || got != w.want {
				t.Fatalf("Lookup(%q) = %v, %v, %v; want %v, %v", w.host, got, ok, err, w.want, w.ok)
			}
		})
	}
}

func TestKeychainEntries(t *testing.T) {
	t.Parallel()
	pw := writeTemp(t, "pw", "from-file\n")
	crlf := writeTemp(t, "pw2", "crlf\r\n\n")
	hub := Credentials{Username: "hub", Password: "hubpw"}
	k := newKeychain(t, KeychainOptions{Entries: []Entry{
		{Host: "index.docker.io", Username: "hub", Password: "hubpw"},
		{Host: "registry-1.docker.io", Username: "loser", Password: "second entry for the same host"},
		{Host: "auth.docker.io", Username: "realm", Password: "realmpw"},
		{Host: "gitlab.com", Username: "gl", Password: "glpat"},
		{Host: "Quay.IO:443", Username: "robot", PasswordFile: pw},
		{Host: "registry.local:5000", Username: "local", Password: "port"},
		{Host: "registry.local", Username: "local", Password: "noport"},
		{Host: "crlf.example", Username: "c", PasswordFile: crlf},
	}})
	checkLookups(t, k, []lookupWant{
		{host: "docker.io", want: hub, ok: true},
		{host: "index.docker.io", want: hub, ok: true},
		{host: "registry-1.docker.io:443", want: hub, ok: true},
		{host: "auth.docker.io", want: Credentials{Username: "realm", Password: "realmpw"}, ok: true},
		{host: "gitlab.com", want: Credentials{Username: "gl", Password: "glpat"}, ok: true},
		{host: "registry.gitlab.com", ok: false},
		{host: "quay.io", want: Credentials{Username: "robot", Password: "from-file"}, ok: true},
		{host: "registry.local:5000", want: Credentials{Username: "local", Password: "port"}, ok: true},
		{host: "registry.local:6000", want: Credentials{Username: "local", Password: "noport"}, ok: true},
		{host: "gitlab.com:8443", want: Credentials{Username: "gl", Password: "glpat"}, ok: true},
		{host: "crlf.example", want: Credentials{Username: "c", Password: "crlf\r\n"}, ok: true},
		{host: "ghcr.io", ok: false},
	})
	if !k.Has("docker.io") || !k.Has("quay.io") || k.Has("ghcr.io") {
		t.Error("Has does not match the entries")
	}
}

func TestKeychainErrors(t *testing.T) {
	t.Parallel()
	const secret = "do-not-print-me"
	badJSON := writeTemp(t, "config.json", `{"auths": {"quay.io": {"auth": "`+secret+`"}}}`)
	badHelper := writeTemp(t, "config2.json", `{"credHelpers": {"quay.io": "../../bin/sh"}}`)
	syntax := writeTemp(t, "config3.json", `{"auths": {"quay.io": `+secret)
	tests := []struct {
		name string
		opts KeychainOptions
		want string
	}{
		{name: "missing password file", opts: KeychainOptions{Entries: []Entry{{Host: "quay.io", Username: "u", PasswordFile: "/nonexistent/pw"}}}, want: "quay.io: password file /nonexistent/pw"},
		{name: "bad host", opts: KeychainOptions{Entries: []Entry{{Host: "bad host", Password: secret}}}, want: "entry 0"},
		{name: "missing docker config", opts: KeychainOptions{DockerConfig: "/nonexistent/config.json"}, want: "/nonexistent/config.json"},
		{name: "auth not base64", opts: KeychainOptions{DockerConfig: badJSON}, want: `auths["quay.io"].auth`},
		{name: "helper with a path", opts: KeychainOptions{DockerConfig: badHelper}, want: "invalid helper name"},
		{name: "syntax error", opts: KeychainOptions{DockerConfig: syntax}, want: "JSON syntax error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewKeychain(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("err %q shows a secret", err)
			}
		})
	}
}

// TestKeychainPasswordFileChange: a changed file is picked up after the
// check interval (or at once after Invalidate), not before; a file that
// vanishes keeps the last password.
func TestKeychainPasswordFileChange(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	pw := writeTemp(t, "pw", "one\n")
	k := newKeychain(t, KeychainOptions{Now: clock.Now, Entries: []Entry{{Host: "quay.io", Username: "robot", PasswordFile: pw}}})
	lookup := func() string {
		t.Helper()
		c, ok, err := k.Lookup(t.Context(), "quay.io")
		if err != nil || !ok {
			t.Fatalf("Lookup: %v %v", ok, err)
		}
		return c.Password
	}
	write := func(s string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(pw, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(pw, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name string
		do   func()
		want string
	}{
		{name: "initial", want: "one"},
		{name: "changed, within the interval", do: func() { write("two\n", time.Now().Add(time.Minute)) }, want: "one"},
		{name: "after the interval", do: func() { clock.Advance(fileCheckInterval) }, want: "two"},
		{name: "same size and mtime is not re-read", do: func() {
			fi, _ := os.Stat(pw)
			write("TWO\n", fi.ModTime())
			clock.Advance(fileCheckInterval)
		}, want: "two"},
		{name: "invalidate rechecks at once", do: func() {
			write("three\n", time.Now().Add(2*time.Minute))
			k.Invalidate("quay.io")
		}, want: "three"},
		{name: "vanished file keeps the last password", do: func() {
			_ = os.Remove(pw)
			clock.Advance(fileCheckInterval)
		}, want: "three"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.do != nil {
				s.do()
			}
			if got := lookup(); got != s.want {
				t.Fatalf("password = %q, want %q", got, s.want)
			}
		})
	}
}

func TestKeychainDockerConfigAuths(t *testing.T) {
	t.Parallel()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cfg := writeTemp(t, "config.json", fmt.Sprintf(`{
  "auths": {
    "https://index.docker.io/v1/": {"auth": %q},
    "quay.io": {"username": "robot", "password": "plain"},
    "https://ghcr.io": {"auth": %q},
    "http://localhost:5000/v2/": {"auth": %q},
    "acr.example.io": {"auth": %q, "identitytoken": "refresh-me"},
    "placeholder.example": {}
  }
}`, b64("hubuser:hub:pw"), b64("gh:ghp"), b64("l:lp"), b64("00000000-0000-0000-0000-000000000000:")))
	k := newKeychain(t, KeychainOptions{
		Entries:      []Entry{{Host: "quay.io", Username: "entry", Password: "wins"}},
		DockerConfig: cfg,
	})
	checkLookups(t, k, []lookupWant{
		{host: "registry-1.docker.io", want: Credentials{Username: "hubuser", Password: "hub:pw"}, ok: true},
		{host: "quay.io", want: Credentials{Username: "entry", Password: "wins"}, ok: true},
		{host: "ghcr.io", want: Credentials{Username: "gh", Password: "ghp"}, ok: true},
		{host: "localhost:5000", want: Credentials{Username: "l", Password: "lp"}, ok: true},
		{host: "acr.example.io", want: Credentials{Username: IdentityTokenUsername, Password: "refresh-me"}, ok: true},
		{host: "placeholder.example", ok: false},
		{host: "auth.docker.io", ok: false},
	})
}

// helperScript installs docker-credential-test in a temporary directory
// put first on PATH. It appends every server it is asked about to a calls
// file and answers for registry.test:5000 (as host or https URL) and for
// Docker Hub's legacy key with the user in the user file and the secret
// in the secret file; anything else is "not found".
type helperScript struct {
	dir, calls, user, secret string
}

func installHelper(t *testing.T) *helperScript {
	t.Helper()
	h := &helperScript{dir: t.TempDir()}
	h.calls = filepath.Join(h.dir, "calls")
	h.user = filepath.Join(h.dir, "user")
	h.secret = filepath.Join(h.dir, "secret")
	h.set(t, "helper-user", "helper-secret-1")
	script := `#!/bin/sh
[ "$1" = get ] || exit 2
server=$(cat)
echo "$server" >> '` + h.calls + `'
case "$server" in
registry.test:5000|https://registry.test:5000|https://index.docker.io/v1/)
	printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}\n' "$server" "$(cat '` + h.user + `')" "$(cat '` + h.secret + `')"
	;;
big.test)
	head -c 70000 /dev/zero | tr '\0' x
	;;
slow.test)
	exec sleep 30
	;;
broken.test)
	echo "something secret went wrong" >&2
	exit 3
	;;
*)
	echo "credentials not found in native keychain"
	exit 1
	;;
esac
`
	if err := os.WriteFile(filepath.Join(h.dir, "docker-credential-test"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", h.dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return h
}

func (h *helperScript) set(t *testing.T, user, secret string) {
	t.Helper()
	if err := os.WriteFile(h.user, []byte(user), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.secret, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
}

// callList returns the servers the helper was asked about so far.
func (h *helperScript) callList(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(h.calls)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestKeychainCredentialHelper(t *testing.T) {
	h := installHelper(t)
	clock := newFakeClock()
	cfg := writeTemp(t, "config.json", `{"credHelpers": {"https://registry.test:5000": "test", "big.test": "test", "slow.test": "test", "broken.test": "test"}, "credsStore": "test"}`)
	k := newKeychain(t, KeychainOptions{DockerConfig: cfg, Now: clock.Now, HelperTimeout: 2 * time.Second})
	ctx := t.Context()
	calls := 0
	newCalls := func() []string {
		all := h.callList(t)
		n := all[calls:]
		calls = len(all)
		return n
	}
	helperCreds := func(secret string) Credentials { return Credentials{Username: "helper-user", Password: secret} }

	steps := []struct {
		name      string
		do        func()
		host      string
		want      Credentials
		ok        bool
		errWant   string
		wantCalls []string
	}{
		{name: "credHelpers entry runs the helper", host: "registry.test:5000", want: helperCreds("helper-secret-1"), ok: true,
			wantCalls: []string{"registry.test:5000"}},
		{name: "answer cached", host: "registry.test:5000", want: helperCreds("helper-secret-1"), ok: true},
		{name: "cached until the TTL", do: func() { h.set(t, "helper-user", "helper-secret-2"); clock.Advance(DefaultHelperTTL - time.Second) },
			host: "registry.test:5000", want: helperCreds("helper-secret-1"), ok: true},
		{name: "after the TTL the helper runs again", do: func() { clock.Advance(time.Second) },
			host: "registry.test:5000", want: helperCreds("helper-secret-2"), ok: true, wantCalls: []string{"registry.test:5000"}},
		{name: "invalidate runs it again at once", do: func() { h.set(t, "helper-user", "helper-secret-3"); k.Invalidate("registry.test:5000") },
			host: "registry.test:5000", want: helperCreds("helper-secret-3"), ok: true, wantCalls: []string{"registry.test:5000"}},
		{name: "credsStore for Docker Hub uses the legacy key", host: "index.docker.io", want: helperCreds("helper-secret-3"), ok: true,
			wantCalls: []string{"https://index.docker.io/v1/"}},
		{name: "credsStore not found tries both forms", host: "quay.io", ok: false,
			wantCalls: []string{"quay.io", "https://quay.io"}},
		{name: "not found is cached", host: "quay.io", ok: false},
		{name: "identity token", do: func() { h.set(t, "<token>", "refresh-token") },
			host: "registry.test:5000", want: helperCreds("helper-secret-3"), ok: true},
		{name: "identity token after invalidate", do: func() { k.Invalidate("registry.test:5000") },
			host: "registry.test:5000", want: Credentials{Username: IdentityTokenUsername, Password: "refresh-token"}, ok: true, wantCalls: []string{"registry.test:5000"}},
		{name: "output bounded", host: "big.test", errWant: "more than 65536 bytes", wantCalls: []string{"big.test"}},
		{name: "failure names the exit status, not the output", host: "broken.test", errWant: "exit status 3", wantCalls: []string{"broken.test"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.do != nil {
				s.do()
			}
			got, ok, err := k.Lookup(ctx, s.host)
			switch {
			case s.errWant != "":
				if err == nil || !strings.Contains(err.Error(), s.errWant) || !errors.Is(err, ErrHelper) {
					t.Fatalf("err = %v, want ErrHelper containing %q", err, s.errWant)
				}
				if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "xxxx") {
					t.Fatalf("err %q shows the helper's output", err)
				}
			case err != nil || ok != s.ok || got != s.want:
				t.Fatalf("Lookup = %v, %v, %v; want %v, %v", got, ok, err, s.want, s.ok)
			}
			if c := newCalls(); strings.Join(c, " ") != strings.Join(s.wantCalls, " ") {
				t.Fatalf("helper calls %q, want %q", c, s.wantCalls)
			}
		})
	}
}

// TestKeychainHelperConcurrent: 50 concurrent lookups of a cold host run
// the helper once.
func TestKeychainHelperConcurrent(t *testing.T) {
	h := installHelper(t)
	cfg := writeTemp(t, "config.json", `{"credHelpers": {"registry.test:5000": "test"}}`)
	k := newKeychain(t, KeychainOptions{DockerConfig: cfg})
	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, ok, err := k.Lookup(t.Context(), "registry.test:5000")
			if err != nil || !ok || c.Password != "helper-secret-1" {
				errs <- fmt.Sprintf("Lookup = %v %v %v", c, ok, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c := h.callList(t); len(c) != 1 {
		t.Fatalf("helper ran %d times, want 1: %q", len(c), c)
	}
}

// TestKeychainHelperTimeout: a helper that does not answer within
// HelperTimeout is stopped, and the lookup fails naming the timeout.
func TestKeychainHelperTimeout(t *testing.T) {
	h := installHelper(t)
	cfg := writeTemp(t, "config.json", `{"credHelpers": {"slow.test": "test"}}`)
	k := newKeychain(t, KeychainOptions{DockerConfig: cfg, HelperTimeout: 200 * time.Millisecond})
	_, _, err := k.Lookup(t.Context(), "slow.test")
	if !errors.Is(err, ErrHelper) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v, want ErrHelper saying it timed out", err)
	}
	if c := h.callList(t); len(c) != 1 || c[0] != "slow.test" {
		t.Fatalf("helper calls %q, want one for slow.test", c)
	}
}

// TestKeychainCovers: a registry is covered by an entry for itself, for a
// domain it is under (its token realm's), or, for Docker Hub, for
// auth.docker.io; never by an entry for a sibling or a mere suffix.
func TestKeychainCovers(t *testing.T) {
	t.Parallel()
	kc, err := NewKeychain(KeychainOptions{Entries: []Entry{
		{Host: "gitlab.com", Username: "u", Password: "p"},
		{Host: "quay.io", Username: "u", Password: "p"},
		{Host: "auth.docker.io", Username: "u", Password: "p"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"registry.gitlab.com":   true,
		"quay.io":               true,
		"docker.io":             true,
		"index.docker.io":       true,
		"ghcr.io":               false,
		"notgitlab.com":         false,
		"registry.quay.io.evil": false,
	} {
		if got := kc.Covers(host); got != want {
			t.Errorf("Covers(%q) = %v, want %v", host, got, want)
		}
	}
}
