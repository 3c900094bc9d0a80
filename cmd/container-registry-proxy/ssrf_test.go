package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/testreg"
)

// TestHostileUpstreamRedirects: through the running proxy, a registry
// that redirects blob GETs and HEADs to another port on loopback gets its
// clients a 502 OCI error, and the internal service there sees nothing;
// one that redirects to the proxy's metrics listener is refused although
// loopback is opened for it; a registry whose blob storage is on a
// network opened with its allowNetworks is followed there.
func TestHostileUpstreamRedirects(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Length", "15")
		_, _ = io.WriteString(w, "internal secret")
	}))
	t.Cleanup(internal.Close)
	var metricsAddr atomic.Value
	hostile := testreg.Start(t, testreg.Options{TLS: true, RedirectBlob: func(string, string) string { return internal.URL + "/admin" }})
	toMetrics := testreg.Start(t, testreg.Options{TLS: true, RedirectBlob: func(string, string) string { return "http://" + metricsAddr.Load().(string) + "/metrics" }})
	storage := testreg.Start(t, testreg.Options{TLS: true, BlobRedirect: true})
	bad := hostile.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 4096))
	self := toMetrics.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 4096))
	good := storage.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 4096))
	addr, logs, _, _ := runProxy(t, fmt.Sprintf(`
dockerHub: false
metricsListen: 127.0.0.1:0
registries:
  - host: hostile.test
    endpoint: %s
    caFile: %s
  - host: metrics.test
    endpoint: %s
    caFile: %s
    allowNetworks: [127.0.0.0/8]
  - host: storage.test
    endpoint: %s
    caFile: %s
    allowNetworks: [127.0.0.0/8]
`, hostile.URL, hostile.CAFile, toMetrics.URL, toMetrics.CAFile, storage.URL, storage.CAFile))
	m := regexp.MustCompile(`msg="serving /metrics on the metrics listener" listen="?([0-9.:]+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no metrics listener in the log:\n%s", logs)
	}
	metricsAddr.Store(m[1])
	base := "http://" + addr + "/v2/"
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		status, hdr, body := send(t, method, base+"hostile.test/team/app/blobs/"+bad.Layers[0].Digest.String())
		if status != http.StatusBadGateway || hdr.Get("Content-Length") == "15" || strings.Contains(body, "internal secret") {
			t.Fatalf("%s through a redirect to loopback: %d %v %s", method, status, hdr, body)
		}
		if method == http.MethodGet && !strings.Contains(body, `"code":"UNAVAILABLE"`) {
			t.Fatalf("GET answer is no OCI error: %s", body)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the internal service got %d requests, want 0; proxy log:\n%s", n, logs)
	}
	status, _, body := send(t, http.MethodGet, base+"metrics.test/team/app/blobs/"+self.Layers[0].Digest.String())
	if status != http.StatusBadGateway || !strings.Contains(body, "one of the proxy's own listeners") {
		t.Fatalf("redirect to the metrics listener: %d %s", status, body)
	}
	status, _, body = send(t, http.MethodGet, base+"storage.test/team/app/blobs/"+good.Layers[0].Digest.String())
	if sum := sha256.Sum256([]byte(body)); status != http.StatusOK || "sha256:"+hex.EncodeToString(sum[:]) != good.Layers[0].Digest.String() {
		t.Fatalf("blob from opened storage: %d, %d bytes; proxy log:\n%s", status, len(body), logs)
	}
	if storage.Count(http.MethodGet, testreg.KindCDN) != 1 {
		t.Fatalf("the opened storage got %d GETs, want 1", storage.Count(http.MethodGet, testreg.KindCDN))
	}
}

// send sends one request and returns the status, header and body.
func send(t *testing.T, method, u string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, u, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// maxLoopHops is where the looping upstream of TestRedirectLoopToTheProxy
// stops redirecting, so that a proxy without loop protection still ends.
const maxLoopHops = 40

// TestRedirectLoopToTheProxy: an upstream that redirects every blob GET
// to the proxy's own /v2/ URL with a new digest each time — directly, or
// through a TCP forwarder standing for a load balancer — costs one
// upstream request per client request: the proxy never dials itself and
// answers its own requests that come back 508, so the client gets a 502
// and goroutines and descriptors return to where they were. Not parallel:
// it counts the process's goroutines and descriptors.
func TestRedirectLoopToTheProxy(t *testing.T) {
	var target atomic.Value // host:port the upstream redirects to
	var hops atomic.Int64
	reg := testreg.Start(t, testreg.Options{TLS: true, RedirectBlob: func(_, _ string) string {
		if hops.Add(1) > maxLoopHops {
			return ""
		}
		return "http://" + target.Load().(string) + "/v2/loop.test/team/app/blobs/" + randomDigest(t)
	}})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 1024))
	addr, logs, _, _ := runProxy(t, fmt.Sprintf(`
dockerHub: false
registries:
  - host: loop.test
    endpoint: %s
    caFile: %s
    # A load balancer in front of the proxy lives on an opened network.
    allowNetworks: [127.0.0.0/8]
`, reg.URL, reg.CAFile))
	fwd := startForwarder(t, addr)
	for _, tc := range []struct{ name, target string }{{"own address", addr}, {"through a forwarder", fwd.addr}} {
		t.Run(tc.name, func(t *testing.T) {
			target.Store(tc.target)
			// Warm up: the upstream connection exists before the baseline.
			if status, _, body := send(t, http.MethodGet, "http://"+addr+"/v2/loop.test/team/app/manifests/v1"); status != http.StatusOK {
				t.Fatalf("manifest: %d %s", status, body)
			}
			goroutines, fds := runtime.NumGoroutine(), openFDs(t)
			hops.Store(0)
			status, _, body := send(t, http.MethodGet, "http://"+addr+"/v2/loop.test/team/app/blobs/"+img.Layers[0].Digest.String())
			if status != http.StatusBadGateway || !strings.Contains(body, `"code":"UNAVAILABLE"`) {
				t.Fatalf("looping blob: %d %s; proxy log:\n%s", status, body, logs)
			}
			if n := hops.Load(); n != 1 {
				t.Fatalf("the upstream was asked %d times for blobs, want 1; proxy log:\n%s", n, logs)
			}
			fwd.closeConns()
			settled(t, goroutines, fds)
		})
	}
	if !strings.Contains(logs.String(), "request loop refused") {
		t.Fatalf("no loop was refused through the forwarder; proxy log:\n%s", logs)
	}
}

// randomDigest is a sha256 digest of nothing in particular.
func randomDigest(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Error(err)
	}
	return "sha256:" + hex.EncodeToString(b)
}

// settled waits (up to 20 s, polling) until the process's goroutines and
// open descriptors are back within a few of goroutines and fds.
func settled(t *testing.T, goroutines, fds int) {
	t.Helper()
	const slack = 5
	var g, f int
	for range 200 {
		g, f = runtime.NumGoroutine(), openFDs(t)
		if g <= goroutines+slack && f <= fds+slack {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("goroutines %d (baseline %d), descriptors %d (baseline %d): not back", g, goroutines, f, fds)
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// forwarder is a TCP forwarder to the proxy on another loopback port: a
// load balancer, as far as the proxy can tell.
type forwarder struct {
	addr  string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startForwarder(t *testing.T, to string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{addr: ln.Addr().String(), ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			f.track(c, up)
			f.wg.Add(2)
			go f.pipe(c, up)
			go f.pipe(up, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.closeConns()
		f.wg.Wait()
	})
	return f
}

func (f *forwarder) track(cs ...net.Conn) {
	f.mu.Lock()
	f.conns = append(f.conns, cs...)
	f.mu.Unlock()
}

func (f *forwarder) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// closeConns closes every forwarded connection.
func (f *forwarder) closeConns() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}
