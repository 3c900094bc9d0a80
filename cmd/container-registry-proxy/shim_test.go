package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/internal/testreg"
	"github.com/gmarcy/container-registry-proxy/internal/testutil"
	"github.com/sirupsen/logrus"
)

// runProxy starts the whole proxy from a YAML config on a loopback port.
func runProxy(t *testing.T, yaml string) (addr string, logs *testutil.SyncBuffer, caPool *x509.CertPool, stop func()) {
	t.Helper()
	addr, logs, _, stop, caPool = runProxyFull(t, t.TempDir(), yaml)
	return addr, logs, caPool, stop
}

// runProxyIn is runProxy with the cache under dir/cache, returning the app.
func runProxyIn(t *testing.T, dir, yaml string) (string, *testutil.SyncBuffer, *app, func()) {
	t.Helper()
	addr, logs, a, stop, _ := runProxyFull(t, dir, yaml)
	return addr, logs, a, stop
}

func runProxyFull(t *testing.T, dir, yaml string) (addr string, logs *testutil.SyncBuffer, a *app, stop func(), caPool *x509.CertPool) {
	t.Helper()
	f := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load([]string{"--config", f, "--cache-dir", filepath.Join(dir, "cache"), "--ca-dir", filepath.Join(dir, "ca")}, envMap(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	logs = &testutil.SyncBuffer{}
	log := logrus.New()
	log.SetOutput(logs)
	if cfg.Debug { // as main does
		log.SetLevel(logrus.DebugLevel)
	}
	ctx, cancel := context.WithCancel(t.Context())
	a, err = build(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveOn(ctx, ln, a, log, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	resp, err := http.Get("http://" + ln.Addr().String() + "/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/x-x509-ca-cert" {
		t.Fatalf("/ca.crt Content-Type %q", resp.Header.Get("Content-Type"))
	}
	caPool = x509.NewCertPool()
	if !caPool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("/ca.crt is not a PEM certificate")
	}
	return ln.Addr().String(), logs, a, stop, caPool
}

func proxyClient(addr string, pool *x509.CertPool) *http.Client {
	pu, _ := url.Parse("http://" + addr)
	return &http.Client{Transport: &http.Transport{
		Proxy:             http.ProxyURL(pu),
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}, Timeout: 30 * time.Second}
}

func proxyClientAuth(addr string, pool *x509.CertPool, user, pass string) *http.Client {
	pu, _ := url.Parse("http://" + addr)
	pu.User = url.UserPassword(user, pass)
	return &http.Client{Transport: &http.Transport{
		Proxy:             http.ProxyURL(pu),
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}, Timeout: 30 * time.Second}
}

func TestShimInterceptsIntoTheMirror(t *testing.T) {
	t.Parallel()
	reg := testreg.Start(t, testreg.Options{TLS: true, Auth: testreg.AuthToken})
	img := reg.PushImage(t, "team/app", "v1", testreg.RandomLayer(t, 100_000))
	_, port, _ := net.SplitHostPort(reg.Host)
	host := "registry.test:" + port
	echo := testutil.EchoServer(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	addr, logs, pool, stop := runProxy(t, fmt.Sprintf(`
dockerHub: false
registries:
  - host: %s
    endpoint: %s
    caFile: %s
connect:
  allowPorts: [443, %s]
  allowNetworks: [127.0.0.1/32]
`, host, reg.URL, reg.CAFile, echoPort))
	c := proxyClient(addr, pool)
	get := func(path string, hdr ...string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", "https://"+host+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, _ := get("/v2/")
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("/v2/ through the shim: %d %s", resp.StatusCode, resp.Proto)
	}
	resp, body := get("/v2/team/app/manifests/v1", "Accept", img.MediaType)
	if resp.StatusCode != 200 || !bytes.Equal(body, img.Manifest) || resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("manifest through the shim: %d %q", resp.StatusCode, resp.Header.Get("X-Cache"))
	}
	layer := img.Layers[0]
	for _, want := range []string{"MISS", "HIT"} {
		resp, body = get("/v2/team/app/blobs/" + layer.Digest.String())
		if resp.StatusCode != 200 || !bytes.Equal(body, layer.Bytes) || resp.Header.Get("X-Cache") != want {
			t.Fatalf("blob through the shim: %d %q, want %s\n%s", resp.StatusCode, resp.Header.Get("X-Cache"), want, logs.String())
		}
	}
	resp, body = get("/v2/team/app/blobs/"+layer.Digest.String(), "Range", "bytes=10-19")
	if resp.StatusCode != 206 || !bytes.Equal(body, layer.Bytes[10:20]) {
		t.Fatalf("range through the shim: %d", resp.StatusCode)
	}
	if n := reg.Count("GET", "blob"); n != 1 {
		t.Fatalf("upstream blob GETs = %d", n)
	}

	// CONNECT decisions on the wire.
	cases := []struct {
		target string
		status string
	}{
		{"127.0.0.2:" + port, "403"}, // 127.0.0.1:port is the registry's endpoint: intercepted
		{"[::1]:443", "403"},
		{"localhost:443", "502"}, // loopback is opened by allowNetworks; nothing listens
		{"no-port", "400"},
		{"127.0.0.1:" + echoPort, "200"},
	}
	for _, tc := range cases {
		t.Run("connect "+tc.target, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", tc.target, tc.target)
			br := bufio.NewReader(conn)
			line, _ := br.ReadString('\n')
			if !strings.Contains(line, " "+tc.status+" ") {
				t.Fatalf("status line %q, want %s", line, tc.status)
			}
			if tc.status != "200" {
				return
			}
			// Skip the blank line, then echo bytes through the tunnel.
			for l, _ := br.ReadString('\n'); l != "\r\n"; l, _ = br.ReadString('\n') {
			}
			msg := bytes.Repeat([]byte("tunnel!"), 10000)
			go func() {
				conn.Write(msg)
				conn.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(br)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("tunnel echoed %d bytes (err %v), want %d identical", len(got), err, len(msg))
			}
		})
	}
	c.CloseIdleConnections()
	stop()
	for _, want := range []string{"decision=intercept", "decision=deny", "decision=tunnel", "connect=\"registry.test:" + port + "\""} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
}
