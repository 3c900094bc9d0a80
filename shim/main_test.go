package shim

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: a
// tunnel, an inner server or a client connection nobody closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tlsUpstream is a real registry stand-in behind TLS with a certificate
// of its own, and a PEM file of that certificate for Registry.CAFile.
type tlsUpstream struct {
	srv    *httptest.Server
	url    *url.URL
	caFile string
}

// newTLSUpstream serves h over TLS until the test ends.
func newTLSUpstream(t *testing.T, h http.Handler) *tlsUpstream {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "upstream-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tlsUpstream{srv: srv, url: u, caFile: caFile}
}

// quietLogger discards the access lines of the inner server.
func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.Out = io.Discard
	return l
}

// proxyClient returns a client that uses addr as its HTTPS proxy and
// trusts roots; its idle connections are closed when the test ends.
func proxyClient(t *testing.T, addr string, roots *x509.CertPool) *http.Client {
	t.Helper()
	pu, err := url.Parse("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
