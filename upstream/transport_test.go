package upstream

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/internal/netguard"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/gmarcy/container-registry-proxy/oci"
)

// redirector is an upstream that answers every request with 307 to
// location(path).
func redirector(location func(path string) string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Location", location(req.URL.Path))
		w.WriteHeader(http.StatusTemporaryRedirect)
	}
}

// TestRedirectToInternalAddress: an upstream on testutil.LoopbackNetworks that redirects
// blob GETs and HEADs, manifests and listings to another testutil.LoopbackNetworks port,
// in every spelling, gets a 502 for each and the internal service sees
// no request; a HEAD never reports the internal service's status or
// length. With the testutil.LoopbackNetworks network opened (allowNetworks) the same
// redirect is followed, since private blob storage is legitimate.
func TestRedirectToInternalAddress(t *testing.T) {
	t.Parallel()
	internal, hits := testutil.InternalService(t)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(internal.URL, "http://"))
	// Spellings the resolver reads itself (no DNS query); the netguard
	// table has the rest.
	t.Run("spellings", func(t *testing.T) {
		for _, host := range []string{"127.0.0.1", "localhost", "127.1", "2130706433", "[::ffff:127.0.0.1]", "[::1]", "127.0.0.2", "0.0.0.0"} {
			t.Run(host, func(t *testing.T) {
				t.Parallel()
				target := "http://" + host + ":" + port + "/data?X-Amz-Signature=topsecret"
				r, _ := newTestRegistry(t, redirector(func(string) string { return target }), Options{})
				rc, size, err := r.Blob(t.Context(), "team/app", testDigest)
				if err == nil {
					b, _ := io.ReadAll(rc)
					rc.Close()
					t.Fatalf("GET followed the redirect to %s: %q (%d bytes announced)", target, b, size)
				}
				wantRefused(t, err)
				size, err = r.StatBlob(t.Context(), "team/app", testDigest)
				if err == nil || size != -1 {
					t.Fatalf("HEAD answered size %d err %v, want no size and an error", size, err)
				}
				wantRefused(t, err)
				if _, _, err := r.Manifest(t.Context(), "team/app", "latest", true); err == nil {
					t.Fatal("manifest HEAD followed the redirect")
				}
			})
		}
	})
	if n := hits.Load(); n != 0 {
		t.Fatalf("the internal service got %d requests, want 0", n)
	}
	r, _ := newTestRegistry(t, redirector(func(string) string { return internal.URL + "/data" }), Options{AllowNetworks: testutil.LoopbackNetworks})
	size, err := r.StatBlob(t.Context(), "team/app", testDigest)
	if err != nil || size != 15 || hits.Load() != 1 {
		t.Fatalf("HEAD with testutil.LoopbackNetworks allowed: size %d err %v, internal requests %d", size, err, hits.Load())
	}
}

// wantRefused checks err is the 502 of a refused address, naming neither
// the redirect's query nor the internal service's answer.
func wantRefused(t *testing.T, err error) {
	t.Helper()
	if oci.StatusOf(err) != http.StatusBadGateway {
		t.Fatalf("err = %v (status %d), want 502", err, oci.StatusOf(err))
	}
	// A spelling the resolver does not read as an address fails in DNS:
	// also a 502, and no connection either.
	var dnsErr *net.DNSError
	if !errors.Is(err, ErrForbiddenAddress) && !errors.As(err, &dnsErr) {
		t.Fatalf("err = %v, want ErrForbiddenAddress", err)
	}
	if strings.Contains(err.Error(), "topsecret") || strings.Contains(err.Error(), "internal secret") {
		t.Fatalf("err %q shows the redirect's query or the internal answer", err)
	}
}

// TestRedirectToTheEndpoint: hops back to the endpoint's own address and
// port (relative Locations, the registry's own storage path) are
// followed.
func TestRedirectToTheEndpoint(t *testing.T) {
	t.Parallel()
	r, _ := newTestRegistry(t, func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/storage/blob" {
			_, _ = io.WriteString(w, "blob")
			return
		}
		http.Redirect(w, req, "/storage/blob", http.StatusTemporaryRedirect)
	}, Options{})
	rc, _, err := r.Blob(t.Context(), "team/app", testDigest)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "blob" {
		t.Fatalf("body %q", b)
	}
}

// TestRedirectToOwnListener: the proxy's own listeners are never reached,
// even with their network opened and when the endpoint is on the same
// address.
func TestRedirectToOwnListener(t *testing.T) {
	t.Parallel()
	own, hits := testutil.InternalService(t)
	self := &netguard.Self{}
	ownAddr, err := net.ResolveTCPAddr("tcp", strings.TrimPrefix(own.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	self.Add(ownAddr)
	r, _ := newTestRegistry(t, redirector(func(p string) string { return own.URL + p }), Options{AllowNetworks: testutil.LoopbackNetworks, Self: self})
	_, err = r.StatBlob(t.Context(), "team/app", testDigest)
	wantRefused(t, err)
	// Configured as the endpoint itself: refused too.
	direct := newRegistryFor(t, own.URL, Options{AllowNetworks: testutil.LoopbackNetworks, Self: self})
	_, err = direct.StatBlob(t.Context(), "team/app", testDigest)
	wantRefused(t, err)
	if n := hits.Load(); n != 0 {
		t.Fatalf("the proxy's own listener got %d requests, want 0", n)
	}
}

// TestRealmOnLoopbackName: a registry named localhost:<port> whose
// challenge names a realm on localhost at another port sends it no
// credentials (the realm rule compares ports; the address policy refuses
// the port besides).
func TestRealmOnLoopbackName(t *testing.T) {
	t.Parallel()
	var realmHits atomic.Int64
	realm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		realmHits.Add(1)
		_, _ = io.WriteString(w, `{"token":"t0ken"}`)
	}))
	t.Cleanup(realm.Close)
	_, realmPort, _ := net.SplitHostPort(strings.TrimPrefix(realm.URL, "http://"))
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="http://localhost:`+realmPort+`/token",service="registry"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(reg.Close)
	_, regPort, _ := net.SplitHostPort(strings.TrimPrefix(reg.URL, "http://"))
	r := newRegistryFor(t, "http://localhost:"+regPort, Options{Host: "localhost:" + regPort, Credentials: auth.Credentials{Username: "robot", Password: "robot-pw"}})
	_, _, err := r.Manifest(t.Context(), "team/app", "latest", false)
	if oci.StatusOf(err) != http.StatusBadGateway {
		t.Fatalf("err = %v, want 502", err)
	}
	if n := realmHits.Load(); n != 0 {
		t.Fatalf("the realm on localhost:%s got %d requests, want 0", realmPort, n)
	}
}

// TestViaMarksEveryRequest: with a Loop, every request (the first, each
// redirect hop, the token request) carries the proxy's Via entry, after
// the hops of the request being served.
func TestViaMarksEveryRequest(t *testing.T) {
	t.Parallel()
	loop := netguard.NewLoop()
	var vias []string
	seen := make(chan string, 8)
	r, _ := newTestRegistry(t, func(w http.ResponseWriter, req *http.Request) {
		seen <- req.URL.Path + " " + req.Header.Get("Via")
		switch {
		case req.URL.Path == "/token":
			_, _ = io.WriteString(w, `{"token":"t0ken"}`)
		case req.Header.Get("Authorization") == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+req.Host+`/token"`)
			w.WriteHeader(http.StatusUnauthorized)
		case req.URL.Path == "/storage":
			_, _ = io.WriteString(w, "blob")
		default:
			http.Redirect(w, req, "/storage", http.StatusTemporaryRedirect)
		}
	}, Options{Loop: loop})
	other := netguard.NewLoop()
	ctx := netguard.WithHops(t.Context(), []string{other.Token()})
	rc, _, err := r.Blob(ctx, "team/app", testDigest)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	close(seen)
	for s := range seen {
		vias = append(vias, s)
	}
	want := "1.1 " + other.Token() + ", 1.1 " + loop.Token()
	if len(vias) < 3 {
		t.Fatalf("requests %q: want the blob, the token and the storage hop", vias)
	}
	for _, v := range vias {
		if !strings.HasSuffix(v, " "+want) {
			t.Errorf("request %q: want Via %q", v, want)
		}
	}
}

// TestGuardedProxy: through a forward proxy (HTTPS_PROXY) the proxy's
// own address is trusted, and targets the forward proxy would resolve
// are judged by their spelling.
func TestGuardedProxy(t *testing.T) {
	t.Parallel()
	corp, _ := url.Parse("http://10.0.0.5:3128")
	g := netguard.New(netguard.Options{Endpoint: "registry.corp:443"})
	proxy := guardedProxy("registry.corp", g, func(*http.Request) (*url.URL, error) { return corp, nil })
	for target, refused := range map[string]bool{
		"https://registry.corp/v2/":          false,
		"https://cdn.example.com/blob":       false,
		"http://127.1:8080/":                 true,
		"http://localhost:8080/":             true,
		"http://169.254.169.254/latest":      true,
		"http://metadata.google.internal/":   true,
		"https://[fd00::1]/":                 true,
		"https://192.168.1.1/":               true,
		"http://[::ffff:10.0.0.1]:9000/blob": true,
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, target, nil)
		pu, err := proxy(req)
		switch {
		case refused && (err == nil || !errors.Is(err, ErrForbiddenAddress)):
			t.Errorf("%s through the forward proxy: %v %v, want refused", target, pu, err)
		case !refused && (err != nil || pu != corp):
			t.Errorf("%s through the forward proxy: %v %v, want the proxy", target, pu, err)
		}
	}
	if err := g.Check(t.Context(), "10.0.0.5:3128", netip.MustParseAddrPort("10.0.0.5:3128")); err != nil {
		t.Fatalf("dialling the forward proxy: %v", err)
	}
	none := guardedProxy("registry.corp", g, func(*http.Request) (*url.URL, error) { return nil, nil })
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://127.0.0.1/", nil)
	if pu, err := none(req); pu != nil || err != nil {
		t.Fatalf("without a forward proxy: %v %v (the dial guard judges direct connections)", pu, err)
	}
}
