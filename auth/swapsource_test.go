package auth

import (
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"
)

// TestSwapSourceTransport: a registry client whose keychain is swapped
// uses the new credentials on its next request, without being rebuilt.
func TestSwapSourceTransport(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "robot" || p != "new-pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="r"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	keychainWith := func(pw string) *Keychain {
		return newKeychain(t, KeychainOptions{Entries: []Entry{{Host: "registry.test", Username: "robot", Password: pw}}})
	}
	src := NewSwapSource(keychainWith("old-pw"))
	c := &http.Client{Transport: &Transport{Base: srv.Client().Transport, Host: hostOf(t, srv.URL), Registry: "registry.test", Keychain: src}}
	steps := []struct {
		name string
		swap *Keychain
		want int
	}{
		{name: "old credentials refused", want: http.StatusUnauthorized},
		{name: "swapped in", swap: keychainWith("new-pw"), want: http.StatusOK},
		{name: "swapped out", swap: keychainWith("old-pw"), want: http.StatusUnauthorized},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.swap != nil {
				src.Swap(s.swap)
			}
			resp, err := get(t, c, srv.URL+"/v2/team/app/manifests/latest")
			if err != nil || resp.StatusCode != s.want {
				t.Fatalf("%v %v, want status %d", resp, err, s.want)
			}
		})
	}
}

// TestSwapSourceInvalidate: Invalidate reaches the keychain in force, so
// a changed password file is read again at once.
func TestSwapSourceInvalidate(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	pw := writeTemp(t, "pw", "one\n")
	src := NewSwapSource(nil)
	src.Swap(newKeychain(t, KeychainOptions{Now: clock.Now, Entries: []Entry{{Host: "quay.io", Username: "robot", PasswordFile: pw}}}))
	lookup := func() string {
		t.Helper()
		c, ok, err := src.Lookup(t.Context(), "quay.io")
		if err != nil || !ok {
			t.Fatalf("Lookup: %v %v", ok, err)
		}
		return c.Password
	}
	if got := lookup(); got != "one" {
		t.Fatalf("password %q, want one", got)
	}
	if err := os.WriteFile(pw, []byte("rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(pw, time.Now().Add(time.Minute), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := lookup(); got != "one" {
		t.Fatalf("password %q before Invalidate, want the one read within the check interval", got)
	}
	src.Invalidate("quay.io")
	if got := lookup(); got != "rotated" {
		t.Fatalf("password %q after Invalidate, want rotated", got)
	}
}

// TestSwapSourceConcurrent: lookups during swaps get the credentials of
// one keychain or the other (run with -race); a nil keychain holds none.
func TestSwapSourceConcurrent(t *testing.T) {
	t.Parallel()
	a := newKeychain(t, KeychainOptions{Entries: []Entry{{Host: "registry.test", Username: "a", Password: "pa"}}})
	b := newKeychain(t, KeychainOptions{Entries: []Entry{{Host: "registry.test", Username: "b", Password: "pb"}}})
	src := NewSwapSource(a)
	stop, swapped := make(chan struct{}), make(chan struct{})
	go func() { // swaps until the lookups are done
		defer close(swapped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 3 {
			case 0:
				src.Swap(b)
			case 1:
				src.Swap(nil)
			default:
				src.Swap(a)
			}
		}
	}()
	errs := make(chan string, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 500 {
				c, ok, err := src.Lookup(t.Context(), "registry.test")
				switch {
				case err != nil:
					errs <- err.Error()
					return
				case ok && c != (Credentials{Username: "a", Password: "pa"}) && c != (Credentials{Username: "b", Password: "pb"}):
					errs <- "credentials of neither keychain: " + c.String()
					return
				}
				src.Invalidate("registry.test")
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
	src.Swap(nil)
	if c, ok, err := src.Lookup(t.Context(), "registry.test"); ok || err != nil {
		t.Fatalf("nil keychain: %v, %v, %v; want no credentials", c, ok, err)
	}
}
